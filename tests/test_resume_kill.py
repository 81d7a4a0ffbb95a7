"""A real Dagster run of ``iter_1/raw_samples`` killed by a real signal mid-way, then resumed.

``dagster asset materialize`` runs in its own process group (its step runs in a child process); once
at least two shards are committed and the table is not, the whole group gets SIGKILL (or SIGTERM).
Then: no table, committed shards on disk; a second run resumes them without rewriting them, and its
table has every sample id exactly once and equals an uninterrupted run's in another data root.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from restem_pipeline.data import arith
from restem_pipeline.stages import sample_id
from restem_pipeline.storage.tables import DataRoot

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SAMPLES = 32  # per problem: enough work that the kill lands between shards
SHARD_SIZE = 6
RAW = dg.AssetKey(["restem", "iter_1", "raw_samples"])


def _problems():
    return [p for p in arith.embedded_problem_set(0, 300, 10, 10) if p.level <= 2]  # 120 train problems


def _setup(tmp: Path, tiny_base: Path) -> tuple[dict, DataRoot]:
    """A data root with the problem-set file, a DAGSTER_HOME with the ``tiny`` partition, the env for runs."""
    root, home = tmp / "data", tmp / "home"
    (root / "problem_sets").mkdir(parents=True)
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with open(root / "problem_sets" / "tiny.jsonl", "w") as f:
        for p in _problems():
            f.write(json.dumps(p.to_row()) + "\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("problem_set", ["tiny"])
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "RESTEM_DATA_ROOT": str(root),
        "RESTEM_TINY_BASE": str(tiny_base),
        "RESTEM_TINY_SAMPLES_PER_PROBLEM": str(SAMPLES),
        "RESTEM_TINY_SHARD_SIZE": str(SHARD_SIZE),
    }
    return env, DataRoot(root)


def _start(env: dict, select: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-f", "tests/tiny_defs.py", "-d", "."]
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*cmd, "--select", select, "--partition", "tiny"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the step's child process is in it too
        )


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, _tail(log)


def _wait_group_gone(pgid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(pgid, signal.SIGKILL)
    raise AssertionError(f"process group {pgid} still alive {timeout}s after the signal")


def _latest_metadata(env: dict) -> dict:
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        event = instance.get_latest_materialization_event(RAW)
        assert event is not None
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_base) -> pl.DataFrame:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    env, root = _setup(tmp, tiny_base)
    log = tmp / "run.log"
    _finish(_start(env, "problem_set,base_model,restem/iter_1/raw_samples", log), log)
    assert _latest_metadata(env)["shards_resumed"] == 0
    return root.of("restem").read_table("raw_samples", "tiny", "iter_1")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_killed_run_resumes_exactly_once(tmp_path, tiny_base, uninterrupted, sig):
    env, root = _setup(tmp_path, tiny_base)
    table = root.of("restem").table_path("raw_samples", "tiny", "iter_1")
    shard_dir = root.of("restem").shard_dir("raw_samples", "tiny", "iter_1")
    n_shards = -(-120 // SHARD_SIZE)
    log = tmp_path / "run.log"

    proc = _start(env, "problem_set,base_model,restem/iter_1/raw_samples", log)
    deadline = time.monotonic() + 300
    while len(list(shard_dir.glob("shard-*.parquet"))) < 2:
        assert proc.poll() is None, f"the run ended before it could be killed:\n{_tail(log)}"
        assert time.monotonic() < deadline, f"no shard committed in 300 s:\n{_tail(log)}"
        time.sleep(0.01)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)
    _wait_group_gone(proc.pid)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL

    committed = sorted(shard_dir.glob("shard-*.parquet"))
    assert not table.exists(), "the table was written although the run was killed mid-way"
    assert 2 <= len(committed) < n_shards, [p.name for p in committed]
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in committed}
    contents = {p.name: pl.read_parquet(p) for p in committed}

    resume_log = tmp_path / "resume.log"
    proc = _start(env, "restem/iter_1/raw_samples", resume_log)
    seen: dict[str, set] = {name: set() for name in before}
    while proc.poll() is None:  # watch the pre-kill shards until the run removes the directory
        for name in before:
            try:
                st = (shard_dir / name).stat()
            except FileNotFoundError:
                continue
            seen[name].add((st.st_ino, st.st_mtime_ns))
        time.sleep(0.01)
    _finish(proc, resume_log)

    meta = _latest_metadata(env)
    assert meta["shards"] == n_shards
    assert meta["shards_resumed"] == len(committed) and meta["shards_redone"] == 0
    assert f"resuming: {len(committed)} of {n_shards} shards already committed" in resume_log.read_text()
    assert all(seen[name] <= {before[name]} for name in before), seen  # never rewritten
    assert any(seen.values()), "the resumed run was never observed with the old shards in place"
    assert not shard_dir.exists()

    final = root.of("restem").read_table("raw_samples", "tiny", "iter_1")
    train = [p.id for p in _problems() if p.split == "train"]
    assert len(final) == len(train) * SAMPLES == final["sample_id"].n_unique()
    assert set(final["sample_id"]) == {sample_id("tiny", "iter_1", p, j) for p in train for j in range(SAMPLES)}
    assert final.equals(uninterrupted)  # same ids, same completions, same seeds, same order
    for name, df in contents.items():  # what was committed before the kill is what the table holds
        assert df.join(final.select(df.columns), on=df.columns, how="anti").is_empty(), name
