"""Answer forms issue 12 found missed, hand-labelled, with guards: markdown bold (``**73**``), number
words, ``\\frac12``; then item 4: several boxes, "Final Answer: The volume is 120.", ``\\pm`` in sets, a
scalar times a matrix, number words before units, equivalent relations, and the last-number fallback.

Does not cover: the restatement rule (``test_mathverify_restatement``) or time bounds
(``test_mathverify_bounds``, ``test_mathverify_redos``).
"""

import pytest

from restem_pipeline.rewards.mathverify import extract_answer, verify
from restem_pipeline.rewards.mathverify.normalize import number_words
from restem_pipeline.rewards.verdicts import math_verdicts


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


# -- issue 12, item 4: the remaining misses ------------------------------------------------------
# Rule for several boxes: the last box is the answer; boxes right before it with only connectives
# between them ("and", "or", commas, "$", "x =") form one answer with it. Against a one-item gold
# such boxes are alternatives that must each equal the gold. A row's "was ..." is the verdict
# before the fix (it failed then); rows without one are guards.


@pytest.mark.parametrize(
    ("prediction", "gold", "status"),
    [
        ("\\boxed{5} ... wait, correction: \\boxed{6}", "6", "correct"),  # the last box corrects (was incorrect)
        ("\\boxed{5} ... wait, correction: \\boxed{6}", "5", "incorrect"),  # ... so the first is not graded
        ("\\boxed{2} and \\boxed{3}", "2, 3", "correct"),  # side by side: one answer "2, 3" (was incorrect)
        ("\\boxed{2} and \\boxed{3}", "\\{2,3\\}", "correct"),  # was incorrect
        ("$\\boxed{3}$ and $\\boxed{2}$", "2, 3", "correct"),  # in any order (was incorrect)
        ("x = \\boxed{2} or x = \\boxed{3}", "2, 3", "correct"),  # was incorrect
        ("\\boxed{2} and \\boxed{3}", "2", "incorrect"),  # two answers to a one-item gold: never a reward
        ("\\boxed{2} and \\boxed{3}", "2, 3, 4", "incorrect"),
        ("\\boxed{15\\frac{39}{40}}, or \\boxed{\\frac{639}{40}}", "\\frac{639}{40}", "correct"),  # one value twice
        ("\\boxed{2}. Then we check: \\boxed{2} and \\boxed{3}", "2, 3", "correct"),  # was incorrect
    ],
)
def test_several_boxes(prediction, gold, status):
    (v,) = math_verdicts([prediction], [gold], 5.0, 1)
    assert v.status == status


@pytest.mark.parametrize(
    ("prediction", "gold", "status"),
    [
        ("Final Answer: The volume of the box is 120.", "120", "correct"),  # was incorrect
        ("Final Answer: The volume of the box is 120.", "12", "incorrect"),
        ("Final Answer: The largest $n$ is 34.", "34", "correct"),  # Math-Verify's test row, was incorrect
        ("The final answer is \\((-6, 10)\\). I hope it is correct.", "(-6, 10)", "correct"),  # was unparseable
        ("Final Answer: The answer is unclear", "5", "incorrect"),  # a sentence with no value stays whole
        ("Answer: 9", "9", "correct"),  # a line starting "Answer:" (was incorrect: read as the text "Answer: 9")
        ("**Answer:** 9", "9", "correct"),  # was incorrect
        ("We add them.\nAnswer: $\\frac{1}{2}$.", "0.5", "correct"),  # was unparseable_prediction
        ("Answer: 8", "9", "incorrect"),
    ],
)
def test_final_answer_sentence(prediction, gold, status):
    (v,) = math_verdicts([prediction], [gold], 5.0, 1)
    assert v.status == status


@pytest.mark.parametrize(
    ("prediction", "gold", "status"),
    [
        ("\\boxed{\\{\\pm 2\\}}", "\\{-2, 2\\}", "correct"),  # \\pm inside a set (was incorrect)
        ("\\boxed{\\{\\pm 2\\}}", "-2, 2", "correct"),  # was incorrect
        ("\\boxed{\\{\\pm 2\\}}", "\\pm 2", "correct"),  # was incorrect
        ("\\boxed{\\{-2, 2\\}}", "\\{\\pm 2\\}", "correct"),  # was incorrect
        ("\\boxed{\\{\\pm 2\\}}", "2", "incorrect"),
        ("\\boxed{\\{\\pm 2\\}}", "-2, 2, 0", "incorrect"),
        ("\\boxed{\\{1\\pm\\sqrt{5},-2\\}}", "-2, 1+\\sqrt{5}, 1-\\sqrt{5}", "correct"),  # was incorrect
        ("\\boxed{x = -2, x = 1\\pm\\sqrt{5}}", "\\{1\\pm\\sqrt{5},-2\\}", "correct"),  # x = a \\pm b is two items
        ("\\boxed{\\{\\pm 3\\}}", "\\{-2, 2\\}", "incorrect"),
    ],
)
def test_pm_in_sets(prediction, gold, status):
    (v,) = math_verdicts([prediction], [gold], 5.0, 1)
    assert v.status == status


