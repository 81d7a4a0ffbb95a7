"""Fast evaluation of expression trees without sympy: exact rationals, and floats used only to reject.

Covers: ``exact_value`` computes a tree that is a rational number (integers, decimals, fractions,
integer powers, factorials, binomials, perfect-square roots, floor/ceil/abs) exactly with
``Fraction``, refusing anything whose numbers would grow past fixed size limits (so it is always
quick). ``float_value`` computes any tree as a complex float at given symbol values and raises
``Unreliable`` when floats cannot be trusted (overflow, domain errors, catastrophic cancellation).

Does not cover: deciding that two irrational or symbolic values are *equal*. A float agreement is
never a verdict here; only a clear float disagreement is (``grading`` sends agreements to sympy).
"""

from __future__ import annotations

import cmath
import math
import random
from fractions import Fraction

from restem_pipeline.rewards.mathverify.latex_expr import Node

MAX_BITS = 60_000  # largest exact integer (numerator/denominator) we build in-process
MAX_FACTORIAL = 3_000


class Unreliable(ArithmeticError):
    """A float evaluation that cannot decide anything."""


def _bits(q: Fraction) -> int:
    return max(q.numerator.bit_length(), q.denominator.bit_length())


def exact_value(node: Node) -> Fraction | None:
    """The exact rational value of a tree, or None (symbols, irrationals, too large, undefined)."""
    try:
        return _exact(node)
    except (ZeroDivisionError, OverflowError, ValueError):
        return None


def _exact(node: Node) -> Fraction | None:
    kind = node[0]
    if kind == "n":
        return node[1]
    if kind == "neg":
        v = _exact(node[1])
        return None if v is None else -v
    if kind in ("+", "*"):
        acc = Fraction(0 if kind == "+" else 1)
        for child in node[1]:
            v = _exact(child)
            if v is None:
                return None
            acc = acc + v if kind == "+" else acc * v
            if _bits(acc) > MAX_BITS:
                return None
        return acc
    if kind == "/":
        a, b = _exact(node[1]), _exact(node[2])
        if a is None or b is None:
            return None
        quotient = a / b
        # Unchecked, a chain of divisions grows without bound (9^{9999}/7^{9998}/9^{9999}/...).
        return None if _bits(quotient) > MAX_BITS else quotient
    if kind == "^":
        base, exp = _exact(node[1]), _exact(node[2])
        if base is None or exp is None:
            return None
        if abs(exp.numerator) > 10_000:
            return None
        if exp.denominator != 1:
            if base < 0:
                return None
            root = _exact_root(base, exp.denominator)
            # (3^{5000})^{9999/2} would build a 40-million-bit integer.
            return None if _bits(root) * abs(exp.numerator) > MAX_BITS else root**exp.numerator
        if _bits(base) * abs(exp.numerator) > MAX_BITS:
            return None
        return base**exp.numerator
    if kind == "!":
        v = _exact(node[1])
        if v is None or v.denominator != 1 or not 0 <= v <= MAX_FACTORIAL:
            return None
        return Fraction(math.factorial(int(v)))
    if kind == "f":
        return _exact_function(node[1], node[2])
    return None


def _exact_root(x: Fraction, n: int) -> Fraction:
    """The exact n-th root of a non-negative rational, or raise ValueError when irrational."""
    if n > 64 or x < 0:
        raise ValueError("no exact root")
    out = []
    for part in (x.numerator, x.denominator):
        r = round(part ** (1.0 / n)) if part.bit_length() < 1000 else _int_nth_root(part, n)
        for cand in (r - 1, r, r + 1):
            if cand >= 0 and cand**n == part:
                out.append(cand)
                break
        else:
            raise ValueError("irrational root")
    return Fraction(out[0], out[1])


