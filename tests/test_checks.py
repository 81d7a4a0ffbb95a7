"""What each asset check catches, shown on deliberately broken runs through real Dagster.

- a problem set with unparseable gold answers: ``invalid_gold_rate`` fails and the training set is
  never built (blocking);
- a duplicated verdict injected into ``verified_samples``: ``sample_conservation`` fails;
- a training set holding unscored samples, over the cap: ``cap_holds`` fails;
- a problem set whose gold answers no sample can hit: ``training_set_not_empty`` fails and the
  checkpoint is never trained (blocked by the check, not by the asset's own error);
- a checkpoint worse than the base on validation: ``not_worse_than_base`` fails as a WARNING and the run
  still succeeds.
"""

import json

import dagster as dg
import polars as pl
import pytest

from assets.checks import unscored_rate_result
from assets.definitions import all_assets, all_checks, default_resources
from assets.experiment import iteration_key
from resources import ChecksResource, ExperimentResource, StorageResource, TrainerResource
from restem_pipeline.experiments import Experiment
from restem_pipeline.storage.tables import DataRoot

pytestmark = pytest.mark.slow

BAD_GOLD = "\\frac{"  # loads (a non-empty answer) but can never be parsed: every verdict on it is invalid_gold
N = 4  # samples per problem
CAP = 2


def _write_set(root, name: str, problems, answer_for) -> list[str]:
    """Write ``problem_sets/<name>.jsonl``; ``answer_for(problem)`` returns a replacement answer or None."""
    changed = []
    (root / "problem_sets").mkdir(exist_ok=True)
    with open(root / "problem_sets" / f"{name}.jsonl", "w") as f:
        for p in problems:
            row = p.to_row()
            new = answer_for(p)
            if new is not None:
                row["answer"] = new
                changed.append(p.id)
            f.write(json.dumps(row) + "\n")
    return changed


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_base, tiny_problems):
    root = tmp_path_factory.mktemp("checks_data")
    train = sorted(p.id for p in tiny_problems if p.split == "train")
    broken = set(train[::3])  # a third of the train problems get an unparseable gold answer
    bad_ids = _write_set(root, "badgold", tiny_problems, lambda p: BAD_GOLD if p.id in broken else None)
    _write_set(root, "nevercorrect", tiny_problems, lambda p: "98765")  # a valid answer no sample reaches
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("problem_set", ["badgold", "nevercorrect", "warnset"])
    resources = {
        **default_resources(),
        "storage": StorageResource(data_root=str(root)),
        "experiment": ExperimentResource(
            base_model=str(tiny_base), samples_per_problem=N, max_per_problem=CAP, max_new_tokens=40, seed=0
        ),
        "trainer": TrainerResource(max_steps=2, batch_size=8),
        "checks": ChecksResource(),
    }
    return {"root": DataRoot(root), "instance": instance, "resources": resources, "bad_ids": bad_ids}


def _materialize(env, partition: str, selection) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*all_assets([Experiment("restem", iterations=1)]), *all_checks([Experiment("restem", iterations=1)])],
        selection=selection,
        partition_key=partition,
        instance=env["instance"],
        resources=env["resources"],
        raise_on_error=False,
    )


def _run_checks(env, partition: str, *keys: dg.AssetCheckKey) -> dg.ExecuteInProcessResult:
    """Only the checks, on what is stored (as "Execute check" in the UI): the partition goes in as a tag."""
    return dg.materialize(
        [*all_assets([Experiment("restem", iterations=1)]), *all_checks([Experiment("restem", iterations=1)])],
        selection=dg.AssetSelection.checks(*keys),
        instance=env["instance"],
        resources=env["resources"],
        tags={"dagster/partition": partition},
        raise_on_error=False,
    )


