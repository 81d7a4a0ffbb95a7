"""``summary/run_summary`` over reports stored through DataRoot: table, best iteration, plots, files.

The reports are built by the evaluation's own ``summarize`` and ``headline`` from eval samples with a
known accuracy per split, and written where the eval report assets write them; the asset runs in
real Dagster. Iteration 3 is left out at first: the summary reads whichever reports exist.
"""

import base64
import json
import re

import dagster as dg
import polars as pl
import pytest

from assets.summary import best_by_validation, build_summary
from resources import StorageResource
from restem_pipeline.evaluation import plots
from restem_pipeline.evaluation.evaluate import EvalConfig, headline, summarize
from restem_pipeline.experiments import Experiment
from restem_pipeline.storage.tables import DataRoot

CFG = EvalConfig(k=4)
# stage -> greedy accuracy per split (tenths: 10 problems per split, levels 1 and 2 alternating)
ACCURACY = {
    "base": {"train": 0.5, "validation": 0.4, "test": 0.3},
    "sft": {"train": 0.3, "validation": 0.2, "test": 0.2},
    "iter_1": {"train": 0.7, "validation": 0.6, "test": 0.5},
    "iter_2": {"train": 0.8, "validation": 0.5, "test": 0.4},
}


def eval_samples(acc: dict[str, float]) -> pl.DataFrame:
    rows = []
    for split, p in acc.items():
        for i in range(10):
            base = {"problem_id": f"{split}-{i}", "split": split, "level": 1 + i % 2, "completion": "", "answer": None}
            hit = float(i < round(p * 10))
            rows.append({**base, "kind": "greedy", "sample_index": 0, "reward": hit, "status": "x"})
            if split == "test":  # i correct samples of K for problem i (capped at K)
                for j in range(CFG.k):
                    rows.append({**base, "kind": "sample", "sample_index": j, "reward": float(j < min(i, CFG.k))})
    schema = {
        "problem_id": pl.String, "split": pl.String, "level": pl.Int64, "kind": pl.String,
        "sample_index": pl.Int64, "completion": pl.String, "status": pl.String, "reward": pl.Float64,
        "answer": pl.String,
    }  # fmt: skip
    return pl.DataFrame([{**{k: None for k in schema}, **r} for r in rows], schema=schema)


def store_report(root: DataRoot, stage: str, acc: dict[str, float], with_curve: bool = True) -> dict:
    """What ``evaluation_result`` stores: the eval tables and the JSON report."""
    root = root.of("shared" if stage in ("base", "sft") else "restem")  # baselines are shared
    samples = eval_samples(acc)
    summary = summarize(samples, CFG)
    root.write_table(samples, "eval_samples", "toy", stage)
    report = {"stage": stage, "metrics": headline(summary, CFG), "summary": summary.to_dicts(), "eval_config": {"k": 4}}
    if with_curve:
        report["pass_at_k_curve"] = {str(k): v for k, v in plots.pass_at_k_curve(samples).items()}
    root.write_json(report, "toy", stage)
    return report


def materialize(root: DataRoot) -> dg.ExecuteInProcessResult:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("problem_set", ["toy"])
    return dg.materialize(
        [build_summary(Experiment("restem", iterations=3))],
        partition_key="toy",
        instance=instance,
        resources={"storage": StorageResource(data_root=str(root.root))},
        raise_on_error=False,
    )


def metadata(result) -> dict:
    (mat,) = result.get_asset_materialization_events()
    assert mat.asset_key == dg.AssetKey(["restem", "summary"])
    return {k: v.value for k, v in mat.materialization.metadata.items()}


@pytest.fixture
def stored(tmp_path):
    root = DataRoot(tmp_path)
    reports = {s: store_report(root, s, acc, with_curve=s != "sft") for s, acc in ACCURACY.items()}
    return root, reports


