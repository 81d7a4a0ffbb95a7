"""A real deployment: deploy/docker/docker-compose.yaml up, a problem set dropped in, a run in its own container.

Brings up the compose file as shipped (Postgres from Debian's package, the code location, the webserver and
the daemon, every image built on this host by ``deploy/docker/build_images.sh``) with docker-compose 1.29,
drops a problem-set file into the data volume, and only watches: the ``problem_set_sensor`` (evaluated by
the code location, ticked by the daemon) adds the partition and requests iteration 1; the daemon's
``DockerRunLauncher`` starts the run as a container of ``restem-code:local``; the run succeeds; Postgres
(queried with ``psql`` in its container) holds the run, its tags and the materializations of iteration 1.
The tiny setting runs (``TINY``, written into the data volume and named by ``RESTEM_SETTINGS``, which the
compose file hands to the code location and, through the run launcher, to the run): the embedded model,
pretrained for 300 steps, on levels 1-2 arithmetic (enough for correct samples, so the training set is
not empty: a blocking check); minutes on 2 cores with the image builds. Afterwards everything the test
started is removed (the run containers, then ``down -v``), before and after.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from restem_pipeline.data import arith

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "deploy" / "docker" / "docker-compose.yaml"
PROJECT = "restemlive"
COMPOSE_CMD = ["docker-compose", "-p", PROJECT, "-f", str(COMPOSE)]
DEADLINE_S = 1500
TINY = """\
experiment:
  samples_per_problem: 8
  max_per_problem: 2
  max_new_tokens: 40
  eval_k: 2
  eval_train_subset: 8
  max_eval_problems: 8  # also the held-out transfer set's (restem.yaml evaluates on arith_ood)
  pretrain_steps: 300
  pretrain_batch_size: 32
trainer:
  max_steps: 12
  batch_size: 8
  learning_rate: 0.002