def _evals(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _materialized(result) -> set[str]:
    return {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}


def _check(t: int, asset: str, name: str) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(iteration_key(t, asset), name)


def _values(ev: dg.AssetCheckEvaluation) -> dict:
    return {k: v.value for k, v in ev.metadata.items()}


ROLLOUT = [dg.AssetKey("problem_set"), dg.AssetKey("base_model"), iteration_key(1, "raw_samples")]


@pytest.fixture(scope="module")
def badgold_run(env):
    keys = [*ROLLOUT, iteration_key(1, "verified_samples"), iteration_key(1, "training_set")]
    return _materialize(env, "badgold", dg.AssetSelection.assets(*keys))


def test_invalid_gold_rate_fails_and_blocks_the_training_set(env, badgold_run):
    evals = _evals(badgold_run)
    bad = evals["invalid_gold_rate"]
    meta = _values(bad)
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
    assert meta["invalid_gold"] == N * len(env["bad_ids"])
    assert meta["rate"] == pytest.approx(meta["invalid_gold"] / meta["samples"]) and meta["rate"] > meta["threshold"]
    # what did hold is reported as holding
    assert evals["sample_conservation"].passed
    assert evals["verifier_timeout_rate"].passed and evals["infra_error_rate"].passed
    # blocking: the training set never ran, so nothing was trained on a broken problem set
    assert not badgold_run.success
    assert "restem/iter_1/verified_samples" in _materialized(badgold_run)
    assert "restem/iter_1/training_set" not in _materialized(badgold_run)
    assert not env["root"].of("restem").table_path("training_set", "badgold", "iter_1").exists()


def test_a_duplicated_verdict_breaks_conservation(env, badgold_run):
    root = env["root"].of("restem")  # the default experiment's tables
    ver = root.read_table("verified_samples", "badgold", "iter_1")
    root.write_table(
        pl.concat([ver, ver.head(1)]).drop("problem_set", "stage"), "verified_samples", "badgold", "iter_1"
    )
    result = _run_checks(env, "badgold", _check(1, "verified_samples", "sample_conservation"))
    ev = _evals(result)["sample_conservation"]
    assert not ev.passed
    assert _values(ev) == {"raw": len(ver), "verified": len(ver) + 1, "missing": 0, "extra": 0, "duplicates": 1}
    root.write_table(ver.drop("problem_set", "stage"), "verified_samples", "badgold", "iter_1")  # restore


def test_unscored_samples_over_the_cap_break_cap_holds(env, badgold_run):
    root = env["root"].of("restem")  # the default experiment's tables
    ver = root.read_table("verified_samples", "badgold", "iter_1")
    one_problem = ver.filter(pl.col("problem_id") == env["bad_ids"][0]).drop("problem_set", "stage")
    assert len(one_problem) == N > CAP and one_problem["reward"].is_null().all()
    root.write_table(one_problem, "training_set", "badgold", "iter_1")
    result = _run_checks(
        env, "badgold", _check(1, "training_set", "cap_holds"), _check(1, "training_set", "training_set_not_empty")
    )
    evals = _evals(result)
    assert not evals["cap_holds"].passed
    assert _values(evals["cap_holds"]) == {
        "examples": N,
        "max_per_problem_observed": N,
        "cap": CAP,
        "not_correct": N,
    }
    assert evals["training_set_not_empty"].passed


def test_no_correct_sample_fails_not_empty_and_blocks_the_checkpoint(env):
    keys = [*ROLLOUT, *(iteration_key(1, a) for a in ("verified_samples", "training_set", "checkpoint"))]
    result = _materialize(env, "nevercorrect", dg.AssetSelection.assets(*keys))
    evals = _evals(result)
    assert not evals["training_set_not_empty"].passed
    assert _values(evals["training_set_not_empty"]) == {"examples": 0, "problems_covered": 0}
    assert evals["cap_holds"].passed  # an empty set breaks no cap: the two failures are named apart
    assert evals["invalid_gold_rate"].passed and evals["sample_conservation"].passed
    ver = env["root"].of("restem").read_table("verified_samples", "nevercorrect", "iter_1")
    assert len(ver) > 0 and not (ver["reward"] == 1.0).any()
    assert "restem/iter_1/training_set" in _materialized(result)
    assert "restem/iter_1/checkpoint" not in _materialized(result)
    # blocked by the check: the checkpoint step never started (it did not fail on its own empty input)
    started = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}
    assert not any("checkpoint" in s for s in started)
    assert not env["root"].of("restem").model_dir("nevercorrect", "iter_1").exists()


def _report(root: DataRoot, stage: str, validation: float) -> None:
    metrics = {"validation/pass@1": validation, "test/pass@1": 0.5}
    root.write_json({"stage": stage, "metrics": metrics, "summary": []}, "warnset", stage)


@pytest.mark.parametrize(("iteration", "passed"), [(0.35, False), (0.6, True)])
def test_worse_than_base_on_validation_is_a_warning(env, iteration, passed):
    root = env["root"]
    _report(root, "base", 0.5)
    _report(root.of("restem"), "iter_1", iteration)
    result = _run_checks(env, "warnset", _check(1, "eval_report", "not_worse_than_base"))
    ev = _evals(result)["not_worse_than_base"]
    assert ev.passed is passed and ev.severity == dg.AssetCheckSeverity.WARN
    meta = _values(ev)
    assert meta["validation/pass@1"] == iteration and meta["base validation/pass@1"] == 0.5
    assert meta["delta"] == pytest.approx(iteration - 0.5)
    assert result.success  # a warning never fails the run nor blocks anything


def test_missing_base_report_is_a_warning_not_a_pass(env):
    root = env["root"]
    _report(root.of("restem"), "iter_1", 0.9)
    root.report_path("warnset", "base", ".json").unlink(missing_ok=True)
    result = _run_checks(env, "warnset", _check(1, "eval_report", "not_worse_than_base"))
    ev = _evals(result)["not_worse_than_base"]
    assert not ev.passed and ev.severity == dg.AssetCheckSeverity.WARN
    assert "baselines/base_eval_report" in ev.description


def test_rates_count_only_unscored_verdicts():
    df = pl.DataFrame(
        {
            "status": ["timeout", "timeout", "timeout", "pass", "infra_error"],
            # a code program that ran out of time is a wrong answer (0.0), not an unscored verdict
            "reward": [None, 0.0, 0.0, 1.0, None],
        },
        schema={"status": pl.String, "reward": pl.Float64},
    )
    timeouts = unscored_rate_result(df, "timeout", 0.1)
    assert {k: v.value for k, v in timeouts.metadata.items()} == {
        "samples": 5,
        "timeout": 1,
        "rate": 0.2,
        "threshold": 0.1,
    }
    assert not timeouts.passed
    assert unscored_rate_result(df, "infra_error", 0.2).passed  # 1 of 5 = 0.2: at the threshold holds
    assert unscored_rate_result(df.clear(), "timeout", 0.0).passed
    # the evaluation's check counts every unscored verdict (2 of 5), as a warning
    anything = unscored_rate_result(df, None, 0.3, dg.AssetCheckSeverity.WARN)
    assert not anything.passed and anything.metadata["unscored"].value == 2
    assert anything.severity == dg.AssetCheckSeverity.WARN and "2 of 5 samples are unscored" in anything.description
    assert unscored_rate_result(df, None, 0.4).passed


def test_thresholds_are_validated():
    with pytest.raises(Exception, match="max_timeout_rate must be in \\[0, 1\\], got 1.5"):
        ChecksResource(max_timeout_rate=1.5)
    with pytest.raises(Exception, match="max_invalid_gold_rate must be in \\[0, 1\\], got -0.1"):
        ChecksResource(max_invalid_gold_rate=-0.1)
