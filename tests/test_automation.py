"""Automation: the early-stopping rule, problem-set file scanning, and the sensors and schedule evaluated
against a real Dagster instance (real event log, real dynamic partitions, real runs in the slow test)."""

import gzip
import json
import math
import os
import re
from datetime import UTC, datetime

import dagster as dg
import pytest

from assets.automation import (
    build_automation,
    build_early_stopping_sensor,
    build_evaluation_schedule,
    build_problem_set_sensor,
    evaluation_job,
    iteration_jobs,
    schedule_cron,
)
from assets.definitions import build_definitions
from resources import StorageResource
from restem_pipeline.experiments import Experiment
from restem_pipeline.storage import tables as storage
from restem_pipeline.watch import (
    continue_decision,
    find_problem_set_file,
    min_improvement_from_env,
    next_iteration_decision,
    problem_set_name,
    scan_problem_sets,
)

GOOD = [
    {"question": "Ann has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = 7\n#### 7"},
    {"question": "Bob has 10 pens and gives away 6. How many?", "answer": "10 - 6 = 4\n#### 4"},
]
BASE_EVAL = dg.AssetKey(["baselines", "base_eval_report"])


def _eval_key(t: int) -> dg.AssetKey:
    return dg.AssetKey(["restem", f"iter_{t}", "eval_report"])


def _write(path, rows: list, raw_tail: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + raw_tail)


# --- the decision rule ---------------------------------------------------------------------------


def test_continue_decision_hand_worked():
    d = continue_decision(0.48, 0.53, 0.0)
    assert d.continue_ and d.label == "continue"
    assert d.delta == pytest.approx(0.05) and (d.val_prev, d.val_curr, d.margin) == (0.48, 0.53, 0.0)
    assert "0.4800 -> 0.5300" in d.reason and "+5.00 points" in d.reason
    assert not continue_decision(0.53, 0.50, 0.0).continue_  # fell by 3 points
    assert continue_decision(0.53, 0.50, 0.0).delta == pytest.approx(-0.03)
    assert not continue_decision(0.50, 0.50, 0.0).continue_  # equal is not an improvement


def test_margin_edges():
    # 0.53 - 0.48 is 0.05000000000000004 in floating point: exactly at the margin must still stop
    assert not continue_decision(0.48, 0.53, 0.05).continue_
    assert continue_decision(0.48, 0.53, 0.049).continue_
    assert not continue_decision(0.48, 0.53, 0.051).continue_
    # a negative margin tolerates a small drop
    assert continue_decision(0.50, 0.49, -0.02).continue_
    assert not continue_decision(0.50, 0.47, -0.02).continue_


def test_missing_or_nan_reward_stops():
    for prev, curr in [(None, 0.5), (0.5, None), (math.nan, 0.5)]:
        d = continue_decision(prev, curr, 0.0)
        assert not d.continue_ and math.isnan(d.delta) and "no validation reward" in d.reason


def test_last_iteration_always_stops():
    d = next_iteration_decision(3, 3, 0.40, 0.60, 0.0)
    assert not d.continue_ and d.delta == pytest.approx(0.2) and "last one unrolled" in d.reason
    assert next_iteration_decision(2, 3, 0.40, 0.60, 0.0).continue_


def test_min_improvement_setting():
    assert min_improvement_from_env(None) == 0.0 and min_improvement_from_env("  ") == 0.0
    assert min_improvement_from_env("0.01") == 0.01 and min_improvement_from_env("-0.5") == -0.5
    for bad in ("abc", "2", "nan", "inf"):
        with pytest.raises(ValueError, match=f"RESTEM_MIN_IMPROVEMENT must be .* got '{bad}'"):
            min_improvement_from_env(bad)