"""
pytestmark = [pytest.mark.slow, pytest.mark.docker]


def _sh(*cmd: str, env: dict | None = None, timeout: float = 600, check: bool = True) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FIXED_NAMES = (("volume", "restem_data"), ("volume", "restem_logs"), ("network", "restem_network"))


def _remove_deployment(env: dict | None = None, check: bool = True) -> None:
    """Remove everything this test's project started, including the run launcher's containers.

    The compose file names its volumes and network for the run launcher (restem_data...), so run
    containers (not compose's: ``down`` leaves them) hold them and ``down -v`` fails while one exists,
    running or exited (an earlier run of this test that was killed, a teardown that could not reach
    Postgres). So: stop the services (the daemon launches nothing more), remove every container that
    holds one of those names, then ``down -v``. Refuses to touch names another deployment owns.
    """
    _sh(*COMPOSE_CMD, "stop", "-t", "10", env=env, check=False, timeout=300)
    for kind, name in FIXED_NAMES:
        out = subprocess.run(["docker", kind, "inspect", name], capture_output=True, text=True)
        if out.returncode != 0:
            continue
        labels = json.loads(out.stdout)[0].get("Labels") or {}
        if labels.get("com.docker.compose.project") != PROJECT:
            pytest.fail(f"docker {kind} {name} belongs to another deployment on this host ({labels}); stop it first")
        holders = _sh("docker", "ps", "-aq", "--filter", f"{kind}={name}").split()
        if holders:
            _sh("docker", "rm", "-f", *holders, check=check)
    _sh(*COMPOSE_CMD, "down", "-v", "--remove-orphans", env=env, check=check, timeout=300)
    for kind, name in FIXED_NAMES:  # left by a compose project that no longer has containers
        if subprocess.run(["docker", kind, "inspect", name], capture_output=True).returncode == 0:
            _sh("docker", kind, "rm", name, check=check)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed: run `make system` (apt-get install docker-compose)")
    _sh("bash", str(REPO / "deploy" / "docker" / "build_images.sh"), timeout=2400)
    _remove_deployment()  # leftovers of an earlier run of this test
    port = _free_port()
    env = {
        **os.environ,
        "RESTEM_POSTGRES_PASSWORD": secrets.token_hex(12),
        "RESTEM_WEB_PORT": str(port),
        "RESTEM_SETTINGS": "/data/settings/tiny.yaml",
    }
    base = COMPOSE_CMD
    # the settings go into the data volume first: the code location reads them when it loads
    write = "mkdir -p /data/settings && cat > /data/settings/tiny.yaml"
    cmd = [*base, "run", "--rm", "--no-deps", "-T", "restem_code", "sh", "-c", write]
    subprocess.run(cmd, input=TINY, text=True, env=env, check=True, timeout=300, capture_output=True)
    _sh(*base, "up", "-d", "--no-build", env=env, timeout=600)
    try:
        yield {"base": base, "env": env, "port": port}
    finally:
        logs = _sh(*base, "logs", "--no-color", "--tail", "80", env=env, check=False)
        (tmp_path_factory.getbasetemp() / "compose.log").write_text(logs)
        _remove_deployment(env, check=False)


def _psql(base: list[str], env: dict, sql: str, check: bool = True) -> list[str]:
    out = subprocess.run(
        [*base, "exec", "-T", "restem_postgres", "psql", "-U", "restem", "-d", "restem", "-At", "-c", sql],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if out.returncode != 0:
        if check:
            raise AssertionError(f"psql failed: {out.stderr[-1000:]}")
        return []
    return [line for line in out.stdout.splitlines() if line]


def _wait(what: str, check, dep: dict, deadline: float):
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(5)
    logs = _sh(*dep["base"], "logs", "--no-color", "--tail", "60", env=dep["env"], check=False)
    pytest.fail(f"timed out waiting for {what}; compose logs:\n{logs[-6000:]}")


def _web_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def test_dropped_problem_set_runs_iteration_1_in_its_own_container(deployment):
    dep, deadline = deployment, time.monotonic() + DEADLINE_S
    base, env = dep["base"], dep["env"]
    _wait("the webserver", lambda: _web_up(dep["port"]), dep, deadline)
    _wait(
        "the daemon's heartbeat in Postgres",
        lambda: _psql(base, env, "SELECT 1 FROM daemon_heartbeats", False),
        dep,
        deadline,
    )

    # a small arithmetic set, levels 1-2 (24 train, 4 validation, 4 test), written under a hidden name,
    # renamed in
    pool = [p for p in arith.embedded_problem_set(0, 60, 20, 40) if p.level <= 2]
    by_split = {s: [p for p in pool if p.split == s] for s in ("train", "validation", "test")}
    problems = by_split["train"][:24] + by_split["validation"][:4] + by_split["test"][:4]
    rows = "".join(json.dumps(p.to_row()) + "\n" for p in problems)
    drop = (
        "mkdir -p /data/problem_sets && cat > /data/problem_sets/.live.jsonl.part && "
        "mv /data/problem_sets/.live.jsonl.part /data/problem_sets/live.jsonl"
    )
    cmd = [*base, "exec", "-T", "restem_code", "sh", "-c", drop]
    subprocess.run(cmd, input=rows, text=True, env=env, check=True, timeout=60)

    run_sql = (
        "SELECT r.run_id, r.status, r.pipeline_name FROM runs r JOIN run_tags t ON r.run_id = t.run_id "
        "WHERE t.key = 'dagster/partition' AND t.value = 'live'"
    )

    def finished():
        rows = [line.split("|") for line in _psql(base, env, run_sql, check=False)]
        failed = [r for r in rows if r[1] in ("FAILURE", "CANCELED")]
        if failed:
            events = _psql(
                base,
                env,
                f"SELECT event FROM event_logs WHERE run_id = '{failed[0][0]}' "
                "AND dagster_event_type IN ('STEP_FAILURE', 'RUN_FAILURE', 'ENGINE_EVENT')",
                False,
            )
            pytest.fail(f"run {failed[0]} failed: {[e[:600] for e in events][-4:]}")
        return [r for r in rows if r[1] == "SUCCESS"]

    (run_id, status, job), *_ = _wait("a successful run for partition 'live'", finished, dep, deadline)
    assert job == "restem_iteration_1"

    # the sensor made the partition and the run (its tags, in Postgres)
    tags = dict(
        line.split("|", 1) for line in _psql(base, env, f"SELECT key, value FROM run_tags WHERE run_id = '{run_id}'")
    )
    assert tags["restem/trigger"] == "problem_set_sensor" and tags["restem/file"] == "live.jsonl"
    assert _psql(base, env, "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'problem_set'") == [
        "live"
    ]

    # the run ran in its own container, of the image built here, and exited cleanly
    cid = tags["docker/container_id"]
    info = json.loads(_sh("docker", "inspect", cid))[0]
    assert info["Config"]["Image"] == "restem-code:local" and info["State"]["ExitCode"] == 0
    assert run_id in " ".join(info["Config"]["Cmd"] or [])

    # iteration 1's materializations are in Postgres's event log (asset keys stored as JSON lists)
    sql = f"SELECT asset_key FROM event_logs WHERE run_id = '{run_id}' AND dagster_event_type = 'ASSET_MATERIALIZATION'"
    mats = set(_psql(base, env, sql))
    for key in (
        ["problem_set"],
        ["restem", "iter_1", "raw_samples"],
        ["restem", "iter_1", "training_set"],
        ["restem", "iter_1", "eval_report"],
    ):
        assert json.dumps(key) in mats, (key, mats)