@pytest.mark.parametrize(
    ("prediction", "gold", "status"),
    [
        # 2 (1, 2)^T = (2, 4)^T: each entry multiplied. The "correct" rows were incorrect before.
        ("\\boxed{2\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "\\begin{pmatrix}2\\\\4\\end{pmatrix}", "correct"),
        ("\\boxed{2\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "incorrect"),
        (
            "\\boxed{\\frac{1}{2} \\cdot \\begin{pmatrix}4 & 2\\\\0 & 6\\end{pmatrix}}",
            "\\begin{pmatrix}2 & 1\\\\0 & 3\\end{pmatrix}",
            "correct",
        ),
        ("\\boxed{-\\begin{pmatrix}1\\\\-3\\end{pmatrix}}", "\\begin{pmatrix}-1\\\\3\\end{pmatrix}", "correct"),
        ("\\boxed{3\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "(3, 6)", "correct"),  # a column vector is a tuple
        (
            "\\boxed{\\left[\\begin{array}{cc}1 & 2 \\\\3 & 4\\end{array}\\right]}",
            "\\begin{pmatrix}1 & 2\\\\3 & 4\\end{pmatrix}",
            "correct",
        ),
    ],
)
def test_scalar_times_matrix(prediction, gold, status):
    (v,) = math_verdicts([prediction], [gold], 5.0, 1)
    assert v.status == status


@pytest.mark.parametrize(
    ("prediction", "gold", "status"),
    [
        ("\\boxed{three apples}", "3", "correct"),  # was incorrect
        ("The answer is three apples.", "3", "correct"),  # was incorrect
        ("\\boxed{three apples}", "4", "incorrect"),
        ("\\boxed{1.45 million}", "1450000", "correct"),
        ("\\boxed{1.45 million dollars}", "1450000", "correct"),  # was incorrect
        ("\\boxed{two thirds}", "2", "incorrect"),  # a fraction word changes the value
        ("\\boxed{three dozen}", "3", "incorrect"),
        ("\\boxed{three squared}", "3", "incorrect"),
        ("\\boxed{one two}", "1", "incorrect"),
    ],
)
def test_number_words_with_units(prediction, gold, status):
    (v,) = math_verdicts([prediction], [gold], 5.0, 1)
    assert v.status == status


@pytest.mark.parametrize(
    ("prediction", "gold", "status"),
    [
        ("\\boxed{-x > -1}", "x < 1", "correct"),  # dividing by -1 flips the relation (was incorrect)
        ("\\boxed{2x \\ge 4}", "x \\ge 2", "correct"),  # was incorrect
        ("\\boxed{x > 1}", "x < 1", "incorrect"),
        ("\\boxed{-x > -1}", "x > -1", "incorrect"),  # bug fixed: "-x" was read as the variable (a false positive)
        ("\\boxed{x + 1 < 3}", "x < 3", "incorrect"),  # ... and so was "x + 1"
        ("\\boxed{x + 1 < 3}", "x < 2", "correct"),  # was incorrect
        ("\\boxed{2x + 1 < x + 3}", "(-\\infty, 2)", "correct"),  # was incorrect
        ("\\boxed{1 < 2x + 1 \\le 5}", "(0, 2]", "correct"),  # was incorrect
        ("\\boxed{1 < 2x + 1 \\le 5}", "[0, 2]", "incorrect"),
        ("\\boxed{-3 \\le -x \\le 1}", "[-1, 3]", "correct"),  # both ends swap under a negative coefficient
        ("\\boxed{2x < \\sqrt{8}}", "x < \\sqrt{2}", "correct"),  # an irrational bound, compared by sympy
        ("\\boxed{f(2) < f(3)}", "f(1) < f(3)", "incorrect"),  # f(2) is a function's value, not 2f
        ("\\boxed{[-80, 82]}", "-80 \\leq g(x) \\leq 82", "correct"),  # a range: g(x) names the unknown
    ],
)
def test_equivalent_relations(prediction, gold, status):
    (v,) = math_verdicts([prediction], [gold], 5.0, 1)
    assert v.status == status


# -- the last-number fallback keeps fractions, mixed numbers and times whole ----------------------


@pytest.mark.parametrize(
    ("prediction", "answer"),
    [
        ("Each friend gets 1/3 pound of cheese", "1/3"),  # was "3"
        ("so the total is -5/2 meters in all", "-5/2"),  # was "2"
        ("he waited 3 1/2 hours", "3\\frac{1}{2}"),  # a mixed number (was "2")
        ("that is 3 5/2 cups, oddly", "5/2"),  # not a proper fraction, so no mixed number (was "2")
        ("the train leaves at 2:30 today", "2:30"),  # a clock time (was "30")
        ("she has 3 apples, then 5 more, giving 8", "8"),
        ("the dates 3/4/2020 were busy", "2020"),  # a date is not a fraction
        ("in all it costs 1,250.50 dollars", "1,250.50"),
    ],
)
def test_last_number_fallback_keeps_numbers_whole(prediction, answer):
    assert extract_answer(prediction, last_number_fallback=True) == answer


@pytest.mark.parametrize(
    ("prediction", "gold", "status"),
    [
        ("Each friend gets 1/3 pound of cheese", "\\frac13", "correct"),
        ("Each friend gets 1/3 pound of cheese", "3", "incorrect"),
        ("he waited 3 1/2 hours", "3.5", "correct"),
        ("he waited 3 1/2 hours", "1.5", "incorrect"),  # 3 1/2 is never 3 * 1/2
        ("the train leaves at 2:30 today", "2:30", "correct"),
        # A time is read whole; against a number it is no readable value (never a reward).
        ("the train leaves at 2:30 today", "30", "unparseable_prediction"),
    ],
)
def test_last_number_fallback_grades(prediction, gold, status):
    assert verify(prediction, gold, last_number_fallback=True).status == status