def test_schedule_cron_setting(monkeypatch):
    assert schedule_cron(None) == "0 3 * * *" and schedule_cron("*/5 * * * *") == "*/5 * * * *"
    for bad in ("61 3 * * *", "every day", "0 3 * *"):
        expected = f"RESTEM_SCHEDULE_CRON must be a cron expression .* got {re.escape(repr(bad))}"
        with pytest.raises(ValueError, match=expected):
            schedule_cron(bad)
    monkeypatch.setenv("RESTEM_SCHEDULE_CRON", "30 1 * * 1")
    monkeypatch.setenv("RESTEM_MIN_IMPROVEMENT", "0.02")
    defs = build_definitions([Experiment("restem", iterations=2)])
    assert defs.resolve_schedule_def("evaluation_schedule").cron_schedule == "30 1 * * 1"
    monkeypatch.setenv("RESTEM_MIN_IMPROVEMENT", "two points")
    with pytest.raises(ValueError, match="got 'two points'"):
        build_definitions([Experiment("restem", iterations=2)])


# --- scanning the folder -------------------------------------------------------------------------


def test_problem_set_names_and_lookup(tmp_path):
    assert problem_set_name("a/mine.jsonl") == "mine" and problem_set_name("mine.jsonl.gz") == "mine"
    assert problem_set_name("notes.txt") is None and problem_set_name(".mine.jsonl") is None
    assert problem_set_name(".jsonl") is None
    assert find_problem_set_file(tmp_path, "x") is None
    _write(tmp_path / "x.jsonl", GOOD)
    assert find_problem_set_file(tmp_path, "x") == tmp_path / "x.jsonl"
    with gzip.open(tmp_path / "y.jsonl.gz", "wt") as f:
        f.write(json.dumps(GOOD[0]) + "\n")
    assert find_problem_set_file(tmp_path, "y") == tmp_path / "y.jsonl.gz"


def test_scan_new_unchanged_touched_changed_removed(tmp_path):
    path = tmp_path / "mine.jsonl"
    _write(path, GOOD)
    first = scan_problem_sets(tmp_path, None)
    assert [(v.name, v.valid) for v in first.verdicts] == [("mine", True)]
    sha = first.verdicts[0].fingerprint.sha256
    assert json.loads(first.cursor)["files"]["mine.jsonl"]["sha256"] == sha

    assert scan_problem_sets(tmp_path, first.cursor).verdicts == []  # unchanged
    os.utime(path, ns=(1, 1))  # touched, same content: still nothing to do
    touched = scan_problem_sets(tmp_path, first.cursor)
    assert touched.verdicts == [] and json.loads(touched.cursor)["files"]["mine.jsonl"]["mtime_ns"] == 1

    _write(path, GOOD[:1])  # changed content
    changed = scan_problem_sets(tmp_path, touched.cursor)
    assert len(changed.verdicts) == 1 and changed.verdicts[0].fingerprint.sha256 != sha

    path.unlink()
    assert json.loads(scan_problem_sets(tmp_path, changed.cursor).cursor)["files"] == {}


def test_scan_reports_bad_files_once_and_picks_up_the_fix(tmp_path):
    bad = tmp_path / "bad.jsonl"
    _write(bad, [GOOD[0], {"question": "How many legs has a cat?"}])  # line 2 has no answer
    first = scan_problem_sets(tmp_path, None)
    (v,) = first.verdicts
    assert not v.valid and str(bad) in v.error and "line 2" in v.error and "'answer'" in v.error
    assert json.loads(first.cursor)["files"]["bad.jsonl"]["valid"] is False
    assert scan_problem_sets(tmp_path, first.cursor).verdicts == []  # not re-reported

    _write(bad, GOOD, raw_tail='{"question": "cut off", "answ\n')  # malformed JSON on line 3
    (v,) = scan_problem_sets(tmp_path, first.cursor).verdicts
    assert not v.valid and "line 3" in v.error and "'<json>'" in v.error and "not valid JSON" in v.error

    _write(bad, GOOD)  # fixed
    (v,) = scan_problem_sets(tmp_path, first.cursor).verdicts
    assert v.valid


@pytest.mark.parametrize(
    ("filename", "message"),
    [
        ("my set.jsonl", "must be letters, digits"),
        ("v1.2.jsonl", "must be letters, digits"),
        ("math.jsonl", "built-in problem set"),
        ("empty.jsonl", "holds no records"),
    ],
)
def test_scan_rejects_names_and_empty_files(tmp_path, filename, message):
    _write(tmp_path / filename, [] if filename == "empty.jsonl" else GOOD)
    (v,) = scan_problem_sets(tmp_path, None).verdicts
    assert not v.valid and message in v.error and filename in v.error


