"""Atomic Parquet tables under one data root, and DuckDB SQL over every problem set and stage."""

import argparse

import polars as pl
import pytest

from restem_pipeline.storage import tables as storage


def test_write_read_and_query_across_sets_and_stages(tmp_path):
    root = storage.DataRoot(tmp_path)
    for ps in ("a", "b"):
        for t in (1, 2):
            df = pl.DataFrame({"sample_id": [f"{ps}{t}x", f"{ps}{t}y"], "reward": [1.0, 0.0 if t == 1 else 1.0]})
            root.of("restem").write_table(df, "verified_samples", ps, f"iter_{t}")
    back = root.of("restem").read_table("verified_samples", "a", "iter_2")
    assert back.columns == ["sample_id", "reward", "problem_set", "experiment", "stage"]
    out = storage.query(
        "SELECT stage, sum(reward) AS r, count(*) AS n FROM verified_samples GROUP BY 1 ORDER BY 1", root
    )
    assert out.to_dicts() == [{"stage": "iter_1", "r": 2.0, "n": 4}, {"stage": "iter_2", "r": 4.0, "n": 4}]


def test_failed_write_keeps_the_previous_table(tmp_path, monkeypatch):
    root = storage.DataRoot(tmp_path)
    path = root.write_table(pl.DataFrame({"x": [1]}), "raw_samples", "a", "iter_1")

    def boom(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        root.write_table(pl.DataFrame({"x": [2]}), "raw_samples", "a", "iter_1")
    assert pl.read_parquet(path)["x"].to_list() == [1]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


@pytest.mark.parametrize("bad", ["../x", "a b", "", "a/b"])
def test_names_are_checked(tmp_path, bad):
    with pytest.raises(ValueError, match="problem set"):
        storage.DataRoot(tmp_path).of("restem").table_path("raw_samples", bad, "iter_1")


def test_unknown_table_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown table 'samples'"):
        storage.DataRoot(tmp_path).of("restem").table_path("samples", "a", "iter_1")


def test_sql_command_output_and_errors(tmp_path, capsys):
    root = storage.DataRoot(tmp_path)
    root.write_table(pl.DataFrame({"status": ["correct", "timeout"]}), "verified_samples", "a", "iter_1")
    args = argparse.Namespace(
        query="SELECT status FROM verified_samples ORDER BY 1", data_root=str(tmp_path), format="csv"
    )
    assert storage.run_sql_command(args) == 0
    assert capsys.readouterr().out.splitlines() == ["status", "correct", "timeout"]
    args.query = "SELECT * FROM nope"
    assert storage.run_sql_command(args) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "verified_samples" in err
