"""ReST vs ReST-EM is an experiment's ``init_from``: the checkpoints of ``init_from: previous`` fine-tune
checkpoint t-1. One real in-process Dagster run materializes two ReST checkpoints on a tiny base, with a
held-out validation loss (the lineage itself: tests/test_definitions.py).
"""

import math

import dagster as dg
import pytest

from assets.definitions import build_definitions
from resources import ExperimentResource, StorageResource, TrainerResource
from restem_pipeline.experiments import Experiment
from restem_pipeline.stages import human_solution_rows, problems_frame, weight_change
from restem_pipeline.storage import tables as storage


def _parents(defs: dg.Definitions) -> dict[str, set[str]]:
    g = defs.resolve_asset_graph()
    return {k.to_user_string(): {p.to_user_string() for p in g.get(k).parent_keys} for k in g.get_all_asset_keys()}


@pytest.mark.slow
def test_rest_checkpoints_fine_tune_the_previous_one(tmp_path, tiny_base, tiny_problems):
    root = storage.DataRoot(tmp_path)
    root.write_table(problems_frame(tiny_problems), "problems", "tiny", "ingest")
    rows = human_solution_rows(tiny_problems)
    for t in (1, 2):
        root.of("rest").write_table(rows, "training_set", "tiny", f"iter_{t}")
    defs = build_definitions(
        [Experiment("rest", iterations=2, init_from="previous")],
        resources={
            "storage": StorageResource(data_root=str(tmp_path)),
            "experiment": ExperimentResource(base_model=str(tiny_base), seed=0),
            "trainer": TrainerResource(
                max_steps=6, batch_size=8, learning_rate=2e-3, validation_fraction=0.2, eval_every=3
            ),
        },
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("problem_set", ["tiny"])
    keys = [dg.AssetKey(["rest", "iter_1", "checkpoint"]), dg.AssetKey(["rest", "iter_2", "checkpoint"])]
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, partition_key="tiny", asset_selection=keys)
    assert result.success
    meta = {
        m.asset_key.to_user_string(): {k: v.value for k, v in m.materialization.metadata.items()}
        for m in result.get_asset_materialization_events()
    }
    iter_1, iter_2 = root.of("rest").model_dir("tiny", "iter_1"), root.of("rest").model_dir("tiny", "iter_2")
    assert meta["rest/iter_1/checkpoint"]["init_from"] == str(tiny_base)  # t = 1: the previous model is the base
    assert meta["rest/iter_2/checkpoint"]["init_from"] == str(iter_1)
    assert {m["init_mode"] for m in meta.values()} == {"previous"}
    # iteration 2 continued from checkpoint 1: it is closer to it than to the base
    assert 0 < weight_change(iter_1, iter_2) < weight_change(tiny_base, iter_2)
    for m in meta.values():
        assert [step for step, _ in m["val_loss_history"]] == [3, 6]
        assert math.isfinite(m["val_loss"]) and m["val_loss"] == m["val_loss_history"][-1][1]
        assert m["packing"] is True and m["tokens_per_s"] > 0