def test_scan_rejects_a_set_with_no_train_split(tmp_path):
    rows = [{"id": f"p{i}", "domain": "math", "prompt": "1+1?", "source": "t", "split": "test", "answer": "2"}
            for i in range(3)]  # fmt: skip
    _write(tmp_path / "testonly.jsonl", rows)
    (v,) = scan_problem_sets(tmp_path, None).verdicts
    assert not v.valid and "'split'" in v.error and "train" in v.error


# --- the problem-set sensor against a real instance -------------------------------------------


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _sensor_tick(sensor, instance, data_root, cursor=None) -> dg.SensorResult:
    ctx = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"storage": StorageResource(data_root=str(data_root))}
    )
    return sensor(ctx)


def _apply(instance, result: dg.SensorResult) -> None:
    """What the daemon does with a tick's partition requests and asset events."""
    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)


def test_problem_set_sensor_new_file_gives_partition_and_first_iteration_run(tmp_path, instance):
    _write(tmp_path / "problem_sets" / "mine.jsonl", GOOD)
    jobs = iteration_jobs(Experiment("restem", iterations=2))
    sensor = build_problem_set_sensor(jobs[0])
    result = _sensor_tick(sensor, instance, tmp_path)

    (req,) = result.dynamic_partitions_requests
    assert req.partitions_def_name == "problem_set" and list(req.partition_keys) == ["mine"]
    (run,) = result.run_requests
    sha = json.loads(result.cursor)["files"]["mine.jsonl"]["sha256"]
    assert run.partition_key == "mine" and run.run_key == f"mine:{sha[:16]}"
    assert run.tags == {
        "restem/trigger": "problem_set_sensor",
        "restem/file": "mine.jsonl",
        "restem/fingerprint": sha[:16],
    }
    # the run is iteration 1 of the graph: ingest, base model and its evaluation, the iteration_1 group, and
    # the run summary refreshed at the end
    defs = build_definitions([Experiment("restem", iterations=2)])
    assert sensor.job_name == "restem_iteration_1"
    selected = {k.to_user_string() for k in defs.resolve_job_def("restem_iteration_1").asset_layer.selected_asset_keys}
    assert selected == {
        "problem_set",
        "base_model",
        "restem/summary",
        "baselines/base_eval_report",
        *(
            f"restem/iter_1/{s}"
            for s in ("raw_samples", "verified_samples", "training_set", "checkpoint", "eval_report")
        ),
    }

    _apply(instance, result)
    assert instance.has_dynamic_partition("problem_set", "mine")
    again = _sensor_tick(sensor, instance, tmp_path, result.cursor)  # unchanged: nothing
    assert not again.run_requests and not again.dynamic_partitions_requests
    assert "no new or changed" in again.skip_reason.skip_message

    _write(tmp_path / "problem_sets" / "mine.jsonl", GOOD[:1])  # changed: a new run, no new partition
    changed = _sensor_tick(sensor, instance, tmp_path, again.cursor)
    (run2,) = changed.run_requests
    assert not changed.dynamic_partitions_requests
    assert run2.partition_key == "mine" and run2.run_key != run.run_key
    assert run2.tags["restem/fingerprint"] == run2.run_key.split(":")[1]


def test_problem_set_sensor_invalid_file_gives_message_and_nothing_else(tmp_path, instance):
    folder = tmp_path / "problem_sets"
    _write(folder / "broken.jsonl", [GOOD[0], {"question": "no gold here"}])
    sensor = build_problem_set_sensor(iteration_jobs(Experiment("restem", iterations=1))[0])
    result = _sensor_tick(sensor, instance, tmp_path)
    assert not result.run_requests and not result.dynamic_partitions_requests
    msg = result.skip_reason.skip_message
    assert "broken.jsonl" in msg and "line 2" in msg and "field 'answer'" in msg
    assert not instance.has_dynamic_partition("problem_set", "broken")

    quiet = _sensor_tick(sensor, instance, tmp_path, result.cursor)  # recorded: not re-reported
    assert "broken.jsonl" not in quiet.skip_reason.skip_message

    _write(folder / "broken.jsonl", GOOD)  # the fix is picked up
    fixed = _sensor_tick(sensor, instance, tmp_path, quiet.cursor)
    assert [r.partition_key for r in fixed.run_requests] == ["broken"]
    assert list(fixed.dynamic_partitions_requests[0].partition_keys) == ["broken"]


