"""Does training on lucky answers cost ReST-EM its gain? The M-step of iteration 1, with and without them.

For each seed root of ``restem experiment paper`` on the embedded arith task, this takes the stored
training set of ReST-EM iteration 1 (the E-step's verified samples, capped: what the pipeline's M-step
trained on) and fine-tunes the base model twice, with the pipeline's own functions and settings
(``stages.fine_tune`` with ``TrainerResource().train_config(seed + 1)``, the seed root's prompts): on
every row (``answer``: the binary reward as the paper has it) and on the rows that also work the
problem's own steps (``right_steps``: ``arith.right_steps``; a reward the task cannot give in general).
Each model is scored greedily on validation and test (``evaluation.evaluate``, the pipeline's sampler and
verifier) beside the stored ``restem/iter_1`` report, which the ``answer`` model should match.

Not covered: later iterations (their samples come from models trained on lucky answers), sampled
metrics, other tasks. The chosen variant would be the one with the better *validation* pass@1; test is
reported for both, as measured.

Prints a table and, as its last line, one JSON object with per-seed numbers and the paired difference
(right_steps - answer) as mean ± standard error over the seeds.

    python studies/why_lucky.py data/paper/embedded --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.common import load_problems, run_prompter  # noqa: E402
from assets.paper_run import EMBEDDED_PAPER  # noqa: E402
from assets.reports import stored_report  # noqa: E402
from resources import ExperimentResource, SamplerResource, StorageResource, TrainerResource  # noqa: E402
from restem_pipeline.data.arith import right_steps  # noqa: E402
from restem_pipeline.evaluation.evaluate import evaluate, headline  # noqa: E402
from restem_pipeline.stages import fine_tune  # noqa: E402
from restem_pipeline.storage.tables import DataRoot  # noqa: E402

SET = "arith"


def run_seed(paper_root: Path, seed: int, first: int, work: Path) -> dict:
    root = paper_root / f"seed_{seed}"
    base = DataRoot(paper_root / f"seed_{first}").model_dir(SET, "base")
    storage = StorageResource(data_root=str(root))
    experiment = ExperimentResource(**EMBEDDED_PAPER, seed=seed, data_seed=first, base_model=str(base))
    problems = load_problems(storage, SET)
    prompter = run_prompter(storage, experiment, SET)
    rows = DataRoot(root).of("restem").read_table("training_set", SET, "iter_1")
    text = {p.id: p.prompt for p in problems}
    right = pl.Series([right_steps(text[i], c) for i, c in zip(rows["problem_id"], rows["completion"], strict=True)])
    cfg = dataclasses.replace(experiment.eval_config(prompter), k=1, train_subset=0)
    held_out = [p for p in problems if p.split in ("validation", "test")]
    stored = stored_report(DataRoot(root).of("restem"), SET, "iter_1")["metrics"]
    out = {"stored_answer": {k: stored[k] for k in ("validation/pass@1", "test/pass@1")}, "rows": {}}
    for variant, keep in (("answer", None), ("right_steps", right)):
        train = rows if keep is None else rows.filter(keep)
        t0 = time.perf_counter()
        model_dir = work / f"seed_{seed}" / variant
        fine_tune(base, problems, train, model_dir, TrainerResource().train_config(seed + 1), prompter)
        smp = SamplerResource().sampler(str(model_dir), stop=prompter.stop(problems[0]))
        _, summary = evaluate(smp, held_out, cfg)
        metrics = headline(summary, cfg)
        out[variant] = {k: metrics[k] for k in ("validation/pass@1", "test/pass@1")}
        out["rows"][variant] = train.height
        print(f"seed {seed} {variant}: {train.height} rows, {out[variant]} ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paper_root", type=Path, help="the folder of seed_<s> roots (data/paper/embedded)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("data/why_lucky"), help="checkpoints go here")
    args = parser.parse_args(argv)
    per_seed = {s: run_seed(args.paper_root, s, args.seeds[0], args.work) for s in args.seeds}
    print(f"{'seed':>4} {'rows answer':>12} {'rows right':>11} {'val answer':>11} {'val right':>10} "
          f"{'test answer':>12} {'test right':>11} {'test stored':>12}")  # fmt: skip
    for s, r in per_seed.items():
        print(f"{s:>4} {r['rows']['answer']:>12} {r['rows']['right_steps']:>11} "
              f"{r['answer']['validation/pass@1']:>11.3f} {r['right_steps']['validation/pass@1']:>10.3f} "
              f"{r['answer']['test/pass@1']:>12.3f} {r['right_steps']['test/pass@1']:>11.3f} "
              f"{r['stored_answer']['test/pass@1']:>12.3f}")  # fmt: skip
    diffs = {}
    for metric in ("validation/pass@1", "test/pass@1"):
        d = [100 * (r["right_steps"][metric] - r["answer"][metric]) for r in per_seed.values()]
        se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else None
        diffs[metric] = {"per_seed": [round(x, 1) for x in d], "mean": round(statistics.fmean(d), 2),
                         "se": None if se is None else round(se, 2)}  # fmt: skip
    print(json.dumps({"paper_root": str(args.paper_root), "seeds": args.seeds, "per_seed": per_seed,
                      "right_minus_answer_points": diffs}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