def test_summary_table_matches_the_stored_reports(stored):
    root, reports = stored
    result = materialize(root)
    assert result.success
    meta = metadata(result)
    doc = json.loads(root.of("restem").report_path("toy", "summary", ".json").read_text())
    table = {row["model"]: row for row in doc["table"]}
    assert list(table) == ["base", "SFT", "iter 1", "iter 2"]
    for stage, r in reports.items():
        row = table[plots.stage_label(stage)]
        assert row["test pass@1"] == pytest.approx(ACCURACY[stage]["test"])
        assert row["test pass@1"] == r["metrics"]["test/pass@1"]
        assert row["validation pass@1"] == pytest.approx(ACCURACY[stage]["validation"])
        assert row["train pass@1"] == pytest.approx(ACCURACY[stage]["train"])
        assert row["test pass@K"] == r["metrics"]["test/pass@4_sampled"]
        assert row["test maj@K"] == r["metrics"]["test/maj@4"]
        levels = plots.level_accuracy(r["summary"])
        assert (row["test L1"], row["test L2"]) == (levels["1"], levels["2"])
        assert meta[f"{plots.stage_label(stage)}/test/pass@1"] == row["test pass@1"]
    assert "| model | K | test pass@1 |" in meta["comparison"]
    # iteration 3 is not in storage: summarized without it, and said so
    assert doc["missing"] == ["iter_3"] and meta["stages_missing"] == "iter_3" and meta["stages_found"] == 4


def test_best_iteration_and_stopped_improving(stored):
    root, _ = stored
    meta = metadata(materialize(root))
    assert meta["best_iteration_by_validation"] == 1
    assert meta["best_validation/pass@1"] == pytest.approx(0.6)
    assert meta["validation_stopped_improving"] is True
    md = root.of("restem").report_path("toy", "summary", ".md").read_text()
    assert "Best iteration by validation pass@1: **1** (0.600)" in md
    assert "Not in storage yet: iter_3." in md
    # iteration 3 arrives and beats iteration 1: the summary follows the stored reports
    store_report(root, "iter_3", {"train": 0.9, "validation": 0.7, "test": 0.6})
    meta = metadata(materialize(root))
    assert meta["best_iteration_by_validation"] == 3 and meta["validation_stopped_improving"] is False
    assert meta["stages_missing"] == "none"


def test_plots_are_files_and_inline_metadata(stored):
    root, _ = stored
    meta = metadata(materialize(root))
    png = root.of("restem").report_path("toy", "summary", ".png")
    assert meta["summary_png"] == str(png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    inline = re.fullmatch(r"!\[summary\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", meta["plots"])
    assert inline and base64.b64decode(inline.group(1)) == data
    doc = json.loads(root.of("restem").report_path("toy", "summary", ".json").read_text())
    # SFT's report has no stored curve: it is computed from its eval_samples table instead
    sft_curve = plots.pass_at_k_curve(root.read_table("eval_samples", "toy", "sft"))
    assert doc["pass_at_k_curves"]["SFT"] == {str(k): pytest.approx(v) for k, v in sft_curve.items()}
    assert set(doc["pass_at_k_curves"]) == {"base", "SFT", "iter 1", "iter 2"}


def test_no_report_at_all_fails_with_a_message(tmp_path):
    result = materialize(DataRoot(tmp_path))
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "no evaluation report of 'toy'" in str(failure.event_specific_data.error.message)


def test_best_by_validation_ties_go_to_the_earliest_iteration():
    def r(v):
        return {"metrics": {"validation/pass@1": v}}

    best = best_by_validation({"base": r(0.9), "iter_1": r(0.5), "iter_2": r(0.5), "iter_3": r(float("nan"))})
    assert best == {"iteration": 1, "validation/pass@1": 0.5, "stopped_improving": True, "iterations_since_best": 1}
    assert best_by_validation({"base": r(0.9)})["iteration"] is None
    assert best_by_validation({"iter_1": r(0.2), "iter_2": r(0.4)})["stopped_improving"] is False
