"""Plots: the data drawn equals the metrics it stands for, and the PNGs are real images of the stated size."""

import math
import struct

import polars as pl
import pytest

from restem_pipeline.evaluation import plots
from restem_pipeline.evaluation.evaluate import EvalConfig, summarize
from restem_pipeline.evaluation.metrics import pass_at_k

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _samples(spec: dict[str, list[float | None]], split: str = "test", kind: str = "sample") -> pl.DataFrame:
    rows = [
        {"problem_id": pid, "split": split, "level": 1 + i % 2, "kind": kind, "sample_index": j, "reward": r}
        for i, (pid, rewards) in enumerate(spec.items())
        for j, r in enumerate(rewards)
    ]
    return pl.DataFrame(
        rows,
        schema={
            **dict.fromkeys(("problem_id", "split", "kind"), pl.String),
            "level": pl.Int64,
            "sample_index": pl.Int64,
            "reward": pl.Float64,
        },
    )


HAND_MADE = {
    "p1": [1.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # 2 of 6 correct
    "p2": [0.0] * 6,  # none
    "p3": [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],  # 5 of 6
    "p4": [None, 1.0, 0.0, 0.0, 0.0, 0.0],  # an unscored sample is left out: 1 of 5 scored
}


def test_pass_at_k_curve_is_the_mean_unbiased_estimator():
    samples = pl.concat(
        [
            _samples(HAND_MADE),
            _samples({"p1": [0.0], "p2": [1.0]}, kind="greedy"),  # greedy rows are not samples
            _samples({"v1": [1.0] * 6}, split="validation"),  # another split is left out
        ]
    )
    curve = plots.pass_at_k_curve(samples)
    assert list(curve) == [1, 2, 3, 4, 5, 6]
    for k, value in curve.items():
        p4 = [pass_at_k(5, 1, k)] if k <= 5 else []  # p4 has 5 scored samples: left out of pass@6
        expected = (pass_at_k(6, 2, k) + pass_at_k(6, 0, k) + pass_at_k(6, 5, k) + sum(p4)) / (3 + len(p4))
        assert value == pytest.approx(expected, abs=1e-12)
    assert curve[1] == pytest.approx((2 / 6 + 0 + 5 / 6 + 1 / 5) / 4)
    assert curve[6] == pytest.approx((1 + 0 + 1) / 3)
    assert curve[2] == pytest.approx((1 - math.comb(4, 2) / 15 + 0 + 1 + 1 - math.comb(4, 2) / math.comb(5, 2)) / 4)


def test_pass_at_k_curve_matches_the_evaluation_summary():
    samples = _samples(HAND_MADE).with_columns(
        pl.lit("").alias("completion"), pl.lit("x").alias("status"), pl.lit(None, pl.String).alias("answer")
    )
    summary = (
        summarize(samples, EvalConfig(k=6))
        .filter(pl.col("split") == "test", pl.col("level") == "all")
        .row(0, named=True)
    )
    curve = plots.pass_at_k_curve(samples)
    for k in EvalConfig(k=6).ks:  # 1, 2, 4, 6
        assert curve[k] == pytest.approx(summary[f"pass@{k}"], abs=1e-12)


def test_curve_stops_at_the_fewest_samples_and_is_empty_without_samples():
    assert list(plots.pass_at_k_curve(_samples({"a": [1.0, 0.0, 1.0], "b": [0.0, 0.0]}))) == [1, 2]
    assert plots.pass_at_k_curve(_samples({"a": [1.0]}, kind="greedy")) == {}


def test_pass_at_k_figure_draws_the_curves():
    curves = {"base": plots.pass_at_k_curve(_samples(HAND_MADE)), "iter 1": {1: 0.5, 2: 0.75}}
    fig = plots.pass_at_k_figure(curves)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["base", "iter 1"]
    assert list(lines[0].get_xdata()) == [1, 2, 3, 4, 5, 6]
    assert list(lines[0].get_ydata()) == pytest.approx(list(curves["base"].values()))
    assert list(lines[1].get_ydata()) == [0.5, 0.75]
    data = plots.png_bytes(fig)
    assert _png_size(data) == (plots.PANEL[0] * plots.DPI, plots.PANEL[1] * plots.DPI)


SUMMARY_ROWS = [
    {"split": "test", "level": "1", "pass@1_greedy": 0.8},
    {"split": "test", "level": "10", "pass@1_greedy": 0.1},
    {"split": "test", "level": "2", "pass@1_greedy": 0.5},
    {"split": "test", "level": "all", "pass@1_greedy": 0.45},
    {"split": "train", "level": "1", "pass@1_greedy": 0.9},
]


def test_level_accuracy_orders_levels_numerically_and_leaves_out_all():
    assert plots.level_accuracy(SUMMARY_ROWS) == {"1": 0.8, "2": 0.5, "10": 0.1}
    assert plots.level_accuracy(SUMMARY_ROWS, "train") == {"1": 0.9}
    assert plots.level_accuracy(SUMMARY_ROWS, "validation") == {}


def test_level_figure_bars_are_the_accuracies():
    levels = {"base": {"1": 0.8, "2": 0.5}, "iter 1": {"1": 0.9, "2": 0.6}}
    fig = plots.level_figure(levels)
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == pytest.approx([0.8, 0.5, 0.9, 0.6])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["level 1", "level 2"]
    assert _png_size(plots.png_bytes(fig)) == (480, 320)


def test_split_accuracy_and_figure_across_models():
    metrics = {"train/pass@1": 0.7, "validation/pass@1": float("nan"), "test/pass@1": 0.4, "test/maj@8": 0.3}
    assert plots.split_accuracy(metrics) == {"train": 0.7, "test": 0.4}
    splits = {"base": {"train": 0.5, "validation": 0.4, "test": 0.3}, "iter 1": {"train": 0.7, "test": 0.4}}
    ax = plots.splits_figure(splits).axes[0]
    by_label = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()}
    assert by_label == {"train": ([0, 1], [0.5, 0.7]), "validation": ([0], [0.4]), "test": ([0, 1], [0.3, 0.4])}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["base", "iter 1"]


def test_summary_figure_has_three_panels_and_empty_data_still_renders():
    fig = plots.summary_figure({}, {}, {})
    assert len(fig.axes) == 3
    assert all("no data" in [t.get_text() for t in ax.texts] for ax in fig.axes)
    assert _png_size(plots.png_bytes(fig)) == (3 * 480, 320)


def test_stage_labels():
    assert [plots.stage_label(s) for s in ("base", "sft", "iter_12")] == ["base", "SFT", "iter 12"]


def test_write_bytes_atomic_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "reports" / "x.png"
    plots.write_bytes_atomic(b"first", path)
    plots.write_bytes_atomic(PNG_SIGNATURE, path)
    assert path.read_bytes() == PNG_SIGNATURE
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]
