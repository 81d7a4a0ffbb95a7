"""Tests per second: restem's Docker sandbox vs a raw ``python3`` subprocess per test vs ``docker run``.

Same programs for all three (the embedded generated stdin/stdout task's reference solutions, every
test must pass), at 1 and 2 workers:

* ``restem``: :class:`SandboxPool` (warm containers, one forked child per test); pool start-up is
  timed separately and excluded from the rate (the pipeline keeps pools warm across batches).
* ``subprocess``: ``python3 -c PROGRAM`` per test on the host, no isolation: the practical limit
  of per-test process start-up.
* ``docker run``: ``docker run --rm -i`` per test with the same isolation flags as the sandbox.

Run: ``python benchmarks/bench_sandbox.py [--quick]``. Prints a table; the LAST line is one JSON
object with the figures (rates and ratios). Needs the engine and ``restem sandbox build``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from restem_pipeline.data.code_tasks import embedded_code_problems
from restem_pipeline.rewards.sandbox import SandboxPool, parse_tests, stdout_matches
from restem_pipeline.rewards.sandbox.image import image_ref

DOCKER_FLAGS = [
    "--network",
    "none",
    "--read-only",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--user",
    "65534:65534",
    "--pids-limit",
    "64",
    "--memory",
    "672m",
    "--tmpfs",
    "/tmp:size=64m",
    "--log-driver",
    "none",
]


def _jobs(problems) -> list[tuple[str, str, str]]:
    return [(p.solution, c.stdin, c.expected) for p in problems for c in parse_tests(p.tests)]


def _rate(fn, jobs, workers: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        ok = sum(ex.map(fn, jobs))
    return len(jobs) / (time.perf_counter() - t0), ok


def _subprocess_one(job) -> bool:
    prog, stdin, want = job
    out = subprocess.run([sys.executable, "-I", "-c", prog], input=stdin, capture_output=True, text=True, timeout=30)
    return stdout_matches(out.stdout, want)


def _docker_run_one(job, image: str) -> bool:
    prog, stdin, want = job
    out = subprocess.run(
        ["docker", "run", "--rm", "-i", *DOCKER_FLAGS, image, "python3", "-I", "-c", prog],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return stdout_matches(out.stdout, want)


def _restem(problems, workers: int) -> tuple[float, int, float]:
    t0 = time.perf_counter()
    with SandboxPool(workers=workers) as pool:
        startup = time.perf_counter() - t0
        pool.run_programs([problems[0].solution], [problems[0].tests])  # warm the path once
        t1 = time.perf_counter()
        res = pool.run_programs([p.solution for p in problems], [p.tests for p in problems], timeout_s=10)
        elapsed = time.perf_counter() - t1
    n_tests = sum(len(r.tests) for r in res)
    return n_tests / elapsed, sum(r.tests.count("pass") for r in res), startup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer programs (CI smoke run)")
    args = ap.parse_args()
    n_problems, n_docker_run = (16, 24) if args.quick else (80, 80)
    problems = embedded_code_problems(seed=0, n=n_problems)
    jobs = _jobs(problems)
    image = image_ref()
    rows, figures = (
        [],
        {"tests": len(jobs), "quick": args.quick, "machine": platform.machine(), "python": platform.python_version()},
    )
    for workers in (1, 2):
        r_rate, r_ok, startup = _restem(problems, workers)
        s_rate, s_ok = _rate(_subprocess_one, jobs, workers)
        d_jobs = jobs[:n_docker_run]
        d_rate, d_ok = _rate(lambda j: _docker_run_one(j, image), d_jobs, workers)
        for name, rate, ok, n in (
            ("restem docker sandbox", r_rate, r_ok, len(jobs)),
            ("raw python3 subprocess", s_rate, s_ok, len(jobs)),
            ("docker run per test", d_rate, d_ok, len(d_jobs)),
        ):
            if ok != n:
                raise SystemExit(f"{name} at {workers} workers: only {ok}/{n} tests passed")
            rows.append((name, workers, n, rate))
        figures[f"w{workers}"] = {
            "restem_tests_per_s": round(r_rate, 1),
            "subprocess_tests_per_s": round(s_rate, 1),
            "docker_run_tests_per_s": round(d_rate, 1),
            "restem_pool_startup_s": round(startup, 2),
            "ratio_vs_subprocess": round(r_rate / s_rate, 2),
            "ratio_vs_docker_run": round(r_rate / d_rate, 1),
        }
    print(f"{'method':26} {'workers':>7} {'tests':>6} {'tests/s':>9}")
    for name, workers, n, rate in rows:
        print(f"{name:26} {workers:>7} {n:>6} {rate:>9.1f}")
    ratios = [figures[w]["ratio_vs_subprocess"] for w in ("w1", "w2")]
    figures["goal_met"] = min(ratios) >= 1.0
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
