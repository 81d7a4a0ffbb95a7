"""Resumable, exactly-once sharded work: fixed shards, each committed atomically, resumed after a crash.

The items (problem ids) are cut into shards of ``shard_size`` in id order; shard ``i`` gets its own
seed from ``(seed, i)``, so its rows do not depend on whether earlier shards were resumed. Each shard
is one Parquet file in a shard directory, committed by writing a temporary file, ``fsync``,
``os.replace`` and an ``fsync`` of the directory: a file named ``shard-NNNNN.parquet`` is whole or
absent. ``manifest.json`` holds the fingerprint of what the shards belong to (settings, problems, the
model's identity and content hash, the sample-id scheme). On start: leftover temporary files are
removed; a missing, unreadable or different manifest discards every shard (logged, with the fields
that changed); each committed shard is validated (readable, the schema, exactly the expected problem
ids, sample indices and sample ids, unique ids) before it is reused, and a corrupt or partial one is
redone, never trusted. The concatenation is checked exactly-once (every (problem, index) once, no
duplicate or missing id) before it is returned. A lock file keeps two processes out of one directory.

Not covered: what a shard's rows are (the caller's ``sample_shard``), writing the final table (the
caller's, atomically, before ``remove_shard_dir``), spreading shards over machines.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from restem_pipeline.storage.atomic import commit_file

Progress = Callable[[int, int], None]
Log = Callable[[str], None]
IdOf = Callable[[str, int], str]

MANIFEST = "manifest.json"
LOCK = ".lock"
SHARD_GLOB = "shard-*.parquet"
SHARD_SEED_SCHEME = "int.from_bytes(sha256(f'{seed}:shard:{index}')[:4], 'little')"
FORMAT = 1


class ExactlyOnceError(RuntimeError):
    """Rows are missing, duplicated or unexpected: never written, never trained on."""


class ShardDirBusy(RuntimeError):
    """Another process holds the shard directory's lock."""


@dataclass(frozen=True)
class Shard:
    index: int
    problem_ids: tuple[str, ...]
    seed: int

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}.parquet"


@dataclass
class ShardStats:
    total: int = 0
    resumed: int = 0
    sampled: int = 0
    redone: list[str] = field(default_factory=list)  # "shard-00003.parquet: <why it was not trusted>"
    stale_discarded: int = 0  # committed under a different fingerprint
    temp_removed: int = 0


