"""Inequalities on one variable as intervals, so that equivalent relations compare equal.

Covers: ``interval_of`` turns ``x > 3`` into ``(3, \\infty)``, ``-2 \\le x < 7`` into ``[-2, 7)``, and
solves a *linear* inequality in one variable with exact rational coefficients first: ``-x > -1`` is
``x < 1`` (dividing by a negative coefficient flips the relation), ``2x \\ge 4`` is ``x \\ge 2``,
``2x + 1 < x + 3`` is ``x < 2``, ``1 < 2x + 1 \\le 5`` is ``(0, 2]``. A bound that is not rational
(``\\sqrt{2}``) is carried as an expression (``\\frac{(\\sqrt{2}) - (1)}{2}``) for ``grading`` to
compare. Orientation (``<`` vs ``>``) and strictness decide the interval's brackets, so ``x > 1`` is
never ``x < 1``. ``|x|`` between positive rational bounds is a union: ``1 \\le |z| \\le 2`` is
``[-2, -1] \\cup [1, 2]``, ``|x| < 2`` is ``(-2, 2)``.

Does not cover: inequalities in several variables, other non-linear ones (``x^2 < 4``, ``|x - 1| < 2``),
unions, or ``\\ne``
(those stay relation shapes, compared side by side by ``grading``). The variable's name is not part
of the interval: ``y < 1`` equals ``x < 1``.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

from restem_pipeline.rewards.mathverify.evaluate import MAX_BITS, _bits, exact_value
from restem_pipeline.rewards.mathverify.latex_expr import ExprParseError, Node, parse_expr, symbols_of
from restem_pipeline.rewards.mathverify.structure import Shape

_FLIP = {"<": ">", "≤": "≥", ">": "<", "≥": "≤"}
_INFINITY = "\\infty"


@lru_cache(maxsize=65536)
def parsed(text: str) -> Node | None:
    """The expression tree of a side of a relation, or None when it is not an expression."""
    try:
        return parse_expr(text)
    except (ExprParseError, ValueError, RecursionError):
        return None


def linear_in(node: Node, var: str) -> tuple[Fraction, Fraction] | None:
    """(a, b) with ``node == a*var + b`` exactly, for rational a and b; None otherwise."""
    if var not in symbols_of(node):
        value = exact_value(node)
        return None if value is None else (Fraction(0), value)
    kind = node[0]
    if kind == "s":
        return (Fraction(1), Fraction(0))
    if kind == "neg":
        inner = linear_in(node[1], var)
        return None if inner is None else (-inner[0], -inner[1])
    if kind == "+":
        a, b = Fraction(0), Fraction(0)
        for child in node[1]:
            term = linear_in(child, var)
            if term is None:
                return None
            a, b = a + term[0], b + term[1]
            if max(_bits(a), _bits(b)) > MAX_BITS:
                return None
        return (a, b)
    if kind == "*":
        a, b = Fraction(0), Fraction(1)
        for child in node[1]:
            factor = linear_in(child, var)
            if factor is None or (factor[0] and a):
                return None  # not linear, or var times var
            # (a x + b)(c x + d) = (a d + b c) x + b d when a c = 0.
            a, b = a * factor[1] + b * factor[0], b * factor[1]
            if max(_bits(a), _bits(b)) > MAX_BITS:
                return None
        return (a, b)
    if kind == "/":
        num, den = linear_in(node[1], var), linear_in(node[2], var)
        if num is None or den is None or den[0] or not den[1]:
            return None
        return (num[0] / den[1], num[1] / den[1])
    if kind == "^":
        base, exp = linear_in(node[1], var), exact_value(node[2])
        return base if exp == 1 else None
    return None


def _num(q: Fraction) -> str:
    return str(q.numerator) if q.denominator == 1 else f"\\frac{{{q.numerator}}}{{{q.denominator}}}"


def _bound(other: str, a: Fraction, b: Fraction) -> str | None:
    """The text of ``(other - b) / a`` (``other`` itself when a = 1, b = 0); None for an infinite side."""
    if a == 1 and b == 0:
        return other
    if _INFINITY in other:
        return None
    value = exact_value(parsed(other)) if parsed(other) is not None else None
    if value is not None:
        return _num((value - b) / a)
    return f"\\frac{{({other}) - ({_num(b)})}}{{{_num(a)}}}"


# A name standing for the unknown: ``x``, ``a_1``, ``\\theta``, ``f(x)`` (a range: ``-80 \\le g(x) \\le 82``).
_NAME = re.compile(r"(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?(?:\([a-zA-Z, ]*\))?")


def _solved(parts: list[str], ops: list[str]) -> tuple[list[str], list[str]] | None:
    """``parts``/``ops`` rewritten with the unknown alone in its place (None when not linear)."""
    nodes = [parsed(p) for p in parts]
    if any(n is None for n in nodes):
        return None
    names = [bool(_NAME.fullmatch(p.strip())) for p in parts]
    if sum(names) == 1 and all(named or not symbols_of(n) for named, n in zip(names, nodes, strict=True)):  # type: ignore[arg-type]
        return [p.strip() if named else p for named, p in zip(names, parts, strict=True)], ops
    names = [symbols_of(n) for n in nodes]  # type: ignore[arg-type]
    variables = set().union(*names)
    if len(variables) != 1:
        return None
    (var,) = variables
    if any(re.search(rf"(?<![\\a-zA-Z]){re.escape(var)}\s*\(", p) for p in parts):
        return None  # "f(2) < f(1)": a function's value, not a product f * 2
    with_var = [i for i, n in enumerate(names) if n]
    if len(parts) == 2 and len(with_var) == 2:
        left, right = linear_in(nodes[0], var), linear_in(nodes[1], var)  # type: ignore[arg-type]
        if left is None or right is None or left[0] == right[0]:
            return None
        # a*x + b (op) 0 with a = a_l - a_r, b = b_l - b_r.
        a, b = left[0] - right[0], left[1] - right[1]
        op = ops[0] if a > 0 else _FLIP[ops[0]]
        return [var, _num(-b / a)], [op]
    if len(with_var) != 1 or (len(parts) == 3 and with_var != [1]):
        return None
    k = with_var[0]
    line = linear_in(nodes[k], var)  # type: ignore[arg-type]
    if line is None or not line[0]:
        return None
    a, b = line
    bounds = [None if i == k else _bound(p, a, b) for i, p in enumerate(parts)]
    if any(bounds[i] is None for i in range(len(parts)) if i != k):
        return None
    new_parts = [var if i == k else bounds[i] for i in range(len(parts))]
    if a > 0:
        return new_parts, list(ops)  # type: ignore[return-value]
    # Dividing by a negative coefficient flips every relation: lo < -x < hi is -lo > x > -hi.
    return new_parts, [_FLIP[op] for op in ops]  # type: ignore[return-value]


# ``|x|`` for a name x, the only non-linear side read: ``1 \\le |z| \\le 2`` is ``[-2, -1] \\cup [1, 2]``.
_ABS_NAME = re.compile(r"\|\s*(" + _NAME.pattern + r")\s*\|")


def _abs_intervals(parts: list[str], ops: list[str]) -> Shape | None:
    """``a (<|≤) |x| (<|≤) b`` with rational 0 < a < b as a union of two intervals, ``|x| (<|≤) b`` and
    ``|x| (>|≥) a`` likewise (``(-b, b)``; ``(-\\infty, -a) \\cup (a, \\infty)``); None for anything else."""
    if all(op in (">", "≥") for op in ops):
        parts, ops = parts[::-1], [_FLIP[op] for op in ops[::-1]]
    at = [i for i, p in enumerate(parts) if _ABS_NAME.fullmatch(p.strip())]
    if not all(op in ("<", "≤") for op in ops) or len(at) != 1 or (len(parts) == 3 and at != [1]):
        return None
    k = at[0]
    values = [exact_value(node) if (node := parsed(p)) is not None else None for p in parts]
    lo, lo_op = (values[0], ops[0]) if k > 0 else (None, "<")
    hi, hi_op = (values[-1], ops[-1]) if k < len(parts) - 1 else (None, "<")
    if (k > 0 and (lo is None or lo <= 0)) or (k < len(parts) - 1 and (hi is None or hi <= 0)):
        return None
    if lo is not None and hi is not None and lo >= hi:
        return None

    def piece(left: str, right: str, left_op: str, right_op: str) -> Shape:
        brackets = ("[" if left_op == "≤" else "(", "]" if right_op == "≤" else ")")
        return ("seq", *brackets, (("scalar", left), ("scalar", right)))

    if lo is None:
        assert hi is not None
        return piece("-" + _num(hi), _num(hi), hi_op, hi_op)
    top = _num(hi) if hi is not None else _INFINITY
    return ("set", (piece("-" + top, "-" + _num(lo), hi_op, lo_op), piece(_num(lo), top, lo_op, hi_op)))


def interval_of(shape: Shape) -> Shape | None:
    """An inequality on one variable as an interval: ``x ≥ 3`` -> ``[3, \\infty)``; else None."""
    if shape[0] != "ineq":
        return None
    absolute = _abs_intervals(list(shape[1]), list(shape[2]))
    if absolute is not None:
        return absolute
    solved = _solved(list(shape[1]), list(shape[2]))
    if solved is None:
        return None
    parts, ops = solved
    if all(op in (">", "≥") for op in ops):
        parts, ops = parts[::-1], [_FLIP[op] for op in ops[::-1]]
    if not all(op in ("<", "≤") for op in ops) or len(parts) not in (2, 3):
        return None
    is_var = [bool(_NAME.fullmatch(p)) for p in parts]
    if len(parts) == 3 and is_var == [False, True, False]:
        lo, hi, lo_op, hi_op = parts[0], parts[2], ops[0], ops[1]
    elif len(parts) == 2 and is_var == [True, False]:
        lo, hi, lo_op, hi_op = "-" + _INFINITY, parts[1], "<", ops[0]
    elif len(parts) == 2 and is_var == [False, True]:
        lo, hi, lo_op, hi_op = parts[0], _INFINITY, ops[0], "<"
    else:
        return None
    return (
        "seq",
        "(" if lo_op == "<" else "[",
        ")" if hi_op == "<" else "]",
        (("scalar", lo), ("scalar", hi)),
    )
