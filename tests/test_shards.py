"""Resumable sharded sampling with the real tiny model: resume equals an uninterrupted run, bad shards are
redone, a changed fingerprint discards old shards, and the exactly-once check catches duplicates.

A crash is injected by a wrapper that lets the real sampler run a given number of shards and then raises;
the real kill of a Dagster run is in ``test_resume_kill.py``.
"""

import os
import shutil

import polars as pl
import pytest
import torch

from resources import ExperimentResource
from restem_pipeline.data.prompts import Prompter, template_for
from restem_pipeline.generation.modeling import load_model
from restem_pipeline.generation.sampling import SamplingParams, TransformersSampler
from restem_pipeline.stages import RAW_SCHEMA, draw_samples_resumable, sample_id
from restem_pipeline.storage import shards

ZERO_SHOT = Prompter("text", few_shot=False)
PARAMS = SamplingParams(n=2, max_new_tokens=24, seed=7)
SHARD_SIZE = 5


class CrashAfter:
    """The real sampler for ``calls`` shards, then a crash (one ``generate`` call per shard)."""

    def __init__(self, inner, calls: int):
        self.inner, self.left = inner, calls

    def generate(self, prompts, params, progress=None):
        if self.left == 0:
            raise RuntimeError("simulated crash")
        self.left -= 1
        return self.inner.generate(prompts, params, progress)


class DropsOne:
    """The real sampler, but the first prompt gets one completion too few."""

    def __init__(self, inner):
        self.inner = inner

    def generate(self, prompts, params, progress=None):
        out = self.inner.generate(prompts, params, progress)
        return [out[0][:-1], *out[1:]]


@pytest.fixture(scope="module")
def train(tiny_problems):
    return [p for p in tiny_problems if p.split == "train"]


@pytest.fixture(scope="module")
def sampler(tiny_base, train):
    return TransformersSampler(tiny_base, stop=template_for(train[0], False).stop)


def _draw(smp, train, shard_dir, model, params=PARAMS, shard_size=SHARD_SIZE, progress=None, log=None):
    return draw_samples_resumable(
        smp, train, params, "tiny", "iter_1", str(model), shard_dir, shard_size, ZERO_SHOT, progress, log
    )


def _stat(path):
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sampler, train, tiny_base):
    """An uninterrupted run (its shards left in place)."""
    shard_dir = tmp_path_factory.mktemp("ref") / "shards"
    df, stats = _draw(sampler, train, shard_dir, tiny_base)
    return df, stats, shard_dir


def test_plan_is_stable_and_each_shard_has_its_own_seed():
    ids = [f"p{i:02d}" for i in range(12)]
    plan = shards.plan_shards(ids, 5, seed=3)
    assert [s.problem_ids for s in plan] == [tuple(ids[0:5]), tuple(ids[5:10]), tuple(ids[10:12])]
    assert shards.plan_shards(list(reversed(ids)), 5, seed=3) == plan  # input order does not matter
    assert len({s.seed for s in plan}) == 3
    assert [s.seed for s in shards.plan_shards(ids[:7], 5, seed=3)] == [s.seed for s in plan[:2]]
    assert plan[0].seed != shards.plan_shards(ids, 5, seed=4)[0].seed
    with pytest.raises(ValueError, match="unique.*'p01'"):
        shards.plan_shards(["p01", "p02", "p01"], 5, seed=0)
    with pytest.raises(ValueError, match="shard_size must be >= 1, got 0"):
        shards.plan_shards(ids, 0, seed=0)
    with pytest.raises(ValueError, match="shard_size must be >= 1, got 0"):
        ExperimentResource(shard_size=0)


