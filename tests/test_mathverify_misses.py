"""Answer forms issue 12 found missed: markdown bold (``**73**``), number words; hand-labelled, with guards."""

import pytest

from restem_pipeline.mathverify.normalize import number_words
from restem_pipeline.rewards import math_verdicts


@pytest.mark.parametrize(
    ("prediction", "gold", "status"),
    [
        ("The final answer is **73**.", "73", "correct"),  # was unparseable_prediction
        ("The final answer is **73**.", "74", "incorrect"),  # never a false positive
        ("The answer is __\\frac{1}{2}__", "0.5", "correct"),
        ("The answer is **7**3", "73", "unparseable_prediction"),  # bold around part only: not stripped
        ("**x** and **y**", "x", "incorrect"),  # two bold spans are not one answer
        ("The answer is 73.", "73", "correct"),
    ],
)
def test_markdown_bold_answers(prediction, gold, status):
    (v,) = math_verdicts([prediction], [gold], 5.0, 1)
    assert v.status == status


@pytest.mark.parametrize(
    ("prediction", "gold", "status"),
    [
        ("The answer is three.", "3", "correct"),  # was incorrect
        ("The answer is three.", "4", "incorrect"),
        ("\\boxed{1.45 million}", "1450000", "correct"),  # was incorrect
        ("The answer is one hundred and five", "105", "correct"),
        ("\\boxed{3}", "three", "correct"),  # a gold in words too
        ("The answer is one two", "3", "incorrect"),  # not one number: never summed
        ("The answer is e", "3", "incorrect"),
    ],
)
def test_number_words(prediction, gold, status):
    (v,) = math_verdicts([prediction], [gold], 5.0, 1)
    assert v.status == status


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("zero", "0"),
        ("twenty-one", "21"),
        ("forty two", "42"),
        ("two thousand and six", "2006"),
        ("three thousand", "3000"),
        ("one million two hundred thousand", "1200000"),
        ("2.5 thousand", "2500"),
        ("1.2345 thousand", None),  # not a whole number
        ("one two", None),
        ("hundred", None),
        ("twelve hundred", None),  # not parsed (kept conservative)
        ("two million three billion", None),  # scales out of order
        ("three thousand thousand", None),
        ("three apples", None),
    ],
)
def test_number_words_parser(text, value):
    assert number_words(text) == value


@pytest.mark.parametrize(
    ("prediction", "gold", "status"),
    [
        ("\\boxed{137\\frac12}", "\\frac{275}{2}", "correct"),  # TeX shorthand in a mixed number; was incorrect
        ("\\boxed{137\\frac12}", "137.25", "incorrect"),
        ("\\boxed{\\frac 3 4}", "0.75", "correct"),
        ("\\boxed{\\frac{12}{3}}", "4", "correct"),  # braced arguments untouched
    ],
)
def test_frac_shorthand(prediction, gold, status):
    (v,) = math_verdicts([prediction], [gold], 5.0, 1)
    assert v.status == status