def _int_nth_root(x: int, n: int) -> int:
    """The integer part of the n-th root of ``x >= 0`` (Newton's method from above: a few dozen
    steps even for a 60,000-bit ``x``, where bisection takes one step per bit of the root)."""
    if n == 2 or x < 2:
        return math.isqrt(x)
    root = 1 << -(-x.bit_length() // n)  # at least the root
    while True:
        smaller = ((n - 1) * root + x // root ** (n - 1)) // n
        if smaller >= root:
            return root
        root = smaller


def _exact_function(name: str, args: tuple) -> Fraction | None:
    vals = [_exact(a) for a in args]
    if any(v is None for v in vals):
        return None
    x = vals[0]
    assert x is not None
    if name == "sqrt":
        return _exact_root(x, 2) if x >= 0 else None
    if name == "root":
        n = vals[1]
        if n is None or n.denominator != 1 or n <= 0:
            return None
        if x < 0:
            return -_exact_root(-x, int(n)) if int(n) % 2 == 1 else None
        return _exact_root(x, int(n))
    if name == "abs":
        return abs(x)
    if name == "floor":
        return Fraction(math.floor(x))
    if name == "ceil":
        return Fraction(math.ceil(x))
    if name == "binom":
        k = vals[1]
        if k is None or x.denominator != 1 or k.denominator != 1 or not 0 <= k <= x <= 10_000:
            return None
        return Fraction(math.comb(int(x), int(k)))
    return None


# ---------------------------------------------------------------------------------------------
# floats: only ever used to show two values differ

_CANCELLATION = 1e-6
_HUGE = 1e200


def symbol_points(names: set[str], count: int, *, seed: int = 7, signed: bool = False) -> list[dict]:
    """``count`` deterministic assignments of values to symbols (same names, same values)."""
    points = []
    for k in range(count):
        point = {}
        for name in sorted(names):
            rng = random.Random(f"{seed}:{k}:{name}")
            value = rng.uniform(0.3, 2.7)
            point[name] = -value if signed and rng.random() < 0.5 else value
        points.append(point)
    return points


def float_value(node: Node, env: dict[str, float]) -> complex:
    """The value as a complex float; raises ``Unreliable`` when floats cannot be trusted."""
    try:
        v = _float(node, env)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as err:
        raise Unreliable(str(err)) from None
    if not (cmath.isfinite(v) and abs(v) < _HUGE):
        raise Unreliable("not finite")
    return v


def _check(v: complex) -> complex:
    if not cmath.isfinite(v) or abs(v) > _HUGE:
        raise Unreliable("overflow")
    return v


def _float(node: Node, env: dict[str, float]) -> complex:
    kind = node[0]
    if kind == "n":
        return complex(node[1])
    if kind == "s":
        if node[1] not in env:
            raise Unreliable(f"no value for {node[1]}")
        return complex(env[node[1]])
    if kind == "c":
        const = {"pi": math.pi, "e": math.e, "i": 1j, "deg": math.pi / 180}.get(node[1])
        if const is None:
            raise Unreliable("infinity")
        return complex(const)
    if kind == "neg":
        return -_float(node[1], env)
    if kind == "+":
        terms = [_float(c, env) for c in node[1]]
        total = sum(terms)
        biggest = max(abs(t) for t in terms)
        if biggest and abs(total) < _CANCELLATION * biggest:
            raise Unreliable("cancellation")
        return total
    if kind == "*":
        acc = complex(1)
        for c in node[1]:
            acc = _check(acc * _float(c, env))
        return acc
    if kind == "/":
        return _check(_float(node[1], env) / _float(node[2], env))
    if kind == "^":
        base, exp = _float(node[1], env), _float(node[2], env)
        if base.imag == 0 and exp.imag == 0 and (base.real > 0 or exp.real == int(exp.real)):
            return _check(complex(math.pow(base.real, exp.real)))
        return _check(base**exp)
    if kind == "!":
        x = _float(node[1], env)
        if x.imag or x.real > 170:
            raise Unreliable("factorial")
        return complex(math.gamma(x.real + 1))
    if kind == "f":
        return _float_function(node[1], [_float(a, env) for a in node[2]])
    raise Unreliable(f"unknown node {kind}")


_CMATH = {
    "sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan, "arcsin": cmath.asin, "arccos": cmath.acos,
    "arctan": cmath.atan, "sinh": cmath.sinh, "cosh": cmath.cosh, "tanh": cmath.tanh,
    "exp": cmath.exp, "ln": cmath.log, "sqrt": cmath.sqrt,
}  # fmt: skip


def _float_function(name: str, args: list[complex]) -> complex:
    x = args[0]
    if name in ("sin", "cos", "tan", "sec", "csc", "cot") and abs(x) > 1e6:
        raise Unreliable("trig of a large argument")
    if name in _CMATH:
        return _check(_CMATH[name](x))
    if name in ("sec", "csc", "cot"):
        inner = {"sec": cmath.cos, "csc": cmath.sin, "cot": cmath.tan}[name](x)
        return _check(1 / inner)
    if name == "log":
        base = args[1] if len(args) > 1 else complex(math.e)
        return _check(cmath.log(x) / cmath.log(base))
    if name == "root":
        n = args[1]
        if x.imag == 0 and x.real < 0 and n.imag == 0 and n.real == int(n.real) and int(n.real) % 2:
            return complex(-((-x.real) ** (1 / n.real)))
        return _check(x ** (1 / n))
    if name == "abs":
        return complex(abs(x))
    if name in ("floor", "ceil"):
        if x.imag:
            raise Unreliable("floor of a complex number")
        return complex(math.floor(x.real) if name == "floor" else math.ceil(x.real))
    if name == "binom":
        k = args[1]
        if x.imag or k.imag or x.real > 170:
            raise Unreliable("binomial")
        return complex(math.gamma(x.real + 1) / (math.gamma(k.real + 1) * math.gamma(x.real - k.real + 1)))
    raise Unreliable(f"unknown function {name}")


def floats_differ(a: complex, b: complex, *, rel: float = 1e-7) -> bool:
    """True when two reliable float values are clearly different numbers."""
    scale = max(abs(a), abs(b))
    return abs(a - b) > rel * scale if scale else False