def test_uninterrupted_run_is_exactly_once_with_per_shard_seeds(reference, train):
    df, stats, shard_dir = reference
    n_shards = -(-len(train) // SHARD_SIZE)
    assert (stats.total, stats.resumed, stats.sampled) == (n_shards, 0, n_shards)
    assert len(df) == len(train) * PARAMS.n and df["sample_id"].n_unique() == len(df)
    assert set(df["sample_id"]) == {sample_id("tiny", "iter_1", p.id, j) for p in train for j in range(PARAMS.n)}
    plan = shards.plan_shards([p.id for p in train], SHARD_SIZE, PARAMS.seed)
    seeds = {pid: s.seed for s in plan for pid in s.problem_ids}
    assert df["seed"].to_list() == [seeds[pid] for pid in df["problem_id"]]
    assert len(list(shard_dir.glob("shard-*.parquet"))) == n_shards
    assert (shard_dir / "manifest.json").exists()


def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, sampler, train, tiny_base, reference):
    ref_df, ref_stats, _ = reference
    shard_dir = tmp_path / "shards"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _draw(CrashAfter(sampler, 2), train, shard_dir, tiny_base)
    committed = sorted(shard_dir.glob("shard-*.parquet"))
    assert [p.name for p in committed] == ["shard-00000.parquet", "shard-00001.parquet"]
    before = {p.name: _stat(p) for p in committed}

    log = []
    df, stats = _draw(sampler, train, shard_dir, tiny_base, log=log.append)
    assert (stats.resumed, stats.sampled) == (2, ref_stats.total - 2)
    assert f"resuming: 2 of {ref_stats.total} shards already committed" in log
    assert df.equals(ref_df)  # same ids, same completions, same order
    assert {p.name: _stat(p) for p in committed} == before  # reused, not rewritten

    # a finished directory is all reuse: the sampler is never called
    again, stats = _draw(CrashAfter(sampler, 0), train, shard_dir, tiny_base)
    assert (stats.resumed, stats.sampled) == (ref_stats.total, 0) and again.equals(ref_df)
    shards.remove_shard_dir(shard_dir)
    assert not shard_dir.exists()


