"""Decide whether a predicted answer equals the gold answer, shape by shape.

Covers: sets and unordered solution lists (a matching, both ways), tuples and intervals (same
brackets, same order), matrices (and a column vector against a tuple), equations (``x = 5`` or ``AB =
4`` against ``4``; a predicted equation whose right side is a value states it, ``x + y = 6`` is 6; two
general equations are equal when one is a nonzero multiple of the other), named quantities against
unnamed values in the same order (``4, 5`` is ``AB=4, CD=5``; ``(5, 2)`` is ``p=5, q=2``), ratios term
by term (``7:32`` is never ``7/32``), inequalities (as intervals when they are linear in one
variable, ``relations``: ``-x > -1`` is ``x < 1`` is ``(-\\infty, 1)``), and scalars: text answers,
multiple-choice letters, base-``b`` numerals, percentages (``20\\%`` is ``20`` and ``0.2``; ``15`` is
never ``0.15``), degrees, mixed numbers (``2\\frac12``), repeating decimals (``0.\\overline{3}``), exact
rational numbers (a decimal equals a fraction only when exactly equal), and expressions. Numbers
given approximately or with a decimal comma (``\\frac13 \\approx 0.33``, an approximate gold such as
``4.123105625617661``, ``1000,99``) follow ``approximate``.

A predicted answer longer than ``MAX_PREDICTED_CHARS`` (and than twice the gold answer) is not
graded at all: ``judge_answers`` reports it as ``unparseable_prediction`` before normalizing it, so
the in-process work per answer stays bounded whatever a model writes.

Does not cover: proving two irrational or symbolic expressions equal. A ``Grader`` without a
symbolic backend answers ``None`` ("undecided") for such pairs after trying exact rationals and a
float test that can only *reject*; ``symbolic.SympyBackend`` decides them in a worker process.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache
from typing import Protocol

from restem_pipeline.rewards.mathverify.approximate import (
    approx_options,
    approximate_gold,
    decimal_comma_twins,
    rounds_to,
)
from restem_pipeline.rewards.mathverify.evaluate import (
    Unreliable,
    exact_value,
    float_value,
    floats_differ,
    symbol_points,
)
from restem_pipeline.rewards.mathverify.latex_expr import ExprParseError, Node, parse_expr, symbols_of
from restem_pipeline.rewards.mathverify.normalize import MATH_WORDS, normalize_answer
from restem_pipeline.rewards.mathverify.relations import interval_of
from restem_pipeline.rewards.mathverify.structure import Shape, name_key, named_lhs, shape_of

# The longest predicted answer graded (MATH's longest gold answer has 159 characters); a longer
# gold allows predictions twice its length.
MAX_PREDICTED_CHARS = 500


def predicted_chars_limit(gold: str) -> int:
    """The longest predicted answer that is graded against the (parsed, unnormalized) ``gold``."""
    return max(MAX_PREDICTED_CHARS, 2 * len(gold))


class UnparseablePrediction(ValueError):
    """The predicted answer is neither text nor an expression we can read."""


class SymbolicBackend(Protocol):
    def expressions_equal(self, a: Node, b: Node) -> bool: ...

    def equations_equal(self, a: tuple[Node, Node], b: tuple[Node, Node]) -> bool: ...


@lru_cache(maxsize=65536)
def shape_of_answer(answer: str) -> Shape:
    """Normalized and split answer (cached: golds repeat across samples)."""
    return shape_of(normalize_answer(answer))


@lru_cache(maxsize=65536)
def _expr_or_error(text: str) -> Node | str:
    try:
        return parse_expr(text)
    except ExprParseError as err:
        return str(err)


_MIXED = re.compile(r"(-?)(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}")
_REPEATING = re.compile(r"(-?)(\d*)\.(\d*)\\overline\{?(\d+)\}?")
_BASE = re.compile(r"(-?[0-9A-Za-z.]+)_\{?(\d+)\}?")
_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}")


def special_number(text: str) -> Fraction | None:
    """Mixed numbers and repeating decimals, exactly; None for anything else."""
    m = _MIXED.fullmatch(text)
    if m and int(m.group(4)) != 0 and int(m.group(3)) < int(m.group(4)):
        value = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return -value if m.group(1) else value
    m = _REPEATING.fullmatch(text)
    if m:
        sign, whole, fixed, rep = m.groups()
        value = Fraction(int(whole or "0")) + Fraction(int(fixed or "0"), 10 ** len(fixed))
        value += Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
        return -value if sign else value
    return None


def is_text(text: str) -> bool:
    """True for answers made of words (``Friday``, ``even``), which are compared as text."""
    words = _WORD.findall(text)
    return any(w.lower() not in MATH_WORDS for w in words)


def text_key(text: str) -> str:
    key = re.sub(r"[\s{}\\]|text", "", text).lower()
    return re.sub(r"^\((\w)\)$", r"\1", key)


class Grader:
    """Compares shapes. ``symbolic`` is None in-process (undecided pairs give None)."""

    def __init__(self, symbolic: SymbolicBackend | None = None):
        self.symbolic = symbolic

    # -- dispatch ----------------------------------------------------------------------------
    def equal(self, pred: Shape, gold: Shape) -> bool | None:
        pk, gk = pred[0], gold[0]
        if pred == gold:
            return True
        if pk == "approx" or gk == "approx":
            return _any(self.equal(p, g) for p in approx_options(pred) for g in approx_options(gold))
        if gk == "eq" and pk != "eq" and _numeric_equation(gold):
            # "0.56 = 56\%": the gold states one number two ways; either way is the answer.
            return _either(self.equal(pred, ("scalar", gold[1])), self.equal(pred, gold[2]))
        if gk == "eq" and named_lhs(gold[1]) and pk != "eq":
            return self.equal(pred, gold[2])
        if pk == "eq" and gk != "eq" and (named_lhs(pred[1]) or _states_value(pred)):
            # "x = 5", "AB = 4"; and an equation whose right side is a value states it: "5+5+1 = 11",
            # "x + y = 6" (the quantity asked for, computed), "[-11+1, 3+1] = [-10, 4]".
            return self.equal(pred[2], gold)
        if pk == "ineq" or gk == "ineq":
            pred, gold = interval_of(pred) or pred, interval_of(gold) or gold
            pk, gk = pred[0], gold[0]
        named = _named_values(gold) if pk in ("set", "seq") else None
        if named is not None:
            # "4, 5" or "(4, 5)" against "AB = 4, CD = 5": unnamed values are the named ones in order.
            p_items = pred[1] if pk == "set" else pred[3]
            if (pk == "seq" and pred[1:3] != ("(", ")")) or any(p[0] == "eq" for p in p_items):
                named = None
            elif len(p_items) != len(named):
                return False
            else:
                return _all(self.equal(p, g) for p, g in zip(p_items, named, strict=True))
        if gk == "set" or pk == "set":
            p_items = pred[1] if pk == "set" else (pred,)
            g_items = gold[1] if gk == "set" else (gold,)
            return self.sets_equal(p_items, g_items)
        if gk == "matrix" or pk == "matrix":
            return self.matrices_equal(pred, gold)
        if pk != gk:
            if gk == "scalar" and is_text(gold[1]):
                return False
            if pk == "ratio":  # "2:30" against a number: a ratio or a clock time, no value to compare
                raise UnparseablePrediction(f"a ratio or clock time against a gold that is none: {pred!r}")
            if pk == "scalar" and gk in ("seq", "eq", "ineq"):
                self.scalar_node(pred[1], is_gold=False)  # raises when unreadable
            return False
        if gk == "ratio":
            if len(pred[1]) != len(gold[1]):
                return False
            return _all(self.equal(p, g) for p, g in zip(pred[1], gold[1], strict=True))
        if gk == "seq":
            if pred[1:3] != gold[1:3] or len(pred[3]) != len(gold[3]):
                return False
            return _all(self.equal(p, g) for p, g in zip(pred[3], gold[3], strict=True))
        if gk == "eq":
            return self.equations_equal(pred, gold)
        if gk == "ineq":
            if pred[2] != gold[2] or len(pred[1]) != len(gold[1]):
                return False
            return _all(self.scalars_equal(p, g) for p, g in zip(pred[1], gold[1], strict=True))
        return self.scalars_equal(pred[1], gold[1])

    def sets_equal(self, pred: tuple, gold: tuple) -> bool | None:
        pred = tuple(dict.fromkeys(pred))
        gold = tuple(dict.fromkeys(gold))
        if len(pred) != len(gold):
            return False
        undecided = False
        unmatched = list(pred)
        for g in gold:
            outcomes = [self.equal(p, g) for p in unmatched]
            if True in outcomes:
                unmatched.pop(outcomes.index(True))
            elif None in outcomes:
                undecided = True
            else:
                return False
        return None if undecided else True

    def matrices_equal(self, pred: Shape, gold: Shape) -> bool | None:
        p_rows, g_rows = _rows_of(pred), _rows_of(gold)
        if p_rows is None or g_rows is None:
            return False
        if [len(r) for r in p_rows] != [len(r) for r in g_rows]:
            # A tuple (a, b, c) against a column vector.
            p_flat = [c for r in p_rows for c in r]
            g_flat = [c for r in g_rows for c in r]
            vectors = all(len(r) == 1 for r in (p_rows if pred[0] == "matrix" else g_rows))
            if not vectors or len(p_flat) != len(g_flat):
                return False
            p_rows, g_rows = [p_flat], [g_flat]
        return _all(
            self.equal(p, g) for pr, gr in zip(p_rows, g_rows, strict=True) for p, g in zip(pr, gr, strict=True)
        )

    def equations_equal(self, pred: Shape, gold: Shape) -> bool | None:
        p_lhs, g_lhs = pred[1], gold[1]
        if named_lhs(p_lhs) and named_lhs(g_lhs):
            if name_key(p_lhs) != name_key(g_lhs):
                return False
            return self.equal(pred[2], gold[2])
        if pred[2][0] != "scalar" or gold[2][0] != "scalar":
            return False
        sides = [self.scalar_node(s, is_gold=g) for s, g in ((p_lhs, False), (pred[2][1], False))]
        g_sides = [self.scalar_node(s, is_gold=True) for s in (g_lhs, gold[2][1])]
        if None in g_sides:
            return False
        if sides == g_sides or sides == g_sides[::-1]:
            return True
        if self.symbolic is None:
            return None
        return self.symbolic.equations_equal((sides[0], sides[1]), (g_sides[0], g_sides[1]))

    # -- scalars -----------------------------------------------------------------------------
    def scalar_node(self, text: str, *, is_gold: bool) -> Node | None:
        """The expression tree of a scalar; None for a text gold; raises for an unreadable prediction."""
        node = text if is_text(text) else _expr_or_error(text)
        if isinstance(node, str):
            if is_gold or is_text(text):
                return None
            raise UnparseablePrediction(f"cannot read {text!r}: {node}")
        return node

    def scalars_equal(self, pred: str, gold: str) -> bool | None:
        if pred.replace(" ", "") == gold.replace(" ", ""):
            return True
        p_flag, pred = _flag_of(pred)
        g_flag, gold = _flag_of(gold)
        base = _base_digits_equal(pred, gold)
        if base is not None:
            return base
        g_num, p_num = _number_of(gold), _number_of(pred)
        approximate = approximate_gold(gold) if not g_flag else None
        if approximate is not None:
            return rounds_to(pred, p_num, *approximate)
        if g_num is not None and p_num is not None:
            if p_num == g_num:  # "20%" is "20", "35°" is "35"
                return True
            # 20% is 0.2 (and 15% is 0.15), but 15 is never 0.15.
            if p_flag == "%" and g_flag != "%":
                return p_num / 100 == g_num
            if g_flag == "%" and p_flag != "%":
                return g_num / 100 == p_num
            return False
        g_node = self.scalar_node(gold, is_gold=True)
        if g_node is None:  # a text gold
            return text_key(pred) == text_key(gold)
        p_node = self.scalar_node(pred, is_gold=False)
        if p_node is None:  # a text prediction against a mathematical gold
            return False
        if p_node == g_node:
            return True
        if _floats_reject(p_node, g_node):
            return False
        if self.symbolic is None:
            return None
        return self.symbolic.expressions_equal(p_node, g_node)


def _all(outcomes) -> bool | None:
    """False if any is False, else None if any is None, else True (lazily)."""
    undecided = False
    for outcome in outcomes:
        if outcome is False:
            return False
        undecided |= outcome is None
    return None if undecided else True


def _any(outcomes) -> bool | None:
    """True if any is True, else None if any is None, else False (lazily)."""
    undecided = False
    for outcome in outcomes:
        if outcome is True:
            return True
        undecided |= outcome is None
    return None if undecided else False


def _variable_free(shape: Shape) -> bool:
    """A value without unknowns: a number or constant expression, or a tuple, list or interval of them."""
    if shape[0] == "scalar":
        node = _expr_or_error(shape[1])
        return not isinstance(node, str) and not symbols_of(node)
    if shape[0] == "seq":
        return all(_variable_free(item) for item in shape[3])
    if shape[0] == "set":
        return bool(shape[1]) and all(_variable_free(item) for item in shape[1])
    return False


def _states_value(shape: Shape) -> bool:
    """An equation that states its right side, a value: its left side is a computation with numbers
    (``5+5+1``) or a quantity in unknowns without a constant term (``x + y``, ``2a + b``, ``abc``). An
    equation to solve (``x^2 - 5x + 6 = 0``, ``2x + 3 = 7``) states no value."""
    if not _variable_free(shape[2]):
        return False
    lhs = _expr_or_error(shape[1])
    if isinstance(lhs, str):
        return _variable_free(shape_of(shape[1]))  # "[-11+1, 3+1]"
    terms = lhs[1] if lhs[0] == "+" else (lhs,)
    return not symbols_of(lhs) or all(symbols_of(term) for term in terms)


def _either(a: bool | None, b: bool | None) -> bool | None:
    return True if True in (a, b) else None if None in (a, b) else False


def _numeric_equation(shape: Shape) -> bool:
    return shape[2][0] == "scalar" and all(_number_of(_flag_of(t)[1]) is not None for t in (shape[1], shape[2][1]))


def _flag_of(text: str) -> tuple[str, str]:
    """("%" or "°" or "", the text without it) for a trailing percent or degree mark on a number."""
    for mark in ("%", "°"):
        if text.endswith(mark):
            bare = text[: -len(mark)].strip()
            if _number_of(bare) is not None:
                return mark, bare
    return "", text


@lru_cache(maxsize=65536)
def _number_of(text: str) -> Fraction | None:
    special = special_number(text.replace(" ", ""))
    if special is not None:
        return special
    node = _expr_or_error(text)
    return None if isinstance(node, str) else exact_value(node)


def _base_digits_equal(pred: str, gold: str) -> bool | None:
    """For base-b numerals (``1232_4``): equal digits and base; None when neither is one."""
    p, g = _BASE.fullmatch(pred.replace(" ", "")), _BASE.fullmatch(gold.replace(" ", ""))
    if g is None and p is None:
        return None
    if g is None or p is None:
        # "1232" against "1232_4": the same numeral written without its base.
        bare, other = (pred, g) if p is None else (gold, p)
        if other is None or not re.fullmatch(r"[0-9A-Za-z]+", bare.replace(" ", "")):
            return None if other is None else False
        return bare.replace(" ", "").lstrip("0").lower() == other.group(1).lstrip("0").lower()
    return p.group(1).lstrip("0").lower() == g.group(1).lstrip("0").lower() and int(p.group(2)) == int(g.group(2))


def _floats_reject(a: Node, b: Node) -> bool:
    """True when float evaluation shows the two differ (at shared random symbol values)."""
    names = symbols_of(a) | symbols_of(b)
    for point in symbol_points(names, 3 if names else 1):
        try:
            if floats_differ(float_value(a, point), float_value(b, point)):
                return True
        except Unreliable:
            continue
    return False


def _named_values(shape: Shape) -> tuple[Shape, ...] | None:
    """The values of a list of named quantities with distinct names (``AB = 4, CD = 5``), in order; else None."""
    if shape[0] != "set" or len(shape[1]) < 2:
        return None
    items = shape[1]
    if not all(item[0] == "eq" and named_lhs(item[1]) for item in items):
        return None
    if len({name_key(item[1]) for item in items}) != len(items):
        return None
    return tuple(item[2] for item in items)


def _rows_of(shape: Shape) -> list[list[Shape]] | None:
    if shape[0] == "matrix":
        return [list(r) for r in shape[1]]
    if shape[0] == "seq" and shape[1:3] in (("(", ")"), ("[", "]")):
        return [list(shape[3])]
    return None


def judge_answers(predictions: list[str], gold: str, grader: Grader) -> tuple[str, str]:
    """(status, reason) for candidate answers against a gold answer.

    Every candidate must equal the gold: ``api`` passes the final answer, or the boxes side by side
    that form it when they are alternatives for a one-item gold (two different answers there are
    not a correct answer). ``status`` is ``correct``, ``incorrect``,
    ``unparseable_prediction`` (also for a candidate over ``predicted_chars_limit``, which is never
    normalized), or ``undecided`` (only from a grader without a symbolic backend).
    """
    gold_shape = shape_of_answer(gold)
    limit = predicted_chars_limit(gold)
    undecided = False
    for pred in reversed(predictions):
        if len(pred) > limit:
            return "unparseable_prediction", f"final answer too long to grade ({len(pred)} characters, limit {limit})"
        try:
            outcome = grader.equal(shape_of_answer(pred), gold_shape)
        except UnparseablePrediction as err:
            return "unparseable_prediction", str(err)
        if outcome is False and decimal_comma_twins(pred, gold):
            outcome = True
        if outcome is False:
            if len(predictions) > 1:
                return "incorrect", f"several different final answers {predictions}; {pred!r} is not the gold"
            return "incorrect", ""
        undecided |= outcome is None
    if undecided:
        return "undecided", ""
    return "correct", "" if len(predictions) == 1 else f"all {len(predictions)} boxed answers agree"
