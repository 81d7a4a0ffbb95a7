"""How many of an E-step's verified samples on arith reach the right answer by a wrong chain of steps.

ReST-EM's reward is binary on the final answer. On the embedded arith task answers are small integers
(at most ``MAX_VALUE`` = 60), so a sample whose steps are wrong can still land on the right number, and
the M-step then trains on it. For each data root given (a ``restem experiment paper`` seed root, a demo
root), this reads ``verified_samples`` of one experiment and stage, reads each problem's steps back from
its words (``arith.parse_problem``) and counts, per level, the correct samples and those among them that
work the problem's own steps (``arith.right_steps``: the same equations, in order).

Not covered: other problem sets (their problems cannot be read back), the samples' reward (read as
stored), what the model learned from them (the evaluation reports say that).

Prints one table per root and, as its last line, one JSON object:
``{"roots": {root: {level: {"correct": n, "right_steps": m}}}}``.

    python scripts/lucky_answers.py data/paper/embedded/seed_0 --experiment restem --stage iter_1
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


def lucky_table(root: Path, problem_set: str, experiment: str, stage: str) -> pl.DataFrame:
    """Per level: correct samples, and how many of them work the problem's own steps."""
    data = DataRoot(root)
    samples = data.of(experiment).read_table("verified_samples", problem_set, stage)
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
        correct.with_columns(pl.Series("right_steps", right))
        .group_by("level")
        .agg(pl.len().alias("correct"), pl.col("right_steps").sum().alias("right_steps"))
        .sort("level")
        .with_columns((1 - pl.col("right_steps") / pl.col("correct")).round(3).alias("lucky_share"))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", type=Path, help="data roots (e.g. data/paper/embedded/seed_0)")
    parser.add_argument("--problem-set", default="arith")
    parser.add_argument("--experiment", default="restem")
    parser.add_argument("--stage", default="iter_1")
    args = parser.parse_args(argv)
    out = {}
    for root in args.roots:
        table = lucky_table(root, args.problem_set, args.experiment, args.stage)
        print(f"\n{root} ({args.experiment}/{args.stage}):")
        print(table)
        rows = table.iter_rows(named=True)
        out[str(root)] = {str(r["level"]): {"correct": r["correct"], "right_steps": r["right_steps"]} for r in rows}
    last = {"problem_set": args.problem_set, "experiment": args.experiment, "stage": args.stage, "roots": out}
    print(json.dumps(last))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
