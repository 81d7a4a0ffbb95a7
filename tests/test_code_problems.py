"""Code problem-set loaders (APPS folder + HF rows, HumanEval(+), MBPP(+)) and the embedded code task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from restem_pipeline.data import code_problems as cp
from restem_pipeline.data.code_tasks import embedded_code_problems
from restem_pipeline.data.schema import ProblemFormatError
from restem_pipeline.rewards.sandbox import parse_tests

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
FIXTURE = Path(__file__).parent / "fixtures" / "apps_hf_rows.jsonl"


def test_apps_folder():
    ps = {p.id: p for p in cp.load_apps_folder(DATA / "apps" / "original_layout")}
    assert sorted(ps) == ["apps/0001", "apps/0111", "apps/2287", "apps/2404", "apps/4184"]
    p = ps["apps/2404"]
    assert p.entry_point == "findKthPositive" and p.level == 1 and p.domain == "code"
    assert "Use Call-Based format" in p.prompt and p.prompt.rstrip().endswith("ANSWER:")
    assert [c.mode for c in parse_tests(p.tests)] == ["call"]
    stdin = ps["apps/2287"]
    assert stdin.level == 3 and stdin.entry_point is None and "Use Standard Input format" in stdin.prompt
    assert len(parse_tests(stdin.tests)) == 3 and stdin.solution


def test_apps_hf_rows_fixture():
    ps = cp.load_apps_jsonl(FIXTURE)
    # 9005 has no tests and is skipped
    assert [p.id for p in ps] == ["apps/9001", "apps/9002", "apps/9003", "apps/9004", "apps/9006"]
    by_id = {p.id: p for p in ps}
    assert by_id["apps/9004"].level == 3 and "class Solution" in by_id["apps/9004"].prompt  # starter code
    assert by_id["apps/9003"].entry_point == "count_vowels"
    assert json.loads(by_id["apps/9001"].tests)["outputs"] == ["3\n", "0\n", "123\n"]


def test_apps_bad_rows_name_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = FIXTURE.read_text().splitlines()[0]
    row = json.loads(good)
    row["input_output"] = "{not json"
    bad.write_text(good + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ProblemFormatError) as e:
        cp.load_apps_jsonl(bad)
    assert e.value.record == 2 and e.value.field == "input_output" and str(bad) in str(e.value)
    del row["question"]
    row["input_output"] = json.loads(good)["input_output"]
    bad.write_text(json.dumps(row) + "\n")
    with pytest.raises(ProblemFormatError, match="question"):
        cp.load_apps_jsonl(bad)


def test_humaneval_and_plus():
    he = cp.load_humaneval(DATA / "humaneval" / "HumanEval.jsonl.gz")
    assert len(he) == 164 and all(p.split == "test" for p in he)
    spec = json.loads(he[0].tests)
    assert spec["entry_point"] == "has_close_elements" and "def check(candidate)" in spec["test_code"]
    assert he[0].solution.startswith(he[0].prompt)
    plus = cp.load_humanevalplus(DATA / "humanevalplus" / "HumanEvalPlus.jsonl.gz")
    assert len(plus) == 164
    code = json.loads(plus[0].tests)["test_code"]
    assert "def check(candidate)" in code and "_R_INPUTS" in code and len(code) > len(spec["test_code"])


def test_mbpp_full_sanitized_and_plus():
    full = cp.load_mbpp(DATA / "mbpp" / "mbpp.jsonl")
    assert len(full) == 974
    splits = {s: sum(p.split == s for p in full) for s in ("train", "validation", "test")}
    assert splits == {"train": 384, "validation": 90, "test": 500}
    p = next(p for p in full if p.id == "mbpp/912")
    assert p.entry_point == "lobb_num"  # not the `int(...)` wrapped around it
    assert "Your code should pass these tests:" in p.prompt
    tree = next(p for p in full if p.id == "mbpp/927")  # test_setup_code builds the trees the asserts use
    assert json.loads(tree.tests)["setup_code"].startswith("root = Node(1)")  # trusted: runs in the checker
    assert tree.entry_point == "max_height"
    san = cp.load_mbpp(DATA / "mbpp" / "sanitized-mbpp.json")
    assert len(san) == 427 and all(p.entry_point for p in san)
    plus = cp.load_mbppplus(DATA / "mbppplus" / "MbppPlus.jsonl.gz")
    assert len(plus) == 378
    m2 = next(p for p in plus if p.id == "Mbpp/2")
    assert "_R_KIND = 'args'" in json.loads(m2.tests)["test_code"]  # tuples rebuilt as evalplus does


@pytest.mark.parametrize(
    ("names", "entry"),
    [
        (["assert f(1) == 2"], "f"),
        (["assert set(similar(1, 2)) == set((4, 5))"], "similar"),
        (["assert math.isclose(area(2), 12.5, rel_tol=0.001)"], "area"),
        (["assert not is_ok(3)"], "is_ok"),
    ],
)
def test_mbpp_entry_point(names, entry):
    assert cp.mbpp_entry_point(names) == entry


def test_embedded_code_task_is_deterministic():
    a = embedded_code_problems(seed=7, n=30)
    assert a == embedded_code_problems(seed=7, n=30)
    assert a != embedded_code_problems(seed=8, n=30)
    assert {p.split for p in a} == {"train", "validation", "test"}
    assert all(p.solution and p.domain == "code" and len(parse_tests(p.tests)) == 5 for p in a)
    with pytest.raises(ValueError, match="n="):
        embedded_code_problems(n=0)


@pytest.mark.docker
def test_fixture_rows_solutions_pass_in_sandbox():
    from restem_pipeline.rewards.sandbox import run_programs

    ps = cp.load_apps_jsonl(FIXTURE)
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    sols = {f"apps/{r['problem_id']}": json.loads(r["solutions"]) for r in rows if r["solutions"]}
    progs = [s for p in ps for s in sols[p.id]]
    tests = [p.tests for p in ps for _ in sols[p.id]]
    assert [r.status for r in run_programs(progs, tests)] == ["pass"] * len(progs)
