"""The public verifier: extract, parse the gold, compare, and return a result with a status.

Covers: ``verify`` and ``verify_batch``. Each item first goes through the in-process fast path
(extraction, normalization, exact rational arithmetic, text, shapes, float rejection); only pairs
it cannot decide (equal-looking irrational or symbolic expressions, general equations) go to sympy
in worker processes with a hard per-item time limit (``workers``). Plain numbers never start a
process. Statuses: ``correct``; ``incorrect``; ``unparseable_prediction`` (no final answer, one
that is neither text nor readable math, or one too long to grade: ``grading.predicted_chars_limit``,
so that no model output can keep the fast path busy); ``invalid_gold`` (the gold could not be
parsed: never a reward); ``timeout`` (not graded: over the time limit, or the worker failed on the
item; the reason says which). Only ``correct`` gives a reward of 1.

Which answer is graded: the final answer of ``extraction.final_boxed`` when the output has boxes
(the last box; boxes side by side with only connectives between them form one answer, "\\boxed{2}
and \\boxed{3}" is "2, 3"; an earlier box followed by prose and another box was corrected and is
not graded; a "The final answer is ..." written after the last box replaces the box), else the first
rule of ``extraction.extract_answers`` that finds one (an output that is visibly an escaped string
literal is read unescaped first: ``extraction.unescape_literal``). With the
problem's text (``problem=``/``problems=``), an answer that restates the problem's own expression
unevaluated is ``incorrect`` with the reason "restates the problem" (``restatement``), even when it
is numerically equal to the gold.

Time: the in-process path is bounded by construction, not by a clock (pure Python cannot be
interrupted safely from another thread): extraction scans an output in linear time, an answer
longer than ``grading.predicted_chars_limit`` is refused before it is normalized, the expression
parser stops at ``latex_expr.MAX_TOKENS`` tokens and ``MAX_DEPTH`` levels, exact arithmetic
refuses numbers past ``evaluate.MAX_BITS``, and the problem text is scanned once (and cached) up to
``restatement.MAX_PROBLEM_CHARS``. ``tests/test_mathverify_bounds.py`` holds the adversarial inputs
(100,000 nested braces, thousands of words, ``\\frac{`` or ``\\boxed{`` runs, long digit strings):
each whole verification returns within a second or two. Only the sympy step can run long, and it has
the hard limit ``timeout_s`` (a ``timeout`` status, never ``incorrect``). Results report answers cut
to ``MAX_ANSWER_CHARS``.

Does not cover: extraction rules (``extraction``), equivalence rules (``grading``), the command line
(``cli``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from restem_pipeline.rewards.mathverify.extraction import (
    GOLD_FORMATS,
    MAX_ANSWER_CHARS,
    GoldFormat,
    InvalidGoldError,
    extract_answer,
    extract_answers,
    final_boxed_parts,
    parse_gold,
    unescape_literal,
)
from restem_pipeline.rewards.mathverify.grading import Grader, judge_answers, predicted_chars_limit, shape_of_answer
from restem_pipeline.rewards.mathverify.restatement import restates_problem
from restem_pipeline.rewards.mathverify.workers import Job, default_pool

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
    # Every distinct answer found (each boxed answer), the graded one (``predicted``) last.
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
    from restem_pipeline.rewards.mathverify import grading, relations, restatement

    for cached in (
        _gold_answer,
        grading.shape_of_answer,
        grading._expr_or_error,
        grading._number_of,
        relations.parsed,
        restatement.problem_pieces,
        restatement.normalized,
    ):
        cached.cache_clear()


def _shown(candidates: Sequence[str]) -> tuple[str, ...]:
    """Candidates as reported in a result: cut to ``MAX_ANSWER_CHARS`` (an overlong one is not graded)."""
    return tuple(c[:MAX_ANSWER_CHARS] for c in candidates)


def _graded(prediction: str, candidates: list[str], gold: str) -> tuple[tuple[str, ...], list[str]]:
    """(the answers to grade, the boxes that form the final answer). The final answer is graded;
    when it joins several boxes and the gold is one item (not a list or set), those boxes are
    alternatives that must each equal the gold ("\\boxed{15\\frac{39}{40}}, or \\boxed{\\frac{639}{40}}"
    against ``\\frac{639}{40}``). A final answer too long to grade is graded whole (and refused)."""
    parts = final_boxed_parts(prediction) if len(candidates) > 1 else []
    if ", ".join(parts) != candidates[-1]:
        parts = []  # the final answer is a "final answer is ..." written after the boxes
    if len(parts) > 1 and len(candidates[-1]) <= predicted_chars_limit(gold) and shape_of_answer(gold)[0] != "set":
        return tuple(parts), parts
    return (candidates[-1],), parts


def _fast_verdict(answers: tuple[str, ...], gold: str, problem: str | None) -> tuple[str, str]:
    try:
        status, reason = judge_answers(list(answers), gold, _FAST)
        if status in ("correct", "undecided") and any(restates_problem(a, gold, problem) for a in answers):
            return "incorrect", "restates the problem: the answer is the problem's own expression, unevaluated"
        return status, reason
    except (RecursionError, ArithmeticError, ValueError, IndexError) as err:
        # The fast path gave up on an odd input; the worker decides (or reports an error status).
        return "undecided", f"{type(err).__name__}: {err}"


def _note(candidates: Sequence[str], parts: list[str]) -> str:
    """The reason's note on boxed answers that were not graded (earlier, corrected ones)."""
    others = [c for c in candidates[:-1] if c not in parts]
    if not others:
        return ""
    shown = ", ".join(repr(c[:40]) for c in others[:5])
    return f"graded the final answer {candidates[-1][:80]!r}; earlier boxed answers ({shown}) are not graded"