def test_progress_reports_resumed_shards_at_once(tmp_path, sampler, train, tiny_base):
    shard_dir = tmp_path / "shards"
    with pytest.raises(RuntimeError):
        _draw(CrashAfter(sampler, 1), train, shard_dir, tiny_base)
    calls = []
    _draw(sampler, train, shard_dir, tiny_base, progress=lambda d, t: calls.append((d, t)))
    total = len(train) * PARAMS.n
    assert calls[0] == (SHARD_SIZE * PARAMS.n, total)
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_corrupt_partial_misplaced_and_temp_files_are_redone(tmp_path, sampler, train, tiny_base, reference):
    ref_df, ref_stats, ref_dir = reference
    shard_dir = tmp_path / "shards"
    shutil.copytree(ref_dir, shard_dir)
    s1, s2, s3 = (shard_dir / f"shard-0000{i}.parquet" for i in (1, 2, 3))
    s1.write_bytes(s1.read_bytes()[: s1.stat().st_size // 2])  # truncated mid-file
    pl.read_parquet(s2).head(-1).write_parquet(s2)  # a readable shard missing a row
    shutil.copy(shard_dir / "shard-00000.parquet", s3)  # readable, right size, wrong problems
    stray = shard_dir / ".shard-00004.parquet.x1y2.tmp"
    stray.write_bytes(b"half a parquet file")
    log = []
    df, stats = _draw(sampler, train, shard_dir, tiny_base, log=log.append)
    assert stats.sampled == 3 and stats.resumed == ref_stats.total - 3
    assert stats.temp_removed == 1 and not stray.exists()
    redone = "\n".join(stats.redone)
    assert "shard-00001.parquet: unreadable" in redone
    assert f"shard-00002.parquet: {SHARD_SIZE * PARAMS.n - 1} rows" in redone
    assert "shard-00003.parquet: " in redone and "expected rows missing" in redone
    assert any("not trusted and will be redone" in m for m in log)
    assert df.equals(ref_df)


def test_changed_settings_weights_or_manifest_discard_old_shards(tmp_path, sampler, train, tiny_base):
    model = tmp_path / "model"
    shutil.copytree(tiny_base, model)
    shard_dir = tmp_path / "shards"

    def committed():
        return len(list(shard_dir.glob("shard-*.parquet")))

    def attempt(calls: int, **kw) -> list[str]:
        """Run until the sampler has been called ``calls`` times, then crash; return the log."""
        log = []
        with pytest.raises(RuntimeError, match="simulated crash"):
            _draw(CrashAfter(sampler, calls), train, shard_dir, model, log=log.append, **kw)
        return log

    attempt(2)
    assert committed() == 2
    n_shards = -(-len(train) // SHARD_SIZE)
    assert f"resuming: 2 of {n_shards} shards already committed" in attempt(0)  # control: unchanged, reused
    assert committed() == 2

    log = attempt(0, params=SamplingParams(n=2, max_new_tokens=24, seed=8))
    assert any(m.startswith("fingerprint changed (sampling): discarding 2 committed shard(s)") for m in log)
    assert committed() == 0

    attempt(2)  # back to the first settings: a fresh start, nothing from the seed-8 manifest reused
    log = attempt(0, shard_size=4)
    assert any(m.startswith("fingerprint changed (shard_size): discarding 2") for m in log) and committed() == 0

    attempt(2)
    weights = load_model(model)
    with torch.no_grad():
        next(weights.parameters()).add_(1e-3)
    weights.save_pretrained(model)  # a retrained checkpoint at the same path
    log = attempt(0)
    assert any(m.startswith("fingerprint changed (model): discarding 2") for m in log) and committed() == 0

    attempt(2)
    (shard_dir / "manifest.json").write_text("{ not json")
    log = attempt(0)
    assert any(m.startswith("unreadable manifest") and "discarding 2" in m for m in log) and committed() == 0


def test_a_wrong_shard_from_the_sampler_is_never_committed(tmp_path, sampler, train, tiny_base):
    shard_dir = tmp_path / "shards"
    with pytest.raises(
        shards.ExactlyOnceError, match=f"shard-00000.parquet as sampled is wrong.*{SHARD_SIZE * 2 - 1} rows"
    ):
        _draw(DropsOne(sampler), train, shard_dir, tiny_base)
    assert not list(shard_dir.glob("shard-*")) and not list(shard_dir.glob(".*.tmp"))


def _frame(pairs):
    return pl.DataFrame(
        [
            {
                "sample_id": sample_id("s", "iter_1", pid, j),
                "problem_id": pid,
                "sample_index": j,
                "level": 1,
                "completion": "x",
                "num_tokens": 1,
                "finished": True,
                "model": "m",
                "seed": 0,
            }
            for pid, j in pairs
        ],
        schema=RAW_SCHEMA,
    )


def test_exactly_once_check_counts_duplicates_missing_and_wrong_ids():
    def id_of(pid, j):
        return sample_id("s", "iter_1", pid, j)

    full = [(p, j) for p in ("a", "b") for j in range(2)]
    shards.check_exactly_once(_frame(full), ["a", "b"], 2, id_of)
    with pytest.raises(shards.ExactlyOnceError, match="0 missing, 0 unexpected, 1 duplicated .* 1 duplicated sample"):
        shards.check_exactly_once(_frame([*full, ("a", 1)]), ["a", "b"], 2, id_of)
    with pytest.raises(shards.ExactlyOnceError, match="3 rows for 2 problems x 2 = 4 expected; 1 missing"):
        shards.check_exactly_once(_frame(full[:3]), ["a", "b"], 2, id_of)
    with pytest.raises(shards.ExactlyOnceError, match="1 unexpected"):
        shards.check_exactly_once(_frame([*full, ("a", 2)]), ["a", "b"], 2, id_of)
    wrong = _frame(full).with_columns(
        pl.when(pl.col("sample_index") == 0).then(pl.lit("x")).otherwise("sample_id").alias("sample_id")
    )
    with pytest.raises(shards.ExactlyOnceError, match="2 rows whose sample id does not match"):
        shards.check_exactly_once(wrong, ["a", "b"], 2, id_of)


def test_a_shard_dir_in_use_is_refused(tmp_path):
    busy = pytest.raises(shards.ShardDirBusy, match=f"in use by another process \\(pid {os.getpid()}\\)")
    with shards.ShardDir(tmp_path / "d", {"x": 1}), busy:
        shards.ShardDir(tmp_path / "d", {"x": 1}).__enter__()
    with shards.ShardDir(tmp_path / "d", {"x": 1}):  # released on exit
        pass


def test_model_identity_hashes_the_weights(tmp_path, tiny_base):
    model = tmp_path / "m"
    shutil.copytree(tiny_base, model)
    a = shards.model_identity(model)
    assert a == shards.model_identity(model) and "model.safetensors" in a["files"]
    data = bytearray((model / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (model / "model.safetensors").write_bytes(bytes(data))
    assert shards.model_identity(model)["content_sha256"] != a["content_sha256"]
    assert shards.model_identity("org/hub-model") == {"path": "org/hub-model", "content_sha256": None}
