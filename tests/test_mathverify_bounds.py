"""Every item's whole verification is bounded in time: the issue 12 adversarial inputs, end to end.

Covers: ``verify`` (extraction, normalization, parsing, grading, the restatement rule with a problem
text) on 100,000 characters of nested braces, thousands of words after a number, 10,000 ``\\frac{``,
long digit strings, runs of ``\\boxed{`` and of boxes, long sentences after "Final Answer:", relation
chains, number words, last-number fallback inputs and hostile problem texts; each call must return
a status within ``CALL_LIMIT_S`` (the fast path is bounded by construction: see ``api``). A check
that the new scanners grow linearly (time at 8x the input under 24x). And the statuses: a sympy step
past its limit is ``timeout``, whose reward is null in the pipeline, never an ``incorrect`` 0.

Does not cover: the worker pool's mechanics and its real time limit (``test_mathverify_workers``
kills a stuck sympy worker) or the ReDoS regressions and fuzz of the earlier fix
(``test_mathverify_redos``, whose time-guard helper is repeated here).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from restem_pipeline.rewards.mathverify import Status, verify
from restem_pipeline.rewards.mathverify import api as api_module
from restem_pipeline.rewards.mathverify.extraction import extract_answers, final_boxed
from restem_pipeline.rewards.mathverify.normalize import normalize_answer
from restem_pipeline.rewards.mathverify.restatement import problem_pieces
from restem_pipeline.rewards.verdicts import UNSCORED, math_verdicts

CALL_LIMIT_S = 3.0  # a whole verification; it takes milliseconds (a loaded 2-core machine: headroom)
HARD_STOP_S = 20.0  # past this a call is interrupted, so a regression fails instead of hanging


def _bounded(call: Callable[[], Any], what: str, limit_s: float = CALL_LIMIT_S) -> Any:
    """``call()``, failing when it takes ``limit_s`` or more (interrupted after ``HARD_STOP_S``)."""

    def _stop(signum, frame):
        raise TimeoutError(f"still running after {HARD_STOP_S:g}s: {what}")

    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _stop)
        signal.setitimer(signal.ITIMER_REAL, HARD_STOP_S)
    start = time.perf_counter()
    try:
        result = call()
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - start
    assert elapsed < limit_s, f"{elapsed:.2f}s (limit {limit_s:g}s): {what}"
    return result


def _show(text: str) -> str:
    return repr(text) if len(text) <= 120 else f"{text[:80]!r}... ({len(text)} chars)"


class _NoWorkers:
    """A pool that grades nothing: pairs the fast path cannot decide come back as timeouts."""

    def run(self, jobs, *, timeout_s, workers=1):
        return [{"status": "timeout", "reason": "not sent to a worker in this test"} for _ in jobs]


@pytest.fixture
def fast_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``verify`` without sympy workers, so each call times the in-process path alone."""
    monkeypatch.setattr(api_module, "default_pool", lambda: _NoWorkers())


ADVERSARIAL = {
    "100k nested braces": "{" * 50_000 + "}" * 50_000,
    "100k unclosed braces": "{" * 100_000,
    "boxed 100k nested braces": "\\boxed{" + "{" * 50_000 + "1" + "}" * 50_000 + "}",
    "words after a number": "5 " + "word " * 5000 + "!",
    "10k frac": "\\frac{" * 10_000,
    "10k closed frac": "\\frac{" * 10_000 + "1}{2}" * 10_000,
    "long digits": "1" * 100_000,
    "boxed long digits": "\\boxed{" + "9" * 100_000 + "}",
    "boxed 450 digits": "\\boxed{" + "9" * 450 + "}",
    "decimal digits": "0." + "3" * 50_000,
    "30k boxed": "\\boxed{" * 30_000,
    "20k boxes side by side": "\\boxed{1}" * 20_000,
    "20k corrected boxes": "\\boxed{1} wait " * 20_000,
    "boxes with long gaps": ("\\boxed{1}" + " " * 39) * 5000,
    "final answer sentence": "Final Answer: " + "the value is " * 5000 + "5.",
    "final answer words": "Final Answer: " + "a " * 50_000,
    "pm run": "\\boxed{" + "1 \\pm " * 80 + "1}",
    "scalar times matrix": "\\boxed{" + "2" * 200 + "\\begin{pmatrix}" + "1 \\\\ " * 50 + "\\end{pmatrix}}",
    "linear relation": "\\boxed{" + "+".join(["x"] * 200) + " < 1}",
    "relation chain": "\\boxed{" + " < ".join(["x"] * 150) + "}",
    "number words": "The answer is " + "one " * 5000,
    "number words then units": "\\boxed{" + "twenty " * 30 + "apples}",
    "fractions for the fallback": "1/" * 50_000,
    "mixed numbers for the fallback": "1 " * 50_000 + "1/2",
    "times for the fallback": "12:34:" * 10_000,
    "dollars": "$" * 100_000,
    "escaped parens": "\\(" * 50_000,
}

