"""The restatement policy (issue 12): an answer that is the problem's own expression, unevaluated, earns
no reward, even when it is numerically equal to the gold; golds that are expressions stay matchable.

Covers: ``verify(..., problem=...)``, ``verify_batch(..., problems=...)``, ``rewards.math_verdicts``
and ``rewards.verdicts_for`` (which pass the problem's text), and the rule's pieces
(``restatement.problem_pieces``, ``in_simplest_form``). Does not cover: answers with variables (the
rule is about literals; see the module docstring of ``restatement``).
"""

from __future__ import annotations

import pytest

from restem_pipeline.data.schema import Problem
from restem_pipeline.rewards.mathverify import Status, verify, verify_batch
from restem_pipeline.rewards.mathverify.latex_expr import parse_expr
from restem_pipeline.rewards.mathverify.restatement import in_simplest_form, problem_pieces, restates_problem
from restem_pipeline.rewards.verdicts import math_verdicts, verdicts_for

C, I = Status.CORRECT, Status.INCORRECT  # noqa: E741
DIFFERENCE = "What is the value of $501^2-499^2$?"


@pytest.mark.parametrize(
    ("prediction", "gold", "problem", "expected"),
    [
        # The example: equal to 2000, but the problem restated (was correct).
        ("\\boxed{501^2 - 499^2}", "2000", DIFFERENCE, I),
        ("\\boxed{2000}", "2000", DIFFERENCE, C),
        ("The answer is $501^2-499^2$.", "2000", DIFFERENCE, I),
        ("\\boxed{x = 501^2 - 499^2}", "2000", DIFFERENCE, I),  # the value named by a variable
        ("\\boxed{(501-499)(501+499)}", "2000", DIFFERENCE, C),  # work shown, not the problem's expression
        ("\\boxed{501^2 - 499^2}", "2000", "What is 501^2 - 499^2?", I),  # plain-text problem
        ("\\boxed{2\\cdot 3}", "6", "Compute $2 \\times 3$.", I),  # \cdot and \times read alike
        ("\\boxed{\\binom{8}{4}}", "70", "Compute $\\dbinom{8}{4}$.", I),
        ("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", "Simplify $\\sqrt{8}$.", I),  # an irrational gold
        ("\\boxed{2\\sqrt{2}}", "2\\sqrt{2}", "Simplify $\\sqrt{8}$.", C),
        ("\\boxed{\\frac{2}{4}}", "\\frac12", "Reduce $\\frac{2}{4}$ to lowest terms.", I),
        ("\\boxed{\\frac{1}{2}}", "\\frac12", "Reduce $\\frac{2}{4}$; is it $\\frac{1}{2}$?", C),  # reduced
        ("\\boxed{3^4 - 1}", "80", "Find $x$ if $x = 3^4 - 1$.", I),  # one side of an equation
        ("\\boxed{\\lceil \\sqrt{140} \\rceil}", "12", "Evaluate $\\left\\lceil\\sqrt{140}\\right\\rceil$.", I),
        # Golds that are expressions: the same expression is still the answer.
        ("\\boxed{\\sqrt2}", "\\sqrt{2}", "Which is larger, $\\sqrt{2}$ or $1.4$?", C),
        ("\\boxed{\\frac{\\pi}{4}}", "\\frac{\\pi}{4}", "Compute $\\arctan 1$, e.g. $\\frac{\\pi}{4}$.", C),
        ("\\boxed{2^{10}}", "2^{10}", "Write $1024$ as $2^{10}$ or otherwise.", C),
        # Not the problem's whole expression: graded as usual.
        ("\\boxed{2+3}", "5", "What is $12+34$, and what is $2+3+4$?", C),
        ("\\boxed{(x+1)^2}", "x^2+2x+1", "Expand $(x+1)^2$.", C),  # variables: outside the rule
    ],
)
def test_restatement_policy(prediction: str, gold: str, problem: str, expected: Status) -> None:
    result = verify(prediction, gold, problem=problem)
    assert result.status is expected, result
    assert ("restates the problem" in result.reason) is (expected is I)
    assert verify(prediction, gold).status is C  # without the problem's text the rule is off


def test_problems_are_threaded_through_the_batch_and_the_rewards() -> None:
    preds = ["\\boxed{501^2 - 499^2}", "\\boxed{2000}", "\\boxed{501^2 - 499^2}"]
    golds = ["2000", "2000", "2000"]
    problems = [DIFFERENCE, DIFFERENCE, None]
    assert [r.status for r in verify_batch(preds, golds, problems=problems)] == [I, C, C]
    with pytest.raises(ValueError, match="problems"):
        verify_batch(preds, golds, problems=[DIFFERENCE])
    verdicts = math_verdicts(preds, golds, 5.0, 1, problems=problems)
    assert [(v.status, v.reward) for v in verdicts] == [("incorrect", 0.0), ("correct", 1.0), ("correct", 1.0)]
    problem = Problem(id="p1", domain="math", prompt=DIFFERENCE, source="test", answer="2000")
    (v,) = verdicts_for([problem], ["So the answer is $\\boxed{501^2-499^2}$."])
    assert v.status == "incorrect" and "restates the problem" in v.detail


def test_problem_pieces() -> None:
    pieces = problem_pieces("Find $x$ if $x = 3^4 - 1$, given $a, b \\le 2 \\cdot 5$. Also 7 + 8 = ?")
    assert {"x=3^4-1", "3^4-1", "2*5", "7+8"} <= pieces
    assert "y" not in problem_pieces("Let $y$ be real.")  # no digit: never a literal expression
    assert "4-1" not in pieces  # only whole expressions, not parts of one
    # An escaped dollar is no delimiter; an unclosed one leaves the rest as plain text.
    assert "3+4" in problem_pieces("It costs \\$5; what is $3+4$? And $ 9 - 1")
    assert "9-1" in problem_pieces("It costs \\$5; what is $3+4$? And $ 9 - 1")


@pytest.mark.parametrize(
    ("text", "simplest"),
    [
        ("5", True),
        ("-2.5", True),
        ("\\frac{3}{4}", True),
        ("-\\frac{3}{4}", True),
        ("\\pi", True),
        ("\\frac{6}{8}", False),
        ("\\frac{4}{1}", False),
        ("2+3", False),
        ("2^{10}", False),
        ("\\sqrt{2}", False),
    ],
)
def test_in_simplest_form(text: str, simplest: bool) -> None:
    assert in_simplest_form(parse_expr(text)) is simplest


def test_restates_problem_needs_the_problem() -> None:
    assert restates_problem("501^2 - 499^2", "2000", DIFFERENCE)
    assert not restates_problem("501^2 - 499^2", "2000", None)
    assert not restates_problem("501^2 - 499^2", "2000", "")
    assert not restates_problem("not an expression (", "2000", DIFFERENCE)