def test_problem_set_sensor_valid_and_invalid_together(tmp_path, instance):
    folder = tmp_path / "problem_sets"
    _write(folder / "good.jsonl", GOOD)
    _write(folder / "bad.jsonl", GOOD, raw_tail="{not json\n")
    result = _sensor_tick(
        build_problem_set_sensor(iteration_jobs(Experiment("restem", iterations=1))[0]), instance, tmp_path
    )
    assert [r.partition_key for r in result.run_requests] == ["good"]
    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["good"]
    error = json.loads(result.cursor)["files"]["bad.jsonl"]["error"]
    assert "bad.jsonl: line 3: field '<json>': not valid JSON" in error


# --- early stopping against real events in the instance ---------------------------------------


def _report(instance, key: dg.AssetKey, partition: str, **metadata) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition, metadata=metadata))


def _val(v: float) -> dict:
    return {"validation/pass@1": dg.MetadataValue.float(v)}


def _es_tick(sensor, instance, cursor=None) -> dg.SensorResult:
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor))


def _observations(instance, t: int, partition: str) -> list[dict]:
    recs = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=_eval_key(t), asset_partitions=[partition]), 10, ascending=True
    ).records
    return [{k: v.value for k, v in r.asset_observation.metadata.items()} for r in recs]


def test_early_stopping_continues_on_improvement_then_stops(instance):
    instance.add_dynamic_partitions("problem_set", ["p"])
    sensor = build_early_stopping_sensor(
        [Experiment("restem", iterations=3)], 0.0, iteration_jobs(Experiment("restem", iterations=3))[1:]
    )
    _report(instance, BASE_EVAL, "p", **_val(0.40))
    _report(instance, _eval_key(1), "p", **_val(0.50))

    result = _es_tick(sensor, instance)
    (run,) = result.run_requests
    assert run.job_name == "restem_iteration_2" and run.partition_key == "p"
    assert run.tags == {
        "restem/trigger": "early_stopping_sensor",
        "restem/experiment": "restem",
        "restem/decision": "continue",
        "restem/after_iteration": "1",
        "restem/val_prev": "0.4000",
        "restem/val_curr": "0.5000",
        "restem/delta": "+0.1000",
        "restem/margin": "0.0000",
    }
    _apply(instance, result)
    (obs,) = _observations(instance, 1, "p")
    assert obs["restem/decision"] == "continue" and obs["restem/delta"] == pytest.approx(0.10)
    assert obs["restem/compared_with"] == "baselines/base_eval_report"
    assert obs["restem/next_iteration"] == "requested: restem_iteration_2"

    again = _es_tick(sensor, instance, result.cursor)  # no decision twice for one materialization
    assert not again.run_requests and not again.asset_events

    _report(instance, _eval_key(2), "p", **_val(0.45))  # iteration 2 is worse: stop
    stop = _es_tick(sensor, instance, again.cursor)
    assert not stop.run_requests
    assert "0.5000 -> 0.4500" in stop.skip_reason.skip_message and "stop" in stop.skip_reason.skip_message
    _apply(instance, stop)
    (obs2,) = _observations(instance, 2, "p")
    assert obs2["restem/decision"] == "stop" and obs2["restem/next_iteration"] == "not requested"
    assert (obs2["restem/val_prev"], obs2["restem/val_curr"]) == (0.5, 0.45)
    assert obs2["restem/delta"] == pytest.approx(-0.05) and obs2["restem/margin"] == 0.0

    _report(instance, _eval_key(1), "p", **_val(0.55))  # a re-evaluation is a new materialization
    redo = _es_tick(sensor, instance, stop.cursor)
    assert [r.tags["restem/val_curr"] for r in redo.run_requests] == ["0.5500"]
    assert redo.run_requests[0].run_key != run.run_key


