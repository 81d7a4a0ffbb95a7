"""Decide equality of expressions with sympy; meant to run inside a time-bounded worker process.

Covers: converting ``latex_expr`` trees to sympy (refusing to expand huge powers and factorials),
and two decisions. ``expressions_equal``: exact zero of the difference (rationals are exact), else
for constants a comparison of 110-digit values (relative difference under 1e-90 counts as equal),
and for expressions in symbols agreement at several random points at 60 digits (a numeric identity
test), after ``expand``/``cancel`` had their chance to prove it. ``equations_equal``: one equation's
``lhs - rhs`` is a nonzero constant multiple of the other's.

Does not cover: time limits (``workers`` kills a stuck worker) or anything about answer shapes.
Importing this module imports sympy (about half a second); the in-process fast path never does.
"""

from __future__ import annotations

import sympy
from sympy import Rational

from restem_pipeline.rewards.mathverify.evaluate import symbol_points
from restem_pipeline.rewards.mathverify.latex_expr import Node

_DIGITS = 110
_REL_EQUAL = sympy.Float(10) ** -90
_POINT_DIGITS = 60
_POINT_REL_EQUAL = sympy.Float(10) ** -40
_MAX_EXACT_BITS = 200_000

_FUNCS = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "sec": sympy.sec, "csc": sympy.csc,
    "cot": sympy.cot, "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan,
    "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh, "exp": sympy.exp, "ln": sympy.log,
    "sqrt": sympy.sqrt, "abs": sympy.Abs, "floor": sympy.floor, "ceil": sympy.ceiling,
}  # fmt: skip
_CONSTS = {"pi": sympy.pi, "e": sympy.E, "i": sympy.I, "inf": sympy.oo, "deg": sympy.pi / 180}


def to_sympy(node: Node) -> sympy.Expr:
    """The sympy expression of a tree (no evaluation that could build enormous integers)."""
    kind = node[0]
    if kind == "n":
        return Rational(node[1].numerator, node[1].denominator)
    if kind == "s":
        return sympy.Symbol(node[1])
    if kind == "c":
        return _CONSTS[node[1]]
    if kind == "neg":
        return -to_sympy(node[1])
    if kind == "+":
        return sympy.Add(*[to_sympy(c) for c in node[1]])
    if kind == "*":
        return sympy.Mul(*[to_sympy(c) for c in node[1]])
    if kind == "/":
        return to_sympy(node[1]) / to_sympy(node[2])
    if kind == "^":
        base, exp = to_sympy(node[1]), to_sympy(node[2])
        if base.is_Integer and exp.is_Integer and abs(int(exp)) * max(abs(int(base)).bit_length(), 1) > _MAX_EXACT_BITS:
            return sympy.Pow(base, exp, evaluate=False)
        return base**exp
    if kind == "!":
        arg = to_sympy(node[1])
        big = arg.is_Integer and int(arg) > 20_000
        return sympy.factorial(arg, evaluate=not big)
    if kind == "f":
        name, args = node[1], [to_sympy(a) for a in node[2]]
        if name in _FUNCS:
            return _FUNCS[name](args[0])
        if name == "log":
            return sympy.log(args[0], args[1]) if len(args) > 1 else sympy.log(args[0])
        if name == "root":
            x, n = args
            if n.is_Integer and int(n) % 2 == 1 and x.is_extended_negative:
                return -sympy.root(-x, n)
            return sympy.root(x, n)
        if name == "binom":
            return sympy.binomial(args[0], args[1])
        if name in ("sum", "prod"):
            body, index, lo, hi = args
            return (sympy.Sum if name == "sum" else sympy.Product)(body, (index, lo, hi))
    raise ValueError(f"cannot convert {kind!r} node to sympy")


def _close(a: sympy.Expr, b: sympy.Expr, rel: sympy.Float) -> bool | None:
    """Whether two numeric values agree to relative ``rel``; None when either is not a number."""
    if not (a.is_number and b.is_number) or a.has(sympy.zoo, sympy.nan) or b.has(sympy.zoo, sympy.nan):
        return None
    if a.has(sympy.oo, -sympy.oo) or b.has(sympy.oo, -sympy.oo):
        return bool(a == b)
    diff = abs(a - b)
    scale = max(abs(a), abs(b))
    if scale == 0:
        return True
    return bool(diff <= rel * scale)


def _numeric(expr: sympy.Expr, digits: int, subs: dict | None = None) -> sympy.Expr:
    value = expr.evalf(digits, subs=subs) if subs else expr.evalf(digits)
    return value if value.is_number else sympy.nan


class SympyBackend:
    """The symbolic side of ``grading.Grader``."""

    def expressions_equal(self, a: Node, b: Node) -> bool:
        return self.sympy_equal(to_sympy(a), to_sympy(b))

    def sympy_equal(self, a: sympy.Expr, b: sympy.Expr) -> bool:
        if a == b:
            return True
        diff = a - b
        if diff == 0:
            return True
        if diff.is_Rational:
            return False
        symbols = diff.free_symbols | a.free_symbols | b.free_symbols
        if not symbols:
            if a.is_Rational and b.is_Rational:
                return False
            close = _close(_numeric(a, _DIGITS), _numeric(b, _DIGITS), _REL_EQUAL)
            return bool(close) if close is not None else bool(sympy.simplify(diff) == 0)
        if sympy.expand(diff) == 0 or sympy.cancel(diff) == 0:
            return True
        return self._agree_at_points(a, b, symbols)

    def _agree_at_points(self, a: sympy.Expr, b: sympy.Expr, symbols: set) -> bool:
        by_name = {s.name: s for s in symbols}
        checked = 0
        for point in symbol_points(set(by_name), 8, seed=11, signed=True):
            subs = {by_name[n]: Rational(round(v * 1000), 1000) for n, v in point.items()}
            close = _close(_numeric(a, _POINT_DIGITS, subs), _numeric(b, _POINT_DIGITS, subs), _POINT_REL_EQUAL)
            if close is False:
                return False
            checked += close is True
        return checked >= 4

    def equations_equal(self, a: tuple[Node, Node], b: tuple[Node, Node]) -> bool:
        da = to_sympy(a[0]) - to_sympy(a[1])
        db = to_sympy(b[0]) - to_sympy(b[1])
        if da == 0 or db == 0:
            return bool(da == db)
        ratio = sympy.cancel(da / db)
        if ratio.free_symbols:
            # Not provably constant: check it is the same nonzero constant at several points.
            symbols = da.free_symbols | db.free_symbols
            by_name = {s.name: s for s in symbols}
            values = []
            for point in symbol_points(set(by_name), 5, seed=13, signed=True):
                subs = {by_name[n]: Rational(round(v * 1000), 1000) for n, v in point.items()}
                value = _numeric(ratio, _POINT_DIGITS, subs)
                if value.is_number and value.is_finite:
                    values.append(value)
            if len(values) < 3 or values[0] == 0:
                return False
            return all(_close(v, values[0], _POINT_REL_EQUAL) for v in values[1:])
        return bool(ratio != 0 and ratio.is_finite is not False)
