"""The wall-clock backstop tells a starved program (host overloaded: retried, unscored) from one that
slept or spun (a timeout), from the kernel's own accounting (/proc/<pid>/schedstat and stat)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from restem_pipeline.rewards.sandbox import checker

SPIN = [sys.executable, "-c", "while True: pass"]


def _pinned(nice: int):
    def setup() -> None:
        os.sched_setaffinity(0, {0})
        os.nice(nice)

    return setup


def test_a_starved_program_is_an_overload_not_a_timeout():
    # The program (nice 19) shares CPU 0 with two busy neighbours (nice 0): it is runnable all the
    # time but gets a sliver of the CPU, as on an overloaded host.
    program = subprocess.Popen(SPIN, preexec_fn=_pinned(19))
    hogs = [subprocess.Popen(SPIN, preexec_fn=_pinned(0)) for _ in range(2)]
    try:
        time.sleep(2.0)
        wall = 2.0
        verdict = checker.timeout_or_overload(program.pid, wall, checker.cpu_seconds(program.pid), "t")
    finally:
        for p in (program, *hogs):
            p.kill()
            p.wait()
    assert verdict["status"] == "overloaded", verdict


def test_a_sleeping_or_spinning_program_is_a_timeout():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    spinner = subprocess.Popen(SPIN, preexec_fn=_pinned(0))
    try:
        time.sleep(1.5)
        slept = checker.timeout_or_overload(sleeper.pid, 1.5, checker.cpu_seconds(sleeper.pid), "t")
        spun = checker.timeout_or_overload(spinner.pid, 1.5, checker.cpu_seconds(spinner.pid), "t")
    finally:
        for p in (sleeper, spinner):
            p.kill()
            p.wait()
    assert slept["status"] == "timeout" and spun["status"] == "timeout", (slept, spun)
    assert checker.cpu_seconds(os.getpid()) > 0  # the /proc reading is real


def test_harness_budget_is_clamped_between_the_request_and_ten_times_it():
    h = checker.Harness(2.0)
    h.budget_s = 0.5
    assert h.budget_s == 2.0
    h.budget_s = 7.0
    assert h.budget_s == 7.0
    h.budget_s = 1000.0
    assert h.budget_s == 20.0