HOSTILE_PROBLEMS = {
    "dollars": "$" * 20_000,
    "unclosed parens": "\\(" * 10_000,
    "minus parens": "-(" * 10_000,
    "long sum": "What is " + "1+" * 10_000 + "1?",
    "many segments": "$1+1$ " * 3000,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_outputs_are_verified_quickly(fast_path_only: None, name: str) -> None:
    text = ADVERSARIAL[name]
    for fallback in (False, True):
        for gold in ("5", "\\frac{1}{2}", "2, 3", "x < 1", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"):
            r = _bounded(
                lambda g=gold, f=fallback: verify(text, g, last_number_fallback=f, problem="What is $2+3$?"),
                f"verify({_show(text)}, {gold!r}, fallback={fallback})",
                limit_s=CALL_LIMIT_S,
            )
            assert isinstance(r.status, Status)


@pytest.mark.parametrize("name", sorted(HOSTILE_PROBLEMS))
def test_hostile_problem_texts_are_bounded(fast_path_only: None, name: str) -> None:
    problem = HOSTILE_PROBLEMS[name]
    problem_pieces.cache_clear()
    r = _bounded(
        lambda: verify("\\boxed{1+1}", "2", problem=problem), f"problem {_show(problem)}", limit_s=CALL_LIMIT_S
    )
    assert r.status in (Status.CORRECT, Status.INCORRECT)


def test_expected_verdicts_on_the_adversarial_inputs(fast_path_only: None) -> None:
    # Hand-worked: too long to grade, or the value the text really gives.
    assert verify(ADVERSARIAL["boxed long digits"], "9").status is Status.UNPARSEABLE_PREDICTION
    assert verify(ADVERSARIAL["boxed 450 digits"], "9" * 450).status is Status.CORRECT
    assert verify(ADVERSARIAL["20k boxes side by side"], "1").status is Status.CORRECT  # one answer, boxed again
    many = "".join(f"\\boxed{{{i}}}" for i in range(3000))
    assert verify(many, "1").status is Status.UNPARSEABLE_PREDICTION  # 3,000 answers side by side: too long
    assert verify(ADVERSARIAL["20k corrected boxes"], "1").status is Status.CORRECT  # the last box
    assert verify(ADVERSARIAL["final answer sentence"], "5").status is Status.CORRECT
    assert verify(ADVERSARIAL["linear relation"], "x < \\frac{1}{200}").status is Status.CORRECT
    assert verify(ADVERSARIAL["number words then units"], "5").status is not Status.CORRECT
    assert verify(ADVERSARIAL["fractions for the fallback"], "1", last_number_fallback=True).status is Status.CORRECT
    assert verify(ADVERSARIAL["words after a number"], "5").status is Status.UNPARSEABLE_PREDICTION  # prose, no marker


def _seconds(call) -> float:
    problem_pieces.cache_clear()  # time the scan, not the cache
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("final_boxed", lambda n: final_boxed("\\boxed{1} and " * n)),
        ("corrected boxes", lambda n: final_boxed("\\boxed{1} wait " * n)),
        ("fallback", lambda n: extract_answers("1 1/" * n, last_number_fallback=True)),
        ("sentence", lambda n: extract_answers("Final Answer: " + "it is " * n + "5")),
        ("normalize", lambda n: normalize_answer("one " * n)),
        # Up to 20,000 characters (``MAX_PROBLEM_CHARS``; the rest of a problem is not read).
        ("problem pieces", lambda n: problem_pieces("-($1+1$ " * (n // 8))),
    ],
)
def test_scanners_grow_linearly(name: str, make) -> None:
    small = min(_seconds(lambda: make(2_500)) for _ in range(3))
    large = min(_seconds(lambda: make(20_000)) for _ in range(3))
    # 8x the input: a linear scan takes about 8x (quadratic: 64x); 24x leaves room for noise.
    assert large < max(24 * small, 0.05), f"{name}: {small:.4f}s -> {large:.4f}s"


class _SlowPool:
    """A pool whose every job runs past its time limit."""

    def run(self, jobs, *, timeout_s, workers=1):
        return [{"status": "timeout", "reason": f"over {timeout_s:g}s"} for _ in jobs]


def test_a_timeout_is_not_incorrect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_module, "default_pool", lambda: _SlowPool())
    # sqrt(2)+sqrt(3) against sqrt(5+2 sqrt 6) needs sympy: the (simulated) worker runs out of time.
    r = verify("\\boxed{\\sqrt{2}+\\sqrt{3}}", "\\sqrt{5+2\\sqrt{6}}", timeout_s=0.5)
    assert r.status is Status.TIMEOUT and r.reward == 0.0 and "not graded" in r.reason
    (v,) = math_verdicts(["\\boxed{\\sqrt{2}+\\sqrt{3}}"], ["\\sqrt{5+2\\sqrt{6}}"], 0.5, 1)
    assert v.status == "timeout" and "timeout" in UNSCORED and v.reward is None  # unscored, not a 0
