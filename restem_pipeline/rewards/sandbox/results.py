"""Per-test and per-program verdicts: the status values, their precedence, and the reward rule.

Statuses (per test): ``pass``, ``fail`` (wrong output, or an object whose equality cannot be
trusted), ``runtime_error`` (exception, crash, exit before the tests finished), ``timeout``,
``memory_exceeded``, ``output_limit`` (stdout+stderr over the cap, or file writes over the file-size
or tmpfs cap), ``infra_error`` (the sandbox itself failed after bounded retries: says nothing about
the program), and ``skipped`` (not run because ``stop_on_fail`` stopped after an earlier non-pass).

A program's overall ``status`` is ``pass`` only if every test passes. Otherwise it is
``infra_error`` if any test had one (so it can never be mistaken for a wrong answer), else the
first non-pass status in test order. ``reward`` is 1.0 on pass, 0.0 on any program-caused status,
and ``None`` on ``infra_error``: callers must drop (or retry) those samples, never score them 0.
This module only interprets runner answers; it runs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from restem_pipeline.rewards.sandbox.compare import TestCase, stdout_matches, value_matches

STATUSES = ("pass", "fail", "runtime_error", "timeout", "memory_exceeded", "output_limit", "infra_error")
SKIPPED = "skipped"
_RUNNER_STATUSES = {"runtime_error", "timeout", "memory_exceeded", "output_limit", "fail", "infra_error"}


@dataclass(frozen=True)
class TestResult:
    __test__ = False

    status: str
    detail: str = ""
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class ProgramResult:
    """Verdict on one program over all its tests. ``tests`` holds the per-test statuses."""

    status: str
    tests: list[str]
    detail: str = ""
    elapsed_s: float = 0.0
    test_details: list[str] = field(default_factory=list)

    @property
    def reward(self) -> float | None:
        """1.0 on pass, 0.0 on a program-caused failure, None on infra_error (never score it)."""
        if self.status == "infra_error":
            return None
        return 1.0 if self.status == "pass" else 0.0

    @property
    def is_infra_error(self) -> bool:
        return self.status == "infra_error"

    def to_row(self) -> dict:
        return {
            "status": self.status,
            "tests": list(self.tests),
            "detail": self.detail,
            "elapsed_s": round(self.elapsed_s, 4),
        }


def overall_status(statuses: list[str]) -> str:
    """``pass`` iff all pass; ``infra_error`` if any; else the first non-pass status in test order."""
    if not statuses:
        return "infra_error"
    if "infra_error" in statuses:
        return "infra_error"
    return next((s for s in statuses if s not in ("pass", SKIPPED)), "pass")


def judge(case: TestCase, response: dict) -> TestResult:
    """Turn the runner's answer for one test into a status, comparing on the host."""
    status = response.get("status")
    elapsed = float(response.get("elapsed", 0.0))
    detail = str(response.get("detail", ""))
    stderr = str(response.get("stderr", "")).strip()
    if status in _RUNNER_STATUSES:
        if status == "runtime_error" and stderr:
            detail = f"{detail}; stderr: {stderr[-300:]}"
        return TestResult(status, detail, elapsed)
    if status != "ok":
        return TestResult("infra_error", f"runner answered status {status!r}", elapsed)
    if case.mode == "stdio":
        got = response.get("stdout", "")
        if stdout_matches(got, case.expected):
            return TestResult("pass", "", elapsed)
        return TestResult("fail", f"stdout {_clip(got)!r} != expected {_clip(case.expected)!r}", elapsed)
    if case.mode == "call":
        got = response.get("result")
        if value_matches(got, case.expected):
            return TestResult("pass", "", elapsed)
        detail = f"returned {_clip(repr(got))} != expected {_clip(repr(case.expected))}"
        return TestResult("fail", detail, elapsed)
    if response.get("done") is True:
        return TestResult("pass", "", elapsed)
    return TestResult("runtime_error", "test code did not run to the end", elapsed)


def _clip(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[:n] + "..."
