"""Numbers given approximately or written another way: when a rounded or comma-decimal number counts.

Covers: approximate golds (``approximate_gold``: a decimal with ``APPROXIMATE_GOLD_DIGITS`` or more
significant digits is a float printed in full, and ``rounds_to`` accepts what is within one unit of
its last digit: ``\\sqrt{17}`` for ``4.123105625617661``); approximations written after an exact value
(``approx_options``: ``\\frac13 \\approx 0.33`` is ``\\frac13``, and ``0.33`` too because it is the exact
value correctly rounded; ``\\frac13 \\approx 0.35`` is only ``\\frac13``); decimal commas
(``decimal_comma_twins``: ``1000,99`` and ``1000.99``, the same digits; ``1,000`` is never ``1.000``).

Does not cover: an approximate prediction of an exact gold, which is never equal (``0.333`` for
``\\frac13``: ``grading`` compares exactly), nor any other tolerance. Floats decide only where the
gold or the prediction is itself an approximation.
"""

from __future__ import annotations

import re
from fractions import Fraction

from restem_pipeline.rewards.mathverify.evaluate import Unreliable, float_value
from restem_pipeline.rewards.mathverify.latex_expr import symbols_of
from restem_pipeline.rewards.mathverify.normalize import normalize_answer
from restem_pipeline.rewards.mathverify.relations import parsed
from restem_pipeline.rewards.mathverify.structure import Shape

# A gold decimal with this many significant digits is a computed approximation (a float printed in
# full, "4.123105625617661"), not an exact answer: an exact prediction equals it when it rounds to it.
APPROXIMATE_GOLD_DIGITS = 12
_DECIMAL = re.compile(r"-?(\d*)\.(\d+)")


def approximate_gold(gold: str) -> tuple[Fraction, Fraction] | None:
    """(value, one unit in the last place) of an approximate gold decimal; None for any other gold."""
    m = _DECIMAL.fullmatch(gold.replace(" ", ""))
    if m is None or len((m.group(1) + m.group(2)).lstrip("0")) < APPROXIMATE_GOLD_DIGITS:
        return None
    return Fraction(gold.replace(" ", "")), Fraction(1, 10 ** len(m.group(2)))


def rounds_to(pred: str, p_num: Fraction | None, value: Fraction, unit: Fraction) -> bool:
    """Whether ``pred`` is within one unit in the last place of an approximate gold ``value`` (exactly
    for a rational prediction, in floats for an irrational one; a float's own error is far smaller)."""
    if p_num is not None:
        return abs(p_num - value) <= unit
    node = parsed(pred)
    if node is None or symbols_of(node):
        return False
    try:
        p = float_value(node, {})
    except Unreliable:
        return False
    return p.imag == 0 and abs(p.real - float(value)) <= float(unit) + 4e-16 * abs(float(value))


_PLAIN_DECIMAL = re.compile(r"-?\d+(?:\.(\d+))?")


def approx_options(shape: Shape) -> tuple[Shape, ...]:
    """The readings of a shape: an ``approx`` (``\\frac{21}{216} \\approx 0.097``) is its exact value, and
    also its approximation when that is the exact value correctly rounded to the approximation's decimal
    places (``\\frac13 \\approx 0.33``, never ``\\frac13 \\approx 0.35`` or ``\\frac13 \\approx 11``)."""
    if shape[0] != "approx":
        return (shape,)
    base, approximation = shape[1], shape[2].strip()
    value = base[2] if base[0] == "eq" else base
    m = _PLAIN_DECIMAL.fullmatch(approximation.replace(" ", ""))
    if m is None or value[0] != "scalar":
        return (base,)
    node = parsed(value[1])
    if node is None or symbols_of(node):
        return (base,)
    try:
        exact = float_value(node, {})
    except Unreliable:
        return (base,)
    # The last digit's place: a decimal's last decimal place, an integer's last nonzero digit ("54000"
    # rounds to thousands).
    text = approximation.replace(" ", "").lstrip("-")
    places = len(m.group(1)) if m.group(1) else -(len(text) - len(text.rstrip("0")) if text.strip("0") else 0)
    half_unit = 0.5 * 10.0**-places
    if exact.imag or abs(exact.real - float(approximation.replace(" ", ""))) > half_unit * (1 + 1e-9):
        return (base,)
    rounded: Shape = ("scalar", approximation)
    return (base, ("eq", base[1], rounded) if base[0] == "eq" else rounded)


# "1000,99" (a decimal comma) and "1000.99" (a decimal point). A thousands separator has three digits
# after it and a first group of 1 to 3 digits not starting with 0; MATH writes lists of small numbers
# without a space ("0,1", "1,2", "12,9"), so one digit after the comma is a list, never a decimal.
_DECIMAL_COMMA = re.compile(r"(-?\d+),(\d{2,})")
_DECIMAL_POINT = re.compile(r"(-?\d+)\.(\d+)")
_THOUSANDS_GROUP = re.compile(r"-?[1-9]\d{0,2},\d{3}")


def decimal_comma_twins(pred: str, gold: str) -> bool:
    """Whether one answer is a number written with a decimal comma and the other the same digits with
    a decimal point ("1000,99" and "1000.99", "0,111" and "0.111"). Never a possible thousands
    separator ("1,000" is not "1.000"), never one digit after the comma ("1,2" is the list of MATH's
    golds, not 1.2), and only the same digits ("1,50" is not "1.5" nor "3/2")."""
    if "," not in pred and "," not in gold:
        return False
    a, b = normalize_answer(pred), normalize_answer(gold)  # "0, 1" (with a space) is a list, never 0.1
    for comma, point in ((a, b), (b, a)):
        c, p = _DECIMAL_COMMA.fullmatch(comma), _DECIMAL_POINT.fullmatch(point)
        if c and p and not _THOUSANDS_GROUP.fullmatch(comma) and c.groups() == p.groups():
            return True
    return False
