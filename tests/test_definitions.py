"""The Definitions load, and the lineage is exactly each experiment's loop unrolled per iteration."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from assets.definitions import build_definitions

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def _parents(defs: dg.Definitions) -> dict[str, set[str]]:
    g = defs.resolve_asset_graph()
    return {k.to_user_string(): {p.to_user_string() for p in g.get(k).parent_keys} for k in g.get_all_asset_keys()}


def _key(exp: str, t: int, name: str) -> str:
    return f"{exp}/iter_{t}/{name}"


def test_lineage_of_restem_rest_and_distillation_side_by_side():
    """One Definitions, the shipped experiment files: each experiment's graph under its own prefix."""
    parents = _parents(build_definitions())
    assert parents["problem_set"] == set()
    assert parents["base_model"] == {"problem_set"}
    assert parents["baselines/sft_baseline"] == {"base_model", "problem_set"}
    assert parents["baselines/sft_eval_report"] == {"baselines/sft_baseline", "problem_set"}
    assert parents["baselines/base_eval_report"] == {"base_model", "problem_set"}
    for exp in ("restem", "rest"):  # both sample from the previous iteration's model
        for t in (1, 2, 3):
            policy = "base_model" if t == 1 else _key(exp, t - 1, "checkpoint")
            assert parents[_key(exp, t, "raw_samples")] == {policy, "problem_set"}
            assert parents[_key(exp, t, "verified_samples")] == {_key(exp, t, "raw_samples"), "problem_set"}
            assert parents[_key(exp, t, "training_set")] == {_key(exp, t, "verified_samples")}
            assert parents[_key(exp, t, "eval_report")] == {_key(exp, t, "checkpoint"), "problem_set"}
        assert _key(exp, 4, "raw_samples") not in parents
    for t in (1, 2, 3):  # ReST-EM: every M-step from the base; ReST: from checkpoint t-1 (t > 1)
        restem = {_key("restem", t, "training_set"), "base_model", "problem_set"}
        assert parents[_key("restem", t, "checkpoint")] == restem
        init = "base_model" if t == 1 else _key("rest", t - 1, "checkpoint")
        assert parents[_key("rest", t, "checkpoint")] == {_key("rest", t, "training_set"), init, "problem_set"}
    # distillation: the teacher samples, the base is fine-tuned; one iteration
    assert parents["distill/teacher_model"] == {"problem_set"}
    assert parents["distill/teacher_eval_report"] == {"distill/teacher_model", "problem_set"}
    assert parents[_key("distill", 1, "raw_samples")] == {"distill/teacher_model", "problem_set"}
    student = {_key("distill", 1, "training_set"), "base_model", "problem_set"}
    assert parents[_key("distill", 1, "checkpoint")] == student
    assert _key("distill", 2, "raw_samples") not in parents
    # one iteration with 3x the samples
    assert parents[_key("restem_3x", 1, "raw_samples")] == {"base_model", "problem_set"}
    assert _key("restem_3x", 2, "raw_samples") not in parents
    baselines = {"baselines/base_eval_report", "baselines/sft_eval_report"}
    assert parents["restem/summary"] >= baselines | {_key("restem", 3, "eval_report")}
    assert "distill/teacher_eval_report" in parents["distill/summary"]


def test_each_experiment_is_a_group_and_keeps_its_checks():
    defs = build_definitions()
    g = defs.resolve_asset_graph()
    assert g.get(dg.AssetKey(["rest", "iter_2", "checkpoint"])).group_name == "rest_iter_2"
    assert g.get(dg.AssetKey(["distill", "teacher_model"])).group_name == "distill_teacher"
    assert g.get(dg.AssetKey(["restem", "summary"])).group_name == "restem_summary"
    checks = {(c.asset_key.to_user_string(), c.name) for c in g.asset_check_keys}
    for exp in ("restem", "rest", "distill", "restem_3x"):
        assert (_key(exp, 1, "verified_samples"), "sample_conservation") in checks
        assert (_key(exp, 1, "training_set"), "cap_holds") in checks
        assert (_key(exp, 1, "eval_report"), "eval_unscored_rate") in checks
    jobs = {j.name for j in defs.resolve_all_job_defs()}
    assert {"restem_iteration_1", "restem_iteration_3", "rest_iteration_2", "distill_iteration_1"} <= jobs


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


@pytest.mark.slow
def test_dg_launch_materializes_from_the_project_root(tmp_path):
    """The README's CLI: ``dg launch`` (dagster-dg-cli) finds the project through ``[tool.dg]``."""
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("problem_set", ["arith"])
    env = {**os.environ, "DAGSTER_HOME": str(home), "RESTEM_DATA_ROOT": str(data)}
    dg_cli = Path(sys.executable).with_name("dg")
    out = subprocess.run(
        [str(dg_cli), "launch", "--assets", "problem_set", "--partition", "arith"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert (data / "tables" / "problems" / "arith" / "shared" / "ingest.parquet").is_file()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("problem_set")) == {"arith"}
