"""Time bounds and process use of the math verifier: timeouts from any thread, no stray processes."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from restem_pipeline.rewards.mathverify import Status, verify, verify_batch
from restem_pipeline.rewards.mathverify.workers import default_pool

# sympy cannot finish this comparison in any reasonable time: the worker must be killed.
STUCK = ("\\boxed{2^{10^{10}}}", "2")


def test_timeout_is_a_status_and_the_worker_is_replaced() -> None:
    killed = default_pool().killed
    r = verify(*STUCK, timeout_s=0.5)
    assert r.status is Status.TIMEOUT and r.reward == 0.0
    assert "not graded" in r.reason
    assert default_pool().killed == killed + 1
    # The replacement worker grades the next symbolic item.
    assert verify("\\boxed{2\\sqrt{3}}", "\\sqrt{12}").status is Status.CORRECT


def test_timeout_works_in_worker_threads() -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(verify, *STUCK, timeout_s=0.5),
            pool.submit(verify, "\\boxed{\\sqrt8}", "2\\sqrt2"),
        ]
        stuck, fine = (f.result(timeout=60) for f in futures)
    assert stuck.status is Status.TIMEOUT
    assert fine.status is Status.CORRECT


def test_batch_timeout_leaves_other_items_graded() -> None:
    preds = ["\\boxed{\\sqrt{2}/2}", STUCK[0], "\\boxed{5}", "\\boxed{(x+1)^2}"]
    golds = ["\\frac{1}{\\sqrt2}", STUCK[1], "5", "x^2+2x+2"]
    statuses = [r.status for r in verify_batch(preds, golds, timeout_s=0.5, workers=2)]
    assert statuses == [Status.CORRECT, Status.TIMEOUT, Status.CORRECT, Status.INCORRECT]


def test_parallel_batch_matches_sequential() -> None:
    preds = ["\\boxed{\\pi/2}", "\\boxed{1/3}", "\\boxed{e^{2}}", "\\boxed{x^2-1}", "\\boxed{\\sqrt{2}}"] * 4
    golds = ["\\frac{\\pi}{2}", "0.3", "e\\cdot e", "(x-1)(x+1)", "1.414"] * 4
    sequential = [verify(p, g).status for p, g in zip(preds, golds, strict=True)]
    assert [r.status for r in verify_batch(preds, golds, workers=2)] == sequential
    assert sequential[:5] == [
        Status.CORRECT,
        Status.INCORRECT,
        Status.CORRECT,
        Status.CORRECT,
        Status.INCORRECT,
    ]


def test_no_process_at_import_or_for_plain_numbers() -> None:
    code = (
        "import restem_pipeline.rewards.mathverify as mv, restem_pipeline.rewards.mathverify.workers as w, sys\n"
        "assert w._default_pool is None\n"
        "assert mv.verify('The answer is 0.5', '\\\\frac12').status == 'correct'\n"
        "r = mv.verify_batch(['#### 1,000', '\\\\boxed{(1,2]}'], ['1000', '[1,2]'])\n"
        "assert [x.status for x in r] == ['correct', 'incorrect']\n"
        "assert w._default_pool is None, 'a worker pool was started for plain numbers'\n"
        "assert 'sympy' not in sys.modules, 'the fast path imported sympy'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
