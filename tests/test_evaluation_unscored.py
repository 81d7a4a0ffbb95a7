"""Evaluation leaves unscored verdicts out of every metric (issue 12 item 3); values worked by hand."""

import math

import polars as pl
import pytest

from restem_pipeline.evaluation.evaluate import EvalConfig, headline, summarize


def _rows(pid, kind, rewards, answers=None, split="test"):
    answers = answers or [None] * len(rewards)
    return [
        {"problem_id": pid, "split": split, "level": 1, "kind": kind, "sample_index": i, "completion": "",
         "status": "infra_error" if r is None else ("correct" if r == 1.0 else "incorrect"),
         "reward": r, "answer": a}
        for i, (r, a) in enumerate(zip(rewards, answers, strict=True))
    ]  # fmt: skip


def _frame(rows):
    schema = {"problem_id": pl.String, "split": pl.String, "level": pl.Int64, "kind": pl.String,
              "sample_index": pl.Int64, "completion": pl.String, "status": pl.String, "reward": pl.Float64,
              "answer": pl.String}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def test_an_outage_is_not_a_wrong_answer():
    cfg = EvalConfig(k=4)
    rows = (
        _rows("a", "greedy", [1.0])
        + _rows("a", "sample", [1.0, 0.0, 1.0, 0.0], ["7", "3", "7", "5"])
        + _rows("b", "greedy", [0.0])
        + _rows("b", "sample", [0.0, 0.0, 0.0, 1.0], ["2", "2", "9", "4"])
        # c: the verifier was down for every verdict: left out, not counted as 0
        + _rows("c", "greedy", [None])
        + _rows("c", "sample", [None, None, None, None])
        # d: one sample unscored: pass@k over its 3 scored samples, pass@4 left out for d
        + _rows("d", "greedy", [1.0])
        + _rows("d", "sample", [None, 1.0, 0.0, 0.0], [None, "6", "1", "1"])
    )
    m = headline(summarize(_frame(rows), cfg), cfg)
    assert m["test/pass@1"] == pytest.approx(2 / 3)  # a and d right, b wrong, c unscored (was 2/4)
    assert m["test/scored_problems"] == 3 and m["test/unscored"] == 1 + 4 + 1
    # pass@1 sampled: a 2/4, b 1/4, d 1/3 (c left out)
    assert m["test/pass@1_sampled"] == pytest.approx((0.5 + 0.25 + 1 / 3) / 3)
    # pass@2: a 1 - C(2,2)/C(4,2) = 5/6, b 1 - C(3,2)/C(4,2) = 1/2, d 1 - C(2,2)/C(3,2) = 2/3
    assert m["test/pass@2_sampled"] == pytest.approx((5 / 6 + 1 / 2 + 2 / 3) / 3)
    assert m["test/pass@4_sampled"] == pytest.approx((1 + 1) / 2)  # d has 3 scored samples: left out
    # maj@4: a "7" right; b "2" wrong; d over scored answers "6","1","1": "1" wrong; c left out
    assert m["test/maj@4"] == pytest.approx(1 / 3)


def test_all_unscored_gives_no_number_rather_than_zero():
    cfg = EvalConfig(k=2)
    rows = _rows("c", "greedy", [None]) + _rows("c", "sample", [None, None])
    m = headline(summarize(_frame(rows), cfg), cfg)
    assert math.isnan(m["test/pass@1"]) and m["test/unscored"] == 3 and m["test/scored_problems"] == 0
    assert math.isnan(m.get("test/pass@2_sampled", math.nan))
