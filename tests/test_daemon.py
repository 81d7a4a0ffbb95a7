"""With the real Dagster daemon running, dropping a problem-set file is all it takes to get a run.

``dagster-daemon run -w tests/tiny_workspace.yaml`` runs in its own process group against a fresh
``DAGSTER_HOME`` (queued runs, one at a time, the default run launcher). The test drops an invalid file,
then a valid one, into ``<data root>/problem_sets/`` and only watches the instance: the invalid file is
reported on a sensor tick and never becomes a partition; the valid one becomes a partition whose
iteration-1 run succeeds and writes its data; then the early-stopping sensor records its decision on
``iter_1/eval_report`` (``RESTEM_MIN_IMPROVEMENT=1.0``: nothing can improve by more, so it stops and
launches nothing). The base model is ``memorized_base`` (tests/conftest.py): iteration 1 finds correct samples
by construction, so the run cannot stop at the blocking ``training_set_not_empty`` by chance.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorType

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 480
DAGSTER_YAML = """\
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 1
telemetry:
  enabled: false
"""

pytestmark = pytest.mark.slow


def _sensor_skip_reasons(instance: dg.DagsterInstance, name: str) -> list[str]:
    out = []
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == name:
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=50)
            out += [t.skip_reason for t in ticks if t.skip_reason]
    return out


def _wait_for(what: str, check, daemon: subprocess.Popen, log: Path, deadline: float):
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            pytest.fail(f"the daemon exited ({daemon.returncode}) while waiting for {what}:\n{log.read_text()[-3000:]}")
        value = check()
        if value:
            return value
        time.sleep(2)
    pytest.fail(f"timed out waiting for {what}; daemon log tail:\n{log.read_text()[-3000:]}")


def _run_for(instance: dg.DagsterInstance, partition: str):
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": partition}))
    for run in runs:
        if run.status == dg.DagsterRunStatus.FAILURE:
            errors = [
                e.message
                for e in instance.all_logs(run.run_id)
                if e.dagster_event and e.dagster_event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE")
            ]
            pytest.fail(f"run {run.run_id} for {partition} failed: {errors}")
    done = [r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS]
    return done[0] if done else None


def _decision(instance: dg.DagsterInstance, partition: str) -> dict | None:
    recs = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["restem", "iter_1", "eval_report"]), asset_partitions=[partition]),
        1,
    ).records
    return {k: v.value for k, v in recs[0].asset_observation.metadata.items()} if recs else None


def test_dropped_file_becomes_a_partition_and_a_successful_run(tmp_path, memorized_base, tiny_problems):
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    folder = data / "problem_sets"
    folder.mkdir(parents=True)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "RESTEM_TINY_BASE": str(memorized_base),
        "RESTEM_DATA_ROOT": str(data),
        "RESTEM_MIN_IMPROVEMENT": "1.0",
    }
    log = tmp_path / "daemon.log"
    # create the instance's storage before the daemon starts: two processes creating the same new SQLite
    # schema at once race ("table alembic_version already exists"), seen on a loaded machine
    dg.DagsterInstance.from_config(str(home)).dispose()
    daemon_bin = Path(sys.executable).parent / "dagster-daemon"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [str(daemon_bin), "run", "-w", "tests/tiny_workspace.yaml"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the code server and run workers die with it
        )
    deadline = time.monotonic() + DEADLINE_S
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # 1. an invalid file: reported on a tick (file, line, field), no partition
            (folder / "broken.jsonl").write_text(
                json.dumps(tiny_problems[0].to_row()) + "\n" + json.dumps({"id": "x", "domain": "math"}) + "\n"
            )
            reasons = _wait_for(
                "the sensor to report broken.jsonl",
                lambda: [r for r in _sensor_skip_reasons(instance, "problem_set_sensor") if "broken.jsonl" in r],
                daemon,
                log,
                deadline,
            )
            assert "line 2" in reasons[0] and "field 'prompt'" in reasons[0]
            assert not instance.has_dynamic_partition("problem_set", "broken")

            # 2. a valid file, written under a hidden name and renamed in (as a copy tool would)
            tmp = folder / ".dropped.jsonl.part"
            tmp.write_text("".join(json.dumps(p.to_row()) + "\n" for p in tiny_problems))
            tmp.rename(folder / "dropped.jsonl")
            run = _wait_for(
                "a successful run for 'dropped'", lambda: _run_for(instance, "dropped"), daemon, log, deadline
            )
            assert instance.has_dynamic_partition("problem_set", "dropped")
            assert run.job_name == "restem_iteration_1"
            assert run.tags["restem/trigger"] == "problem_set_sensor" and run.tags["restem/file"] == "dropped.jsonl"
            for key in (["problem_set"], ["restem", "iter_1", "training_set"], ["restem", "iter_1", "eval_report"]):
                assert "dropped" in instance.get_materialized_partitions(dg.AssetKey(key)), key
            for path in (
                data / "tables" / "problems" / "dropped" / "shared" / "ingest.parquet",
                data / "tables" / "training_set" / "dropped" / "restem" / "iter_1.parquet",
                data / "models" / "dropped" / "restem" / "iter_1" / "config.json",
                data / "reports" / "dropped" / "restem" / "iter_1.json",
                data / "reports" / "dropped" / "shared" / "base.json",
            ):
                assert path.is_file(), path

            # 3. early stopping, by the daemon too: a "stop" decision recorded on iter_1/eval_report
            decision = _wait_for(
                "the early-stopping decision", lambda: _decision(instance, "dropped"), daemon, log, deadline
            )
            assert decision["restem/decision"] == "stop" and decision["restem/margin"] == 1.0
            assert decision["restem/compared_with"] == "baselines/base_eval_report"
            assert len(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": "dropped"}))) == 1
            assert not instance.has_dynamic_partition("problem_set", "broken")
    finally:
        try:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=30)
        except ProcessLookupError:
            pass
