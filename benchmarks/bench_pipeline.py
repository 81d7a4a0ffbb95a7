"""Orchestration overhead: one ReST-EM iteration's stages through Dagster vs the same calls directly.

Both sides use the same base model, problems and settings in one process run. The direct side
calls ``restem_pipeline.stages`` / ``evaluation`` functions; the Dagster side materializes the
``restem/iter_1/*`` assets one run each (as ``restem demo`` does) on an ephemeral instance, so its time
includes run start-up, resource building, Parquet round trips and DuckDB summaries.

    python benchmarks/bench_pipeline.py [--quick]

Prints a table, then one JSON line with the figures (last line).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from assets.definitions import all_assets, all_checks, default_resources
from resources import ExperimentResource, StorageResource, TrainerResource
from restem_pipeline.data import arith
from restem_pipeline.data.prompts import TEMPLATES, TEXT_PROMPTS
from restem_pipeline.evaluation.evaluate import evaluate
from restem_pipeline.experiments import Experiment
from restem_pipeline.generation.modeling import TinyLlamaSpec
from restem_pipeline.generation.sampling import TransformersSampler
from restem_pipeline.stages import (
    BaseModelConfig,
    build_base_model,
    cap_samples,
    draw_samples,
    fine_tune,
    verify_samples,
)
from restem_pipeline.training.finetune import TrainConfig

STAGES = ["raw_samples", "verified_samples", "training_set", "checkpoint", "eval_report"]


def direct(problems, base: Path, exp: ExperimentResource, trainer: TrainerResource, out: Path) -> dict[str, float]:
    times = {}
    train = [p for p in problems if p.split == "train"]
    t = time.perf_counter()
    sampler = TransformersSampler(base, stop=TEMPLATES["arith"].stop)
    raw = draw_samples(sampler, train, exp.e_step_params(1), "bench", "iter_1", str(base))
    times["raw_samples"] = time.perf_counter() - t
    t = time.perf_counter()
    ver = verify_samples(raw, problems)
    times["verified_samples"] = time.perf_counter() - t
    t = time.perf_counter()
    kept, _ = cap_samples(ver, exp.max_per_problem, 1)
    times["training_set"] = time.perf_counter() - t
    t = time.perf_counter()
    fine_tune(base, problems, kept, out / "direct_ckpt", trainer.train_config(exp.seed + 1))
    times["checkpoint"] = time.perf_counter() - t
    t = time.perf_counter()
    tuned = TransformersSampler(out / "direct_ckpt", stop=TEMPLATES["arith"].stop)
    evaluate(tuned, problems, exp.eval_config(TEXT_PROMPTS))
    times["eval_report"] = time.perf_counter() - t
    return times


def through_dagster(data_root: Path, exp: ExperimentResource, trainer: TrainerResource) -> dict[str, float]:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("problem_set", ["bench"])
    exps = [Experiment("restem", iterations=1)]
    assets, checks = all_assets(exps), all_checks(exps)
    resources = {
        **default_resources(),
        "storage": StorageResource(data_root=str(data_root)),
        "experiment": exp,
        "trainer": trainer,
    }
    dg.materialize(
        [*assets, *checks],
        selection=[dg.AssetKey("problem_set")],
        partition_key="bench",
        instance=instance,
        resources=resources,
    )
    times = {}
    for stage in STAGES:
        t = time.perf_counter()
        dg.materialize(
            [*assets, *checks],
            selection=[dg.AssetKey(["restem", "iter_1", stage])],
            partition_key="bench",
            instance=instance,
            resources=resources,
        )
        times[stage] = time.perf_counter() - t
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sizes = (60, 20, 40) if args.quick else (300, 100, 200)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        problems = arith.embedded_problem_set(0, *sizes)
        base = tmp / "base"
        cfg = BaseModelConfig(
            spec=TinyLlamaSpec(),
            pool_per_level=(800, 800, 400, 200, 200),
            pretrain=TrainConfig(max_steps=40 if args.quick else 150, batch_size=64, learning_rate=2e-3),
        )
        print(f"building a base model ({cfg.pretrain.max_steps} steps) ...", file=sys.stderr)
        build_base_model(base, {p.prompt for p in problems}, cfg)
        data_root = tmp / "data"
        (data_root / "problem_sets").mkdir(parents=True)
        with open(data_root / "problem_sets" / "bench.jsonl", "w") as f:
            for p in problems:
                f.write(json.dumps(p.to_row()) + "\n")
        exp = ExperimentResource(
            base_model=str(base),
            samples_per_problem=4 if args.quick else 8,
            eval_k=4,
            eval_train_subset=40 if args.quick else 100,
            max_new_tokens=64,
        )
        trainer = TrainerResource(epochs=1.0)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        d = direct(problems, base, exp, trainer, tmp)
        g = through_dagster(data_root, exp, trainer)
    print(f"\n{'stage':<18}{'direct s':>10}{'dagster s':>11}{'ratio':>8}")
    for s in STAGES:
        print(f"{s:<18}{d[s]:>10.2f}{g[s]:>11.2f}{g[s] / d[s]:>8.2f}")
    td, tg = sum(d.values()), sum(g.values())
    print(f"{'one iteration':<18}{td:>10.2f}{tg:>11.2f}{tg / td:>8.2f}")
    print(
        json.dumps(
            {
                "quick": args.quick,
                "problems": {"train": sizes[0], "validation": sizes[1], "test": sizes[2]},
                "direct_s": {k: round(v, 3) for k, v in d.items()},
                "dagster_s": {k: round(v, 3) for k, v in g.items()},
                "overhead_ratio": round(tg / td, 3),
                "overhead_s_per_asset": round((tg - td) / len(STAGES), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
