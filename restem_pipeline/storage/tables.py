"""Where everything lives under one data root, atomic Parquet writes, and SQL over all of it.

Layout (``$RESTEM_DATA_ROOT``, default ``./data``)::

    tables/<table>/<problem_set>/<experiment>/<stage>.parquet  # problems, raw_samples, verified_samples, ...
    models/<problem_set>/<experiment>/<stage>/                 # base, sft, iter_1, teacher... (HF format)
    reports/<problem_set>/<experiment>/<stage>.{json,md}       # evaluation reports
    shards/<table>/<problem_set>/<experiment>/<stage>/         # a stage's committed shards while it runs

``<experiment>`` is an experiment's name (``experiments/*.yaml``), or ``shared`` for what every
experiment reads (the problems, the base model, the base and SFT baselines). A ``DataRoot`` is bound
to one experiment (``DataRoot(path, experiment)``, ``root.of(experiment)``). Every row carries
``problem_set``, ``experiment`` and ``stage`` columns, so ``restem sql`` can query one view per table
across all problem sets, experiments and iterations. Writes go to a temporary file then ``os.replace``, so
a crash never leaves half a table and a failed write loses nothing already stored.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import duckdb
import polars as pl

TABLES = (
    "problems",
    "raw_samples",
    "verified_samples",
    "training_set",
    "dropped_samples",
    "eval_samples",
    "eval_summary",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def default_data_root() -> Path:
    return Path(os.environ.get("RESTEM_DATA_ROOT", "data")).resolve()


SHARED = "shared"  # the experiment of what all experiments share: problems, base model, baselines


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{kind} {value!r} must be letters, digits, '_', '.', '-' (no slashes or spaces)")
    return value


class DataRoot:
    def __init__(self, root: str | Path | None = None, experiment: str = SHARED):
        self.root = Path(root).resolve() if root else default_data_root()
        self.experiment = check_name("experiment", experiment)

    def of(self, experiment: str) -> DataRoot:
        """The same data root, bound to ``experiment`` (``SHARED`` for the problems, base model, baselines)."""
        return DataRoot(self.root, experiment)

    def _place(self, *kind: str, problem_set: str) -> Path:
        """``<root>/<kind...>/<problem_set>/<experiment>``."""
        return self.root.joinpath(*kind) / check_name("problem set", problem_set) / self.experiment

    def table_path(self, table: str, problem_set: str, stage: str) -> Path:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; tables are {', '.join(TABLES)}")
        return self._place("tables", table, problem_set=problem_set) / f"{check_name('stage', stage)}.parquet"

    def model_dir(self, problem_set: str, stage: str) -> Path:
        return self._place("models", problem_set=problem_set) / check_name("stage", stage)

    def shard_dir(self, table: str, problem_set: str, stage: str) -> Path:
        """Where a stage's committed shards live until its table is stored (see ``shards``)."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; tables are {', '.join(TABLES)}")
        return self._place("shards", table, problem_set=problem_set) / check_name("stage", stage)

    def report_path(self, problem_set: str, stage: str, suffix: str) -> Path:
        return self._place("reports", problem_set=problem_set) / f"{check_name('stage', stage)}{suffix}"

    def write_table(self, df: pl.DataFrame, table: str, problem_set: str, stage: str) -> Path:
        df = df.with_columns(
            pl.lit(problem_set).alias("problem_set"),
            pl.lit(self.experiment).alias("experiment"),
            pl.lit(stage).alias("stage"),
        )
        path = self.table_path(table, problem_set, stage)
        write_parquet_atomic(df, path)
        return path

    def read_table(self, table: str, problem_set: str, stage: str) -> pl.DataFrame:
        path = self.table_path(table, problem_set, stage)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: materialize {table} for {problem_set}/{stage} first")
        return pl.read_parquet(path)

    def write_json(self, obj: dict, problem_set: str, stage: str) -> Path:
        path = self.report_path(problem_set, stage, ".json")
        write_text_atomic(json.dumps(obj, indent=2, sort_keys=True), path)
        return path


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        df.write_parquet(tmp, compression="zstd")
        with open(tmp, "rb") as f:  # durable before it replaces the old table (and before shards are removed)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def register_views(con: duckdb.DuckDBPyConnection, root: DataRoot) -> list[str]:
    """One view per table that has data: ``SELECT * FROM verified_samples`` spans every run."""
    made = []
    for table in TABLES:
        pattern = root.root / "tables" / table / "*" / "*" / "*.parquet"
        if any((root.root / "tables" / table).glob("*/*/*.parquet")):
            con.execute(
                f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet('{pattern}', union_by_name=true)"
            )
            made.append(table)
    return made


def query(sql: str, root: DataRoot | None = None) -> pl.DataFrame:
    con = duckdb.connect(":memory:")
    try:
        register_views(con, root or DataRoot())
        return con.sql(sql).pl()
    finally:
        con.close()


def run_sql_command(args) -> int:
    root = DataRoot(args.data_root)
    try:
        df = query(args.query, root)
    except duckdb.Error as err:
        con = duckdb.connect(":memory:")
        views = register_views(con, root)
        print(
            f"restem sql: {err}\nviews under {root.root}: {', '.join(views) or 'none (run restem demo first)'}",
            file=sys.stderr,
        )
        return 2
    if args.format == "csv":
        sys.stdout.write(df.write_csv())
    elif args.format == "json":
        sys.stdout.write(df.write_ndjson())
    else:
        with pl.Config(tbl_rows=200, tbl_cols=30, fmt_str_lengths=60, tbl_hide_dataframe_shape=False):
            print(df)
    return 0
