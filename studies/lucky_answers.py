"""How many correct arith samples (an E-step's, or a model's test answers) reach the right answer by wrong steps.

ReST-EM's reward is binary on the final answer. On the embedded arith task answers are small integers
(at most ``MAX_VALUE`` = 60), so a sample whose steps are wrong can still land on the right number, and
the M-step then trains on it. For each data root given (a ``restem experiment paper`` seed root, a demo
root), this reads ``verified_samples`` of one experiment and stage (or, with ``--table eval_samples``,
its greedy test answers: how much of pass@1 is right steps), reads each problem's steps back from
its words (``arith.parse_problem``) and counts, per level, the correct samples and those among them that
work the problem's own steps (``arith.right_steps``: the same equations, in order).

Not covered: other problem sets (their problems cannot be read back), the samples' reward (read as
stored), what the model learned from them (the evaluation reports say that).

Prints one table per root and, as its last line, one JSON object:
``{"roots": {root: {level: {"samples": s, "correct": n, "right_steps": m}}}, ...}``.

    python studies/lucky_answers.py data/paper/embedded/seed_0 --experiment restem --stage iter_1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restem_pipeline.data.arith import right_steps  # noqa: E402
from restem_pipeline.storage.tables import SHARED, DataRoot  # noqa: E402

TABLES = ("verified_samples", "eval_samples")


def lucky_table(root: Path, problem_set: str, experiment: str, stage: str, table: str = TABLES[0]) -> pl.DataFrame:
    """Per level: samples, correct ones, and how many of those work the problem's own steps."""
    data = DataRoot(root)
    samples = data.of(experiment).read_table(table, problem_set, stage)
    if table == "eval_samples":  # the greedy test completions: pass@1 and its right-steps part
        samples = samples.filter((pl.col("split") == "test") & (pl.col("kind") == "greedy"))
    counts = samples.group_by("level").agg(pl.len().alias("samples"))
    problems = (
        data.of(SHARED).read_table("problems", problem_set, "ingest").select(pl.col("id").alias("problem_id"), "prompt")
    )
    correct = samples.filter(pl.col("reward") > 0).join(problems, on="problem_id", how="left")
    missing = correct.filter(pl.col("prompt").is_null())
    if missing.height:
        sample = missing["sample_id"][0]
        raise SystemExit(f"{root}: verified sample {sample!r}: its problem is not in the problems table")
    right = [right_steps(p, c) for p, c in zip(correct["prompt"], correct["completion"], strict=True)]
    return (
        correct.with_columns(pl.Series("right_steps", right, dtype=pl.Boolean))
        .group_by("level")
        .agg(pl.len().alias("correct"), pl.col("right_steps").sum().alias("right_steps"))
        .join(counts, on="level", how="right")
        .fill_null(0)
        .select("level", "samples", "correct", "right_steps")
        .sort("level")
        .with_columns((1 - pl.col("right_steps") / pl.col("correct")).round(3).alias("lucky_share"))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", type=Path, help="data roots (e.g. data/paper/embedded/seed_0)")
    parser.add_argument("--problem-set", default="arith")
    parser.add_argument("--experiment", default="restem")
    parser.add_argument("--stage", default="iter_1")
    parser.add_argument("--table", choices=TABLES, default=TABLES[0], help="eval_samples: the greedy test answers")
    args = parser.parse_args(argv)
    out = {}
    for root in args.roots:
        table = lucky_table(root, args.problem_set, args.experiment, args.stage, args.table)
        print(f"\n{root} ({args.table}, {args.experiment}/{args.stage}):")
        print(table)
        rows = table.iter_rows(named=True)
        keep = ("samples", "correct", "right_steps")
        out[str(root)] = {str(r["level"]): {k: r[k] for k in keep} for r in rows}
    last = {"problem_set": args.problem_set, "table": args.table, "experiment": args.experiment, "stage": args.stage}
    last["roots"] = out
    print(json.dumps(last))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
