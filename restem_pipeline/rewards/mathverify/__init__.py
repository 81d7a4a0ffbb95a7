"""Math answer verification: extract a final answer, parse the gold, compare, return a status.

Public API (stable; the pipeline's reward and evaluation call only these):

- ``verify(prediction, gold, *, gold_format="answer", timeout_s=5.0, last_number_fallback=False,
  problem=None)`` -> ``MathResult`` (with the problem's text, an answer restating the problem's own
  expression unevaluated is incorrect: ``restatement``)
- ``verify_batch(predictions, golds, *, gold_format="answer", timeout_s=5.0, workers=1, ...,
  problems=None)`` -> ``list[MathResult]``
- ``extract_answer(text, *, last_number_fallback=False) -> str | None``
- ``parse_gold(text, gold_format) -> str`` (raises ``InvalidGoldError``)
- ``Status`` values: correct, incorrect, unparseable_prediction, invalid_gold, timeout.
"""

from restem_pipeline.rewards.mathverify.api import (
    InvalidGoldError,
    MathResult,
    Status,
    extract_answer,
    extract_answers,
    parse_gold,
    verify,
    verify_batch,
)

__all__ = [
    "InvalidGoldError",
    "MathResult",
    "Status",
    "extract_answer",
    "extract_answers",
    "parse_gold",
    "verify",
    "verify_batch",
]