def verify(
    prediction: str,
    gold: str,
    *,
    gold_format: GoldFormat = "answer",
    timeout_s: float = 5.0,
    last_number_fallback: bool = False,
    problem: str | None = None,
) -> MathResult:
    """Grade one model output (or bare answer) against a gold answer in ``gold_format``; with the
    problem's text, an answer restating the problem's expression is incorrect (``restatement``)."""
    return verify_batch(
        [prediction],
        [gold],
        gold_format=gold_format,
        timeout_s=timeout_s,
        workers=1,
        last_number_fallback=last_number_fallback,
        problems=[problem],
    )[0]


def verify_batch(
    predictions: Sequence[str],
    golds: Sequence[str],
    *,
    gold_format: GoldFormat = "answer",
    timeout_s: float = 5.0,
    workers: int = 1,
    last_number_fallback: bool = False,
    problems: Sequence[str | None] | None = None,
) -> list[MathResult]:
    """Grade many outputs; symbolic pairs are spread over ``workers`` processes. ``problems`` (the
    problems' texts, or None per item) turns on the restatement rule."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} golds")
    if problems is None:
        problems = [None] * len(predictions)
    if len(problems) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(problems)} problems")
    if gold_format not in GOLD_FORMATS:
        raise ValueError(f"unknown gold_format {gold_format!r}; expected one of {GOLD_FORMATS}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    results: list[MathResult | None] = [None] * len(predictions)
    escalate: list[tuple[int, tuple[str, ...], str, tuple[str, ...], list[str]]] = []
    for i, (prediction, gold, problem) in enumerate(zip(predictions, golds, problems, strict=True)):
        gold_answer = _gold_answer(gold, gold_format)
        if isinstance(gold_answer, InvalidGoldError):
            results[i] = MathResult(Status.INVALID_GOLD, None, None, str(gold_answer))
            continue
        if not isinstance(prediction, str):
            results[i] = MathResult(Status.UNPARSEABLE_PREDICTION, None, gold_answer, "prediction is not text")
            continue
        prediction = unescape_literal(prediction)
        candidates = extract_answers(prediction, last_number_fallback=last_number_fallback)
        if not candidates:
            results[i] = MathResult(Status.UNPARSEABLE_PREDICTION, None, gold_answer, "no final answer found")
            continue
        problem_text = problem if isinstance(problem, str) else None
        graded, parts = _graded(prediction, candidates, gold_answer)
        status, reason = _fast_verdict(graded, gold_answer, problem_text)
        if status == "undecided":
            escalate.append((i, tuple(candidates), gold_answer, graded, parts))
        else:
            shown = _shown(candidates)
            reason = "; ".join(r for r in (reason, _note(candidates, parts)) if r)
            results[i] = MathResult(Status(status), shown[-1], gold_answer, reason, shown)
    if escalate:
        jobs = [Job(graded, gold_answer) for _, _, gold_answer, graded, _ in escalate]
        outcomes = default_pool().run(jobs, timeout_s=timeout_s, workers=workers)
        for (i, cands, gold_answer, _, parts), outcome in zip(escalate, outcomes, strict=True):
            status = outcome["status"]
            reason = outcome["reason"]
            if status == "undecided":
                status, reason = "timeout", "not graded: the symbolic grader could not decide"
            elif status == "error":
                status, reason = "timeout", f"not graded (worker error): {reason}"
            elif status == "timeout":
                reason = f"not graded: symbolic comparison ran {reason}"
            shown = _shown(cands)
            reason = "; ".join(r for r in (reason, _note(cands, parts)) if r)
            results[i] = MathResult(Status(status), shown[-1], gold_answer, reason, shown)
    return [r for r in results if r is not None]
