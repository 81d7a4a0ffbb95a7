"""The verifier on the real data sets in ../shared/data (MATH, MATH-500, GSM8K)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from restem_pipeline.rewards.mathverify import InvalidGoldError, Status, parse_gold, verify_batch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA / "math" / "test.jsonl").exists(), reason=f"no data sets at {DATA}"),
]

# MATH train solutions whose box is empty ("there are $\boxed{}$ primes"): a data error upstream.
KNOWN_INVALID_MATH = {"train/number_theory/7115.json", "train/number_theory/7117.json"}


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def math_rows() -> list[dict]:
    return _rows(DATA / "math" / "train.jsonl") + _rows(DATA / "math" / "test.jsonl")


def test_every_math_gold_parses_except_known_empty_boxes(math_rows: list[dict]) -> None:
    invalid = set()
    for row in math_rows:
        try:
            parse_gold(row["solution"], "math_solution")
        except InvalidGoldError:
            invalid.add(row["unique_id"])
    assert len(math_rows) == 12_500
    assert invalid == KNOWN_INVALID_MATH, f"MATH golds that do not parse: {sorted(invalid)}"


def test_every_math_answer_verifies_against_its_own_solution(math_rows: list[dict]) -> None:
    rows = [r for r in math_rows if r["unique_id"] not in KNOWN_INVALID_MATH]
    answers = [parse_gold(r["solution"], "math_solution") for r in rows]
    results = verify_batch(
        answers,
        [r["solution"] for r in rows],
        gold_format="math_solution",
        workers=2,
        problems=[r["problem"] for r in rows],
    )
    failed = [
        (r["unique_id"], a, x.status) for r, a, x in zip(rows, answers, results, strict=True) if x.status != "correct"
    ]
    assert failed == []
    invalid = verify_batch(
        ["0"],
        [next(r for r in math_rows if r["unique_id"] in KNOWN_INVALID_MATH)["solution"]],
        gold_format="math_solution",
    )
    assert invalid[0].status is Status.INVALID_GOLD and invalid[0].reward == 0.0


def test_math500_answers_match_math_solutions() -> None:
    by_id = {r["unique_id"]: r for r in _rows(DATA / "math" / "test.jsonl")}
    m500 = _rows(DATA / "math500" / "test.jsonl")
    assert len(m500) == 500
    solutions = [by_id[r["unique_id"]]["solution"] for r in m500]
    # With the problems' texts: no reference solution is taken for a restatement of its problem.
    results = verify_batch(solutions, [r["answer"] for r in m500], workers=2, problems=[r["problem"] for r in m500])
    mismatched = [
        (r["unique_id"], x.predicted, x.gold, x.status)
        for r, x in zip(m500, results, strict=True)
        if x.status != "correct"
    ]
    assert mismatched == []


def test_every_gsm8k_gold_parses_to_a_number() -> None:
    rows = _rows(DATA / "gsm8k" / "train.jsonl") + _rows(DATA / "gsm8k" / "test.jsonl")
    assert len(rows) == 7_473 + 1_319
    golds = [parse_gold(r["answer"], "gsm8k") for r in rows]
    # The last line's number verifies against the whole annotated answer.
    results = verify_batch([f"\\boxed{{{g}}}" for g in golds], [r["answer"] for r in rows], gold_format="gsm8k")
    assert [r.status for r in results] == [Status.CORRECT] * len(rows)
