"""Concurrency pools: the GPU- and sandbox-heavy assets are in their pools, and the shipped dagster.yaml
gives every pool a limit of 1 on a real instance (slots claimed while a pooled step runs, freed after)."""

import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from assets.definitions import build_definitions
from restem_pipeline.experiments import Experiment

REPO = Path(__file__).resolve().parents[1]
GPU = {
    "base_model",
    "baselines/base_eval_report",
    "baselines/sft_baseline",
    "baselines/sft_eval_report",
    *(f"restem/iter_{t}/{a}" for t in (1, 2) for a in ("raw_samples", "checkpoint", "eval_report")),
}
SANDBOX = {"restem/iter_1/verified_samples", "restem/iter_2/verified_samples"}


DISTILL_GPU = {
    "distill/teacher_model",
    "distill/teacher_eval_report",
    *(f"distill/iter_1/{a}" for a in ("raw_samples", "checkpoint", "eval_report")),
}
UNPOOLED = {"problem_set", "restem/iter_1/training_set", "restem/iter_2/training_set", "restem/summary", "paper/report"}


def _pools(distill: bool) -> dict[str, set[str]]:
    exps = [Experiment("restem", iterations=2)] + (
        [Experiment("distill", iterations=1, policy="teacher")] if distill else []
    )
    g = build_definitions(exps).resolve_asset_graph()
    return {k.to_user_string(): set(g.get(k).pools) for k in g.get_all_asset_keys()}


def test_pools_are_on_the_heavy_assets_only():
    pools = _pools(distill=False)
    assert {k for k, p in pools.items() if p == {"restem_gpu"}} == GPU
    assert {k for k, p in pools.items() if p == {"restem_sandbox"}} == SANDBOX
    assert {k for k, p in pools.items() if not p} == UNPOOLED


def test_the_distillation_group_shares_the_pools():
    pools = _pools(distill=True)
    assert {k for k, p in pools.items() if p == {"restem_gpu"}} == GPU | DISTILL_GPU
    assert {k for k, p in pools.items() if p == {"restem_sandbox"}} == SANDBOX | {"distill/iter_1/verified_samples"}
    assert {k for k, p in pools.items() if not p} == UNPOOLED | {"distill/iter_1/training_set", "distill/summary"}


@pytest.fixture
def instance(tmp_path):
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as inst:
        yield inst


@pytest.mark.parametrize("pool", ["restem_gpu", "restem_sandbox"])
def test_instance_config_limits_each_pool_to_one(instance, pool):
    assert instance.global_op_concurrency_default_limit == 1
    storage = instance.event_log_storage
    assert storage.supports_global_concurrency_limits
    storage.initialize_concurrency_limit_to_default(pool)
    info = storage.get_concurrency_info(pool)
    assert (info.slot_count, info.limit, info.using_default_limit) == (1, 1, True)


def test_a_pooled_step_holds_the_slot_while_it_runs(instance):
    seen = {}

    @dg.asset(pool="restem_gpu")
    def heavy(context: dg.AssetExecutionContext) -> None:
        info = context.instance.event_log_storage.get_concurrency_info("restem_gpu")
        seen["claimed"] = [(s.run_id, s.step_key) for s in info.claimed_slots]
        seen["slots"] = info.slot_count

    result = dg.materialize([heavy], instance=instance)
    assert result.success
    assert seen == {"claimed": [(result.run_id, "heavy")], "slots": 1}
    assert instance.event_log_storage.get_concurrency_info("restem_gpu").claimed_slots == []


def test_make_copies_the_instance_config_once(tmp_path):
    home = tmp_path / "home"
    target = f"{home}/dagster.yaml"
    make = ["make", "-s", f"DAGSTER_HOME={home}", target]
    subprocess.run(make, cwd=REPO, check=True, capture_output=True)
    assert (home / "dagster.yaml").read_text() == (REPO / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text("# edited by a user\n")
    subprocess.run(make, cwd=REPO, check=True, capture_output=True)
    assert (home / "dagster.yaml").read_text() == "# edited by a user\n"