def shard_seed(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"{seed}:shard:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def plan_shards(problem_ids: Sequence[str], shard_size: int, seed: int) -> list[Shard]:
    """Shards of ``shard_size`` ids in sorted order (the input order does not matter), each with its seed."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    repeated = sorted(k for k, v in Counter(problem_ids).items() if v > 1)
    if repeated:
        raise ValueError(f"problem ids must be unique; {len(repeated)} repeat, e.g. {repeated[:3]}")
    ids = sorted(problem_ids)
    starts = range(0, len(ids), shard_size)
    return [Shard(i, tuple(ids[s : s + shard_size]), shard_seed(seed, i)) for i, s in enumerate(starts)]


def digest_of(items: Iterable[str]) -> str:
    """sha256 over length-prefixed strings (so ``["ab", "c"]`` and ``["a", "bc"]`` differ)."""
    h = hashlib.sha256()
    for s in items:
        b = s.encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def model_identity(model: str | Path) -> dict:
    """Path plus a sha256 over the files of a local model directory (weights, config, tokenizer).

    A retrained checkpoint at the same path gets a different hash. A name that is not a local path
    (a hub id) is recorded by name only (``content_sha256`` None).
    """
    path = Path(model)
    if not path.exists():
        return {"path": str(model), "content_sha256": None}
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file() and p.name[0] != ".")
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            h.update(f"{f.name}\0{hashlib.file_digest(fh, 'sha256').hexdigest()}\n".encode())
    return {"path": str(path.resolve()), "files": [f.name for f in files], "content_sha256": h.hexdigest()}


def shard_problem(df: pl.DataFrame, shard: Shard, n: int, id_of: IdOf, schema: dict | None = None) -> str | None:
    """None when ``df`` holds exactly the shard's rows (each problem x ``range(n)``, right ids); else what is wrong."""
    if schema is not None and dict(df.schema) != schema:
        return f"schema {dict(df.schema)} differs from {schema}"
    missing_cols = {"sample_id", "problem_id", "sample_index"} - set(df.columns)
    if missing_cols:
        return f"missing columns {sorted(missing_cols)}"
    want = len(shard.problem_ids) * n
    if len(df) != want:
        return f"{len(df)} rows, expected {len(shard.problem_ids)} problems x {n} = {want}"
    if df["sample_id"].n_unique() != len(df):
        return f"{len(df) - df['sample_id'].n_unique()} duplicate sample ids"
    got = set(zip(df["problem_id"], df["sample_index"], df["sample_id"], strict=True))
    expected = {(p, j, id_of(p, j)) for p in shard.problem_ids for j in range(n)}
    if got != expected:
        wrong = sorted(got - expected, key=str)[:3]
        return f"{len(expected - got)} expected rows missing, {len(got - expected)} unexpected, e.g. {wrong}"
    return None


def check_exactly_once(df: pl.DataFrame, problem_ids: Sequence[str], n: int, id_of: IdOf) -> None:
    """Raise ``ExactlyOnceError`` with counts unless every (problem, index < n) is in ``df`` exactly once."""
    want = {(p, j) for p in problem_ids for j in range(n)}
    pairs = list(zip(df["problem_id"], df["sample_index"], strict=True))
    got = set(pairs)
    dup_pairs = len(pairs) - len(got)
    dup_ids = len(df) - df["sample_id"].n_unique()
    wrong_ids = sum(
        1 for p, j, s in zip(df["problem_id"], df["sample_index"], df["sample_id"], strict=True) if s != id_of(p, j)
    )
    missing, unexpected = len(want - got), len(got - want)
    if dup_pairs or dup_ids or wrong_ids or missing or unexpected:
        raise ExactlyOnceError(
            f"exactly-once violated: {len(df)} rows for {len(set(problem_ids))} problems x {n} = {len(want)} "
            f"expected; {missing} missing, {unexpected} unexpected, {dup_pairs} duplicated (problem, index) pairs, "
            f"{dup_ids} duplicated sample ids, {wrong_ids} rows whose sample id does not match the scheme"
        )


def _canonical(obj: dict) -> dict:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class ShardDir:
    """One shard directory, locked while open: manifest check, validated loads, atomic commits."""

    def __init__(self, directory: str | Path, fingerprint: dict, log: Log | None = None):
        self.directory = Path(directory)
        self.fingerprint = _canonical(fingerprint)
        self.log = log or (lambda _msg: None)
        self._lock_fd: int | None = None

    def __enter__(self) -> ShardDir:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ShardDirBusy(f"{self.directory} is in use by another process (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def committed(self) -> list[Path]:
        return sorted(self.directory.glob(SHARD_GLOB))

    def prepare(self) -> tuple[int, int]:
        """Remove temporary files; discard every shard unless the manifest matches. Returns (stale, temps)."""
        temps = list(self.directory.glob(".*.tmp"))
        for t in temps:
            t.unlink()
        if temps:
            self.log(f"removed {len(temps)} leftover temporary file(s) from an interrupted write")
        stored, why = self._stored_fingerprint()
        if stored == self.fingerprint:
            return 0, len(temps)
        old = self.committed()
        if old:
            self.log(f"{why}: discarding {len(old)} committed shard(s) in {self.directory}")
        for p in old:  # before the new manifest, so stale shards never sit under it
            p.unlink()
        manifest = {"format": FORMAT, "fingerprint": self.fingerprint}
        commit_file(self.directory, MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=2, sort_keys=True)))
        return len(old), len(temps)

    def _stored_fingerprint(self) -> tuple[dict | None, str]:
        path = self.directory / MANIFEST
        if not path.exists():
            return None, "no manifest"
        try:
            stored = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            return None, f"unreadable manifest {path} ({err})"
        fp = stored.get("fingerprint") if isinstance(stored, dict) else None
        if not isinstance(fp, dict) or stored.get("format") != FORMAT:
            return None, f"manifest {path} has no fingerprint of format {FORMAT}"
        changed = sorted(k for k in fp.keys() | self.fingerprint.keys() if fp.get(k) != self.fingerprint.get(k))
        return fp, f"fingerprint changed ({', '.join(changed)})"

    def load(self, shard: Shard, n: int, id_of: IdOf, schema: dict | None) -> tuple[pl.DataFrame | None, str | None]:
        """(the committed shard, None) when it is whole and right; (None, why) when it must be (re)done."""
        path = self.directory / shard.name
        if not path.exists():
            return None, None
        try:
            df = pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as err:
            problem = f"unreadable ({str(err).splitlines()[0][:120]})"
        else:
            problem = shard_problem(df, shard, n, id_of, schema)
            if problem is None:
                return df, None
        path.unlink()
        self.log(f"{shard.name} is not trusted and will be redone: {problem}")
        return None, f"{shard.name}: {problem}"

    def commit(self, shard: Shard, df: pl.DataFrame) -> Path:
        return commit_file(self.directory, shard.name, lambda p: df.write_parquet(p, compression="zstd"))