def test_early_stopping_margin_last_iteration_and_waiting(instance):
    instance.add_dynamic_partitions("problem_set", ["p", "q"])
    sensor = build_early_stopping_sensor(
        [Experiment("restem", iterations=2)], 0.05, iteration_jobs(Experiment("restem", iterations=2))[1:]
    )
    _report(instance, _eval_key(1), "q", **_val(0.50))  # q has no base evaluation yet
    _report(instance, BASE_EVAL, "p", **_val(0.48))
    _report(instance, _eval_key(1), "p", **_val(0.53))  # +5 points, not above a 5-point margin
    first = _es_tick(sensor, instance)
    msg = first.skip_reason.skip_message
    assert "q/restem: iteration 1 waits for baselines/base_eval_report" in msg
    assert "p/restem: after iteration 1" in msg and "margin 0.0500: stop" in msg
    assert [e.partition for e in first.asset_events] == ["p"]
    assert set(json.loads(first.cursor)) == {"p/restem/iter_1"}  # q is not recorded: it is decided once it can be

    _report(instance, BASE_EVAL, "q", **_val(0.30))  # now q can be decided: +20 points
    second = _es_tick(sensor, instance, first.cursor)
    assert [(r.partition_key, r.job_name) for r in second.run_requests] == [("q", "restem_iteration_2")]

    _report(instance, _eval_key(2), "q", **_val(0.90))  # improved, but iteration 2 is the last one unrolled
    last = _es_tick(sensor, instance, second.cursor)
    assert not last.run_requests and "last one unrolled" in last.skip_reason.skip_message
    assert last.asset_events[0].metadata["restem/decision"].value == "stop"


def test_early_stopping_does_not_rerun_an_iteration_already_sampled_from_the_checkpoint(instance):
    instance.add_dynamic_partitions("problem_set", ["p"])
    sensor = build_early_stopping_sensor(
        [Experiment("restem", iterations=3)], 0.0, iteration_jobs(Experiment("restem", iterations=3))[1:]
    )
    _report(instance, BASE_EVAL, "p", **_val(0.40))
    _report(instance, dg.AssetKey(["restem", "iter_1", "checkpoint"]), "p")
    _report(instance, dg.AssetKey(["restem", "iter_2", "raw_samples"]), "p")  # e.g. a whole-graph run
    _report(instance, _eval_key(1), "p", **_val(0.50))
    result = _es_tick(sensor, instance)
    assert not result.run_requests
    meta = result.asset_events[0].metadata
    assert meta["restem/decision"].value == "continue"
    assert meta["restem/next_iteration"].value == "not requested: iteration 2 already sampled from checkpoint 1"

    _report(instance, dg.AssetKey(["restem", "iter_1", "checkpoint"]), "p")  # a new checkpoint 1: iteration 2 is stale
    _report(instance, _eval_key(1), "p", **_val(0.50))
    assert [r.job_name for r in _es_tick(sensor, instance, result.cursor).run_requests] == ["restem_iteration_2"]


def test_early_stopping_reads_the_margin_from_the_environment(monkeypatch, instance):
    monkeypatch.setenv("RESTEM_MIN_IMPROVEMENT", "0.2")
    sensor = build_automation([Experiment("restem", iterations=2)]).sensors[1]
    assert sensor.name == "early_stopping_sensor"
    instance.add_dynamic_partitions("problem_set", ["p"])
    _report(instance, BASE_EVAL, "p", **_val(0.40))
    _report(instance, _eval_key(1), "p", **_val(0.55))
    result = _es_tick(sensor, instance)
    assert not result.run_requests and result.asset_events[0].metadata["restem/margin"].value == 0.2


# --- the schedule ----------------------------------------------------------------------------


def test_evaluation_schedule_requests_the_evaluations_of_built_models(instance):
    exps = [Experiment("restem", iterations=2)]
    schedule = build_evaluation_schedule(evaluation_job(exps), exps, "0 3 * * *")
    when = datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
    empty = schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=when))
    assert isinstance(empty, dg.SkipReason)

    instance.add_dynamic_partitions("problem_set", ["p", "q", "r"])
    _report(instance, dg.AssetKey("base_model"), "p")
    _report(instance, dg.AssetKey(["restem", "iter_1", "checkpoint"]), "p")
    _report(instance, dg.AssetKey("base_model"), "q")
    _report(instance, dg.AssetKey("base_model"), "gone")  # a deleted partition is not evaluated
    requests = schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=when))
    got = {r.partition_key: {k.to_user_string() for k in r.asset_selection} for r in requests}
    summary = "restem/summary"  # refreshed after the re-evaluations
    assert got == {
        "p": {"baselines/base_eval_report", "restem/iter_1/eval_report", summary},
        "q": {"baselines/base_eval_report", summary},
    }
    assert all(r.run_key.endswith(when.isoformat()) and r.tags["restem/trigger"] == "evaluation_schedule"
               for r in requests)  # fmt: skip
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED and schedule.job_name == "restem_evaluation"


