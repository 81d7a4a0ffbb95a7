"""The Definitions load, and the lineage is exactly the ReST-EM loop unrolled per iteration."""

import os
import subprocess
import sys

import dagster as dg
import pytest

from assets.definitions import build_definitions, iterations_from_env

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def _parents(defs: dg.Definitions) -> dict[str, set[str]]:
    g = defs.resolve_asset_graph()
    return {k.to_user_string(): {p.to_user_string() for p in g.get(k).parent_keys} for k in g.get_all_asset_keys()}


def test_lineage_edges():
    parents = _parents(build_definitions(iterations=3))
    assert parents["problem_set"] == set()
    assert parents["base_model"] == {"problem_set"}
    assert parents["baselines/sft_baseline"] == {"base_model", "problem_set"}
    assert parents["baselines/sft_eval_report"] == {"baselines/sft_baseline", "problem_set"}
    assert parents["baselines/base_eval_report"] == {"base_model", "problem_set"}
    for t in (1, 2, 3):
        policy = "base_model" if t == 1 else f"iter_{t - 1}/checkpoint"
        assert parents[f"iter_{t}/raw_samples"] == {policy, "problem_set"}
        assert parents[f"iter_{t}/verified_samples"] == {f"iter_{t}/raw_samples", "problem_set"}
        assert parents[f"iter_{t}/training_set"] == {f"iter_{t}/verified_samples"}
        # ReST-EM: every checkpoint fine-tunes the base model, never the previous checkpoint
        assert parents[f"iter_{t}/checkpoint"] == {f"iter_{t}/training_set", "base_model", "problem_set"}
        assert parents[f"iter_{t}/eval_report"] == {f"iter_{t}/checkpoint", "problem_set"}
    assert "iter_4/raw_samples" not in parents


def test_groups_partitions_and_checks():
    defs = build_definitions(iterations=2)
    g = defs.resolve_asset_graph()
    node = g.get(dg.AssetKey(["iter_2", "checkpoint"]))
    assert node.group_name == "iteration_2"
    assert all(g.get(k).partitions_def.name == "problem_set" for k in g.get_all_asset_keys())
    checks = {(c.asset_key.to_user_string(), c.name) for c in g.asset_check_keys}
    assert ("iter_2/verified_samples", "sample_conservation") in checks
    assert ("iter_1/training_set", "cap_holds") in checks
    assert ("iter_2/eval_report", "eval_unscored_rate") in checks
    assert not any(k.startswith("distill/") for k, _ in checks)
    with_distill = build_definitions(iterations=1, distill=True).resolve_asset_graph().asset_check_keys
    names = {(c.asset_key.to_user_string(), c.name) for c in with_distill}
    assert {("distill/training_set", "cap_holds"), ("distill/verified_samples", "sample_conservation")} <= names
    assert ("distill/eval_report", "eval_unscored_rate") in names


def test_iterations_setting(monkeypatch):
    monkeypatch.setenv("RESTEM_ITERATIONS", "5")
    assert iterations_from_env() == 5
    monkeypatch.setenv("RESTEM_ITERATIONS", "zero")
    with pytest.raises(ValueError, match="RESTEM_ITERATIONS must be an integer in 1..50, got 'zero'"):
        iterations_from_env()


def test_workspace_yaml_loads_the_definitions(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation successful" in out.stdout + out.stderr


def test_experiment_resource_rejects_bad_values():
    from resources import ExperimentResource

    with pytest.raises(Exception, match="samples_per_problem must be >= 1, got 0"):
        ExperimentResource(samples_per_problem=0)
    with pytest.raises(Exception, match="temperature must be in \\(0, 2\\], got 3.0"):
        ExperimentResource(temperature=3.0)


def test_settings_file_overrides_resources(tmp_path, monkeypatch):
    from assets.definitions import default_resources, settings_from_file

    good = tmp_path / "tiny.yaml"
    good.write_text("experiment:\n  samples_per_problem: 4\ntrainer:\n  max_steps: 12\n")
    monkeypatch.setenv("RESTEM_SETTINGS", str(good))
    res = default_resources()
    assert res["experiment"].samples_per_problem == 4 and res["trainer"].max_steps == 12
    assert res["experiment"].max_new_tokens == 96  # untouched fields keep their defaults

    for text, expected in (
        ("experment:\n  seed: 1\n", "unknown resource 'experment'"),
        ("experiment:\n  sampels_per_problem: 4\n", "experiment.sampels_per_problem: no such field"),
        ("experiment:\n  samples_per_problem: 0\n", "experiment"),
        ("trainer:\n  max_steps: lots\n", "trainer.max_steps"),
        ("- 1\n", "expected a mapping"),
        ("experiment: [1\n", "cannot read"),
    ):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ValueError) as e:
            settings_from_file(bad)
        assert str(bad) in str(e.value) and expected in str(e.value), str(e.value)
