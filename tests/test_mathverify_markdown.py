"""Markdown bold around a final answer (issue 12's misses: ``**73**``); hand-labelled, with guards."""

import pytest

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