def test_definitions_register_the_automation():
    defs = build_definitions([Experiment("restem", iterations=2)])
    sensors = {s.name: s for s in defs.sensors}
    assert sensors["problem_set_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["early_stopping_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    assert {j.name for j in sensors["early_stopping_sensor"].jobs} == {"restem_iteration_2"}
    dg.Definitions.validate_loadable(defs)


# --- real runs: a file becomes iteration 1; a "stop" never blocks a manual iteration 2 --------------


@pytest.mark.slow
def test_sensor_run_then_stop_then_manual_iteration(tmp_path, monkeypatch, memorized_base, tiny_problems):
    """On ``memorized_base`` (tests/conftest.py) both iterations find correct samples by construction, so
    neither run can stop at the blocking ``training_set_not_empty`` by chance."""
    from tiny_defs import tiny_resources

    monkeypatch.setenv("RESTEM_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("RESTEM_TINY_BASE", str(memorized_base))
    monkeypatch.setenv("RESTEM_MIN_IMPROVEMENT", "1.0")  # nothing can improve by more: always stop
    _write(tmp_path / "problem_sets" / "tiny.jsonl", [p.to_row() for p in tiny_problems])
    resources = tiny_resources()
    defs = build_definitions([Experiment("restem", iterations=2)], resources=resources)
    with dg.instance_for_test() as instance:
        ps_sensor, es_sensor = (defs.resolve_sensor_def(n) for n in ("problem_set_sensor", "early_stopping_sensor"))
        tick = ps_sensor(dg.build_sensor_context(instance=instance, resources={"storage": resources["storage"]}))
        _apply(instance, tick)
        (request,) = tick.run_requests
        first = defs.resolve_job_def("restem_iteration_1").execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags
        )
        assert first.success
        assert storage.DataRoot(tmp_path).of("restem").read_table("training_set", "tiny", "iter_1").height > 0

        decision = _es_tick(es_sensor, instance)
        assert not decision.run_requests and "stop" in decision.skip_reason.skip_message
        _apply(instance, decision)
        (obs,) = _observations(instance, 1, "tiny")
        assert obs["restem/decision"] == "stop" and obs["restem/margin"] == 1.0
        assert 0.0 <= obs["restem/val_curr"] <= 1.0

        # the user overrides the stop: iteration 2 materializes by hand, nothing blocks it
        manual = defs.resolve_job_def("restem_iteration_2").execute_in_process(
            instance=instance, partition_key="tiny", tags={"restem/force": "true"}
        )
        assert manual.success
        assert (tmp_path / "models" / "tiny" / "restem" / "iter_2").is_dir()
        after = _es_tick(es_sensor, instance, decision.cursor)
        assert "after iteration 2" in after.skip_reason.skip_message and not after.run_requests


def test_problem_set_asset_ingests_the_gzipped_file_the_sensor_accepts(tmp_path, instance, tiny_problems):
    from assets.ingest import problem_set
    from resources import ExperimentResource

    folder = tmp_path / "problem_sets"
    folder.mkdir()
    with gzip.open(folder / "zipped.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(p.to_row()) + "\n" for p in tiny_problems)
    (verdict,) = scan_problem_sets(folder, None).verdicts
    assert verdict.valid and verdict.name == "zipped"
    instance.add_dynamic_partitions("problem_set", ["zipped"])
    result = dg.materialize(
        [problem_set],
        partition_key="zipped",
        instance=instance,
        resources={"storage": StorageResource(data_root=str(tmp_path)), "experiment": ExperimentResource()},
    )
    assert result.success
    assert storage.DataRoot(tmp_path).read_table("problems", "zipped", "ingest").height == len(tiny_problems)
