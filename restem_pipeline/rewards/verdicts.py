"""The binary reward: one ``Verdict`` (status, reward, extracted answer) per completion.

Math completions go to ``mathverify`` (final answer against the gold); code completions go to the
sandbox (the program against the problem's tests). ``reward`` is 1.0 or 0.0 when the verdict is
known and ``None`` when it is not (invalid gold, verifier timeout, sandbox infrastructure error):
those are counted and shown, never trained on and never scored as a silent 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from restem_pipeline.data.schema import Problem
from restem_pipeline.rewards import mathverify

UNSCORED = {"invalid_gold", "timeout", "infra_error"}


@dataclass(frozen=True)
class Verdict:
    status: str
    reward: float | None
    answer: str | None
    detail: str = ""


def math_verdicts(
    completions: Sequence[str],
    golds: Sequence[str],
    timeout_s: float,
    workers: int,
    problems: Sequence[str | None] | None = None,
) -> list[Verdict]:
    """``problems`` (the problems' texts) lets the verifier refuse an answer that restates the problem."""
    results = mathverify.verify_batch(
        list(completions),
        list(golds),
        timeout_s=timeout_s,
        workers=workers,
        problems=None if problems is None else list(problems),
    )
    out = []
    for r in results:
        status = str(r.status)
        reward = None if status in UNSCORED else r.reward
        out.append(Verdict(status, reward, r.predicted, r.reason))
    return out


_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_program(completion: str) -> str:
    """The code in a completion: the first fenced block if there is one, else the whole text."""
    m = _FENCE.search(completion)
    return (m.group(1) if m else completion).strip("\n")


def code_verdicts(completions: Sequence[str], tests: Sequence[str], timeout_s: float, workers: int) -> list[Verdict]:
    from restem_pipeline.rewards import sandbox  # docker SDK only loads for code problem sets

    programs = [extract_program(c) for c in completions]
    results = sandbox.run_programs(programs, list(tests), workers=workers, timeout_s=timeout_s)
    out = []
    for prog, r in zip(programs, results, strict=True):
        status = str(r.status)
        reward = None if status == "infra_error" else (1.0 if status == "pass" else 0.0)
        out.append(Verdict(status, reward, prog[:2000], r.detail))
    return out


def verdicts_for(
    problems: Sequence[Problem], completions: Sequence[str], timeout_s: float = 5.0, workers: int = 1
) -> list[Verdict]:
    """Score ``completions[i]`` against ``problems[i]``, batching math and code separately."""
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    out: list[Verdict | None] = [None] * len(problems)
    math_idx = [i for i, p in enumerate(problems) if p.domain == "math"]
    code_idx = [i for i, p in enumerate(problems) if p.domain == "code"]
    if math_idx:
        vs = math_verdicts(
            [completions[i] for i in math_idx],
            [problems[i].answer for i in math_idx],
            timeout_s,
            workers,
            problems=[problems[i].prompt for i in math_idx],
        )
        for i, v in zip(math_idx, vs, strict=True):
            out[i] = v
    if code_idx:
        vs = code_verdicts(
            [completions[i] for i in code_idx], [problems[i].tests for i in code_idx], timeout_s, workers
        )
        for i, v in zip(code_idx, vs, strict=True):
            out[i] = v
    return out  # type: ignore[return-value]
