"""The Docker sandbox on real data: reference solutions pass, mutations fail, infra errors surface.

Runs against the real local engine and the image from ``restem sandbox build`` (CI runs
``scripts/setup_docker.sh`` and the build first). Data: ``../shared/data`` (read-only).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import docker
import pytest

from restem_pipeline.data import code_problems as cp
from restem_pipeline.data.code_tasks import embedded_code_problems
from restem_pipeline.rewards.sandbox import SandboxPool, run_programs
from restem_pipeline.rewards.sandbox.workers import LABEL

pytestmark = pytest.mark.docker
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
IO = json.dumps({"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]})
ADD = "a, b = map(int, input().split())\nprint(a + b)\n"


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2) as p:
        yield p


def _statuses(results):
    return [r.status for r in results]


def test_semantics_per_format(pool):
    call = json.dumps({"fn_name": "f", "inputs": [[1, 2], [[3], 4]], "outputs": [[3], [[3, 4]]]})
    he = json.dumps({"test_code": "def check(candidate):\n    assert candidate(2) == 4\n", "entry_point": "sq"})
    mbpp = json.dumps(
        {"test_code": "import math\nassert sq(3) == 9\nassert math.isclose(sq(0.5), 0.25)", "entry_point": "sq"}
    )
    progs = [
        ADD,
        "print(1)",
        "def f(a, b):\n    return a + b if isinstance(a, int) else (*a, b)\n",
        "class Solution:\n    def f(self, a, b):\n        return 3 if a == 1 else [3, 4]\n",
        "def f(a, b):\n    return '3'\n",
        "def sq(x):\n    return x * x\n",
        "def sq(x):\n    return x * x\n",
        "def sq(x):\n    return x + x\n",
        "x = 1 +\n",
    ]
    tests = [IO, IO, call, call, call, he, mbpp, mbpp, IO]
    res = pool.run_programs(progs, tests, timeout_s=5)
    assert _statuses(res) == ["pass", "fail", "pass", "pass", "fail", "pass", "pass", "fail", "runtime_error"]
    assert res[1].tests == ["fail", "fail"] and "expected" in res[1].detail
    assert res[4].tests == ["fail", "fail"]  # the string '3' never equals the number 3
    assert "SyntaxError" in res[8].detail
    assert [r.reward for r in res[:2]] == [1.0, 0.0]


def test_stop_on_fail_skips_the_rest(pool):
    spec = json.dumps({"inputs": ["1 2\n"] * 3, "outputs": ["3\n"] * 3})
    (r,) = pool.run_programs(["while True: pass"], [spec], timeout_s=1, stop_on_fail=True)
    assert r.tests == ["timeout", "skipped", "skipped"] and r.status == "timeout"


def test_every_humaneval_canonical_solution_passes(pool):
    problems = cp.load_humaneval(DATA / "humaneval" / "HumanEval.jsonl.gz")
    assert len(problems) == 164
    res = pool.run_programs([p.solution for p in problems], [p.tests for p in problems], timeout_s=20)
    failed = {p.id: r.detail for p, r in zip(problems, res, strict=True) if r.status != "pass"}
    assert failed == {}


def test_humaneval_mutated_solutions_fail(pool):
    problems = cp.load_humaneval(DATA / "humaneval" / "HumanEval.jsonl.gz")[:40]
    mutated = [p.prompt + "    return None\n" for p in problems]
    res = pool.run_programs(mutated, [p.tests for p in problems], timeout_s=20)
    assert all(r.status in ("fail", "runtime_error") for r in res), _statuses(res)


def test_every_mbpp_reference_solution_passes(pool):
    problems = cp.load_mbpp(DATA / "mbpp" / "mbpp.jsonl")
    assert len(problems) == 974
    res = pool.run_programs([p.solution for p in problems], [p.tests for p in problems], timeout_s=20)
    failed = {p.id: r.detail for p, r in zip(problems, res, strict=True) if r.status != "pass"}
    assert failed == {}


def test_sanitized_mbpp_and_mutations(pool):
    problems = cp.load_mbpp(DATA / "mbpp" / "sanitized-mbpp.json")
    res = pool.run_programs([p.solution for p in problems], [p.tests for p in problems], timeout_s=20)
    assert {p.id: r.detail for p, r in zip(problems, res, strict=True) if r.status != "pass"} == {}
    sample = problems[:60]
    mutated = [f"{p.solution}\n\ndef {p.entry_point}(*args, **kwargs):\n    return None\n" for p in sample]
    res = pool.run_programs(mutated, [p.tests for p in sample], timeout_s=20)
    assert all(r.status != "pass" for r in res)


def test_apps_original_layout_solutions_pass_and_mutations_fail(pool):
    root = DATA / "apps" / "original_layout"
    problems = cp.load_apps_folder(root)
    assert len(problems) == 5
    progs, tests = [], []
    for p in problems:  # every reference solution (2287 has three with a top-level `return`)
        for sol in cp.apps_solutions(root / p.id.split("/")[1]):
            progs.append(sol)
            tests.append(p.tests)
    res = pool.run_programs(progs, tests, timeout_s=10)
    assert _statuses(res) == ["pass"] * len(progs)
    # Mutations: stdin/stdout solutions print one extra token; call-based ones return a wrong value.
    wrong_call = {
        "apps/2404": "class Solution:\n    def findKthPositive(self, arr, k):\n        return k\n",
        "apps/4184": "def is_prime(num):\n    return num > 1\n",
    }
    mutated = [wrong_call.get(p.id, p.solution + "\nprint(0)\n") for p in problems]
    res = pool.run_programs(mutated, [p.tests for p in problems], timeout_s=10)
    assert _statuses(res) == ["fail"] * 5, [r.detail for r in res]


def test_plus_sets_sample(pool):
    he = cp.load_humanevalplus(DATA / "humanevalplus" / "HumanEvalPlus.jsonl.gz")[:25]
    mb = cp.load_mbppplus(DATA / "mbppplus" / "MbppPlus.jsonl.gz")
    mb = [p for p in mb if int(p.id.split("/")[1]) in (2, 106, 124, 115, 580, 737, 750, 722, 11, 17)]
    problems = he + mb
    res = pool.run_programs([p.solution for p in problems], [p.tests for p in problems], timeout_s=30)
    assert {p.id: r.detail for p, r in zip(problems, res, strict=True) if r.status != "pass"} == {}
    # A solution right on the base inputs but wrong on a plus edge case fails.
    (r,) = pool.run_programs(
        ["def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b)))[:2]\n"], [mb[0].tests], timeout_s=30
    )
    assert r.status == "fail"


def test_embedded_code_task_reference_solutions_pass(pool):
    problems = embedded_code_problems(seed=1, n=16)
    res = pool.run_programs([p.solution for p in problems], [p.tests for p in problems])
    assert _statuses(res) == ["pass"] * 16
    res = pool.run_programs(["print(0)"] * 16, [p.tests for p in problems])
    assert all(r.status == "fail" for r in res)


def test_killed_container_is_an_infra_error_then_retried(pool):
    """The engine kills our container mid-test: retried on a fresh container, never a wrong answer."""
    client = docker.from_env()
    slow = "import time\ntime.sleep(1.5)\n" + ADD

    def kill_soon():
        time.sleep(0.5)
        for cid in pool.container_ids():
            client.api.kill(cid)

    before = set(pool.container_ids())
    threading.Thread(target=kill_soon).start()
    res = pool.run_programs([slow, slow], [IO, IO], timeout_s=5)
    assert _statuses(res) == ["pass", "pass"]
    assert not before & set(pool.container_ids())  # replaced

    with SandboxPool(workers=1, retries=0) as fragile:

        def kill_fragile():
            time.sleep(0.5)
            for cid in fragile.container_ids():
                client.api.kill(cid)

        threading.Thread(target=kill_fragile).start()
        (r,) = fragile.run_programs([slow], [IO], timeout_s=5)
        assert r.status == "infra_error" and r.reward is None and "infra_error" in r.tests
        (r,) = fragile.run_programs([ADD], [IO])  # the pool recovered
        assert r.status == "pass"


def test_unresponsive_container_has_a_time_bound():
    """A paused container answers nothing: the host deadline turns that into a retried infra error."""
    client = docker.from_env()
    with SandboxPool(workers=1, retries=1, host_slack_s=1.0) as p:
        (cid,) = p.container_ids()
        client.api.pause(cid)
        t0 = time.monotonic()
        (r,) = p.run_programs([ADD], [json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})], timeout_s=1)
        assert r.status == "pass" and time.monotonic() - t0 < 20
    assert not client.api.containers(all=True, filters={"id": cid})


def test_run_programs_one_shot_leaves_no_container():
    client = docker.from_env()

    def ours():
        return {c["Id"] for c in client.api.containers(all=True, filters={"label": f"{LABEL}=1"})}

    before = ours()  # the module pool's containers, still open
    res = run_programs([ADD], [IO], workers=2)
    assert res[0].status == "pass"
    assert ours() == before
