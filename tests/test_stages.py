"""Stage functions on small frames: stable ids, verification statuses, the cap and what it drops."""

import polars as pl
import pytest

from restem_pipeline import stages
from restem_pipeline.data.schema import Problem

PROBLEMS = [
    Problem("p1", "math", "1+1?", "t", answer="2", level=1),
    Problem("p2", "math", "2+2?", "t", answer="4", level=1),
    Problem("p3", "math", "3+3?", "t", answer="6", level=2),
]


def _raw(rows):
    data = [
        {
            "sample_id": stages.sample_id("s", "iter_1", pid, j),
            "problem_id": pid,
            "sample_index": j,
            "level": 1,
            "completion": text,
            "num_tokens": 5,
            "finished": True,
            "model": "m",
            "seed": 0,
        }
        for j, (pid, text) in enumerate(rows)
    ]
    return pl.DataFrame(data, schema=stages.RAW_SCHEMA)


def test_sample_ids_are_stable_and_distinct():
    a = stages.sample_id("arith", "iter_1", "p1", 0)
    assert a == stages.sample_id("arith", "iter_1", "p1", 0)
    assert (
        len(
            {
                a,
                stages.sample_id("arith", "iter_2", "p1", 0),
                stages.sample_id("arith", "iter_1", "p1", 1),
                stages.sample_id("other", "iter_1", "p1", 0),
            }
        )
        == 4
    )


def test_verify_samples_statuses_and_rewards():
    raw = _raw([("p1", " 1 + 1 = 2. \\boxed{2}"), ("p1", " \\boxed{3}"), ("p2", " no answer"), ("p3", "\\boxed{6}")])
    ver = stages.verify_samples(raw, PROBLEMS)
    assert ver["status"].to_list() == ["correct", "incorrect", "unparseable_prediction", "correct"]
    assert ver["reward"].to_list() == [1.0, 0.0, 0.0, 1.0]
    assert ver["answer"].to_list()[:2] == ["2", "3"]
    assert len(ver) == len(raw)


def test_verify_samples_rejects_unknown_problem():
    with pytest.raises(ValueError, match="unknown problems"):
        stages.verify_samples(_raw([("zz", "\\boxed{1}")]), PROBLEMS)


def test_cap_keeps_correct_only_at_most_cap_per_problem_seeded():
    rows = (
        [("p1", "\\boxed{2}")] * 15 + [("p1", "\\boxed{5}")] * 3 + [("p2", "\\boxed{4}")] * 2 + [("p3", " no answer")]
    )
    ver = stages.verify_samples(_raw(rows), PROBLEMS)
    kept, dropped = stages.cap_samples(ver, cap=10, seed=0)
    counts = dict(kept.group_by("problem_id").len().iter_rows())
    assert counts == {"p1": 10, "p2": 2}
    assert (kept["reward"] == 1.0).all()
    assert len(kept) + len(dropped) == len(ver)
    assert dict(dropped.group_by("drop_reason").len().sort("drop_reason").iter_rows()) == {
        "incorrect": 3,
        "over_cap": 5,
        "unparseable_prediction": 1,
    }
    again, _ = stages.cap_samples(ver, cap=10, seed=0)
    other, _ = stages.cap_samples(ver, cap=10, seed=1)
    assert again["sample_id"].to_list() == kept["sample_id"].to_list()
    assert set(other["sample_id"]) != set(kept["sample_id"])


def test_unscored_samples_are_never_kept():
    ver = stages.verify_samples(_raw([("p1", "\\boxed{2}"), ("p2", "\\boxed{4}")]), PROBLEMS)
    ver = ver.with_columns(pl.Series("status", ["timeout", "correct"]), pl.Series("reward", [None, 1.0]))
    kept, dropped = stages.cap_samples(ver, cap=10, seed=0)
    assert kept["problem_id"].to_list() == ["p2"]
    assert dropped["drop_reason"].to_list() == ["timeout"]


def test_cap_must_be_positive():
    with pytest.raises(ValueError, match="cap must be >= 1, got 0"):
        stages.cap_samples(pl.DataFrame(), cap=0, seed=0)


def test_human_solution_rows_only_train_with_solutions():
    ps = [
        Problem("a", "math", "q", "t", split="train", answer="1", solution="s"),
        Problem("b", "math", "q", "t", split="test", answer="1", solution="s"),
        Problem("c", "math", "q", "t", split="train", answer="1"),
    ]
    assert stages.human_solution_rows(ps)["problem_id"].to_list() == ["a"]
