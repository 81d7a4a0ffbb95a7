"""The public verifier: extract, parse the gold, compare, and return a result with a status.

Covers: ``verify`` and ``verify_batch``. Each item first goes through the in-process fast path
(extraction, normalization, exact rational arithmetic, text, shapes, float rejection); only pairs
it cannot decide (equal-looking irrational or symbolic expressions, general equations) go to sympy
in worker processes with a hard per-item time limit (``workers``). Plain numbers never start a
process. Statuses: ``correct``; ``incorrect``; ``unparseable_prediction`` (no final answer, one
that is neither text nor readable math, or one too long to grade: ``grading.predicted_chars_limit``,
so that no model output can keep the fast path busy); ``invalid_gold`` (the gold could not be
parsed: never a reward); ``timeout`` (not graded: over the time limit, or the worker failed on the
item; the reason says which). Only ``correct`` gives a reward of 1. Extraction scans an output in
linear time and an answer graded in-process is at most a few hundred characters, so the fast path
is quick on any output. Results report answers cut to ``MAX_ANSWER_CHARS``.

Does not cover: extraction rules (``extraction``), equivalence rules (``grading``), the command line
(``cli``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from restem_pipeline.mathverify.extraction import (
    GOLD_FORMATS,
    MAX_ANSWER_CHARS,
    GoldFormat,
    InvalidGoldError,
    extract_answer,
    extract_answers,
    parse_gold,
)
from restem_pipeline.mathverify.grading import Grader, judge_answers, shape_of_answer
from restem_pipeline.mathverify.workers import Job, default_pool

__all__ = [
    "GoldFormat",
    "InvalidGoldError",
    "MathResult",
    "Status",
    "extract_answer",
    "extract_answers",
    "parse_gold",
    "verify",
    "verify_batch",
]


class Status(StrEnum):
    CORRECT = "correct"
    INCORRECT = "incorrect"
    UNPARSEABLE_PREDICTION = "unparseable_prediction"
    INVALID_GOLD = "invalid_gold"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class MathResult:
    status: Status
    predicted: str | None
    gold: str | None
    reason: str = ""
    # Every distinct final answer found (several boxed answers); ``predicted`` is the last one.
    candidates: tuple[str, ...] = ()

    @property
    def reward(self) -> float:
        return 1.0 if self.status is Status.CORRECT else 0.0


_FAST = Grader(symbolic=None)


@lru_cache(maxsize=65536)
def _gold_answer(gold: str, gold_format: str) -> str | InvalidGoldError:
    """The parsed gold answer (cached), or the error saying why it is invalid."""
    try:
        answer = parse_gold(gold, gold_format)  # type: ignore[arg-type]
    except InvalidGoldError as err:
        return err
    shape = shape_of_answer(answer)
    if shape == ("scalar", ""):
        return InvalidGoldError(f"gold answer {answer!r} is empty after normalization")
    return answer


def clear_caches() -> None:
    """Forget cached golds and parsed answers (benchmarks use it to time cold runs)."""
    from restem_pipeline.mathverify import grading

    for cached in (_gold_answer, grading.shape_of_answer, grading._expr_or_error, grading._number_of):
        cached.cache_clear()


def _shown(candidates: Sequence[str]) -> tuple[str, ...]:
    """Candidates as reported in a result: cut to ``MAX_ANSWER_CHARS`` (an overlong one is not graded)."""
    return tuple(c[:MAX_ANSWER_CHARS] for c in candidates)


def _fast_verdict(candidates: list[str], gold: str) -> tuple[str, str]:
    try:
        return judge_answers(candidates, gold, _FAST)
    except (RecursionError, ArithmeticError, ValueError, IndexError) as err:
        # The fast path gave up on an odd input; the worker decides (or reports an error status).
        return "undecided", f"{type(err).__name__}: {err}"


def verify(
    prediction: str,
    gold: str,
    *,
    gold_format: GoldFormat = "answer",
    timeout_s: float = 5.0,
    last_number_fallback: bool = False,
) -> MathResult:
    """Grade one model output (or bare answer) against a gold answer in ``gold_format``."""
    return verify_batch(
        [prediction],
        [gold],
        gold_format=gold_format,
        timeout_s=timeout_s,
        workers=1,
        last_number_fallback=last_number_fallback,
    )[0]


def verify_batch(
    predictions: Sequence[str],
    golds: Sequence[str],
    *,
    gold_format: GoldFormat = "answer",
    timeout_s: float = 5.0,
    workers: int = 1,
    last_number_fallback: bool = False,
) -> list[MathResult]:
    """Grade many outputs; symbolic pairs are spread over ``workers`` processes."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} golds")
    if gold_format not in GOLD_FORMATS:
        raise ValueError(f"unknown gold_format {gold_format!r}; expected one of {GOLD_FORMATS}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    results: list[MathResult | None] = [None] * len(predictions)
    escalate: list[tuple[int, tuple[str, ...], str]] = []
    for i, (prediction, gold) in enumerate(zip(predictions, golds, strict=True)):
        gold_answer = _gold_answer(gold, gold_format)
        if isinstance(gold_answer, InvalidGoldError):
            results[i] = MathResult(Status.INVALID_GOLD, None, None, str(gold_answer))
            continue
        if not isinstance(prediction, str):
            results[i] = MathResult(Status.UNPARSEABLE_PREDICTION, None, gold_answer, "prediction is not text")
            continue
        candidates = extract_answers(prediction, last_number_fallback=last_number_fallback)
        if not candidates:
            results[i] = MathResult(Status.UNPARSEABLE_PREDICTION, None, gold_answer, "no final answer found")
            continue
        status, reason = _fast_verdict(candidates, gold_answer)
        if status == "undecided":
            escalate.append((i, tuple(candidates), gold_answer))
        else:
            shown = _shown(candidates)
            results[i] = MathResult(Status(status), shown[-1], gold_answer, reason, shown)
    if escalate:
        jobs = [Job(cands, gold_answer) for _, cands, gold_answer in escalate]
        outcomes = default_pool().run(jobs, timeout_s=timeout_s, workers=workers)
        for (i, cands, gold_answer), outcome in zip(escalate, outcomes, strict=True):
            status = outcome["status"]
            reason = outcome["reason"]
            if status == "undecided":
                status, reason = "timeout", "not graded: the symbolic grader could not decide"
            elif status == "error":
                status, reason = "timeout", f"not graded (worker error): {reason}"
            elif status == "timeout":
                reason = f"not graded: symbolic comparison ran {reason}"
            shown = _shown(cands)
            results[i] = MathResult(Status(status), shown[-1], gold_answer, reason, shown)
    return [r for r in results if r is not None]