def run_shards(
    shard_dir: str | Path,
    fingerprint: dict,
    shards: Sequence[Shard],
    n: int,
    id_of: IdOf,
    sample_shard: Callable[[Shard, Progress | None], pl.DataFrame],
    schema: dict | None = None,
    progress: Progress | None = None,
    log: Log | None = None,
) -> tuple[pl.DataFrame, ShardStats]:
    """Every shard's rows, reusing valid committed shards and sampling (then committing) the rest.

    ``progress(done, total)`` counts rows (samples); resumed shards are reported done at once.
    The shard directory is left in place: remove it with ``remove_shard_dir`` once the caller has
    stored the result.
    """
    log = log or (lambda _msg: None)
    total_rows = sum(len(s.problem_ids) for s in shards) * n
    stats = ShardStats(total=len(shards))
    last = [-1]

    def report(done: int) -> None:
        if progress and done != last[0]:
            last[0] = done
            progress(done, total_rows)

    frames: dict[int, pl.DataFrame] = {}
    with ShardDir(shard_dir, fingerprint, log) as store:
        stats.stale_discarded, stats.temp_removed = store.prepare()
        for s in shards:
            df, why = store.load(s, n, id_of, schema)
            if df is not None:
                frames[s.index] = df
            elif why:
                stats.redone.append(why)
        stats.resumed = len(frames)
        if frames:
            log(f"resuming: {len(frames)} of {len(shards)} shards already committed")
        else:
            log(f"sampling {len(shards)} shard(s) into {store.directory}")
        done = sum(len(f) for f in frames.values())
        if done:
            report(done)
        for s in shards:
            if s.index in frames:
                continue
            inner = (lambda d, _t, base=done: report(base + d)) if progress else None
            df = sample_shard(s, inner)
            problem = shard_problem(df, s, n, id_of, schema)
            if problem:
                raise ExactlyOnceError(f"{s.name} as sampled is wrong, not committed: {problem}")
            store.commit(s, df)
            frames[s.index] = df
            stats.sampled += 1
            done += len(df)
            report(done)
    out = pl.concat([frames[s.index] for s in shards]) if shards else pl.DataFrame(schema=schema)
    check_exactly_once(out, [p for s in shards for p in s.problem_ids], n, id_of)
    return out, stats


def remove_shard_dir(shard_dir: str | Path) -> None:
    """Remove a finished shard directory (after the final table is stored); waits for no one, fails if busy."""
    path = Path(shard_dir)
    if not path.exists():
        return
    with ShardDir(path, {}):
        shutil.rmtree(path)
