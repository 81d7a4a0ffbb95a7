"""Orchestration overhead: one ReST-EM iteration's five stages through Dagster vs the same calls made directly.

Like for like: both sides take their sampler, trainer and experiment settings from **one** resource
dict (``assets.definitions.default_resources()`` with this run's storage, experiment and trainer, and a
fixed sampler memory budget), and the direct side calls exactly what the asset bodies call, with the
arguments they derive from those resources:

- ``raw_samples``: ``SamplerResource.sampler(...)`` (the deployment's default backend: restem's
  ``CachedSampler``, ``dtype="auto"``, bf16 on a CPU with native bf16) and ``stages.draw_samples_resumable``
  with the run's prompter, ``e_step_params(1)`` and ``shard_size`` (shards written and removed on both sides);
- ``verified_samples``: ``stages.verify_samples`` with ``verify_timeout_s`` / ``verify_workers``;
- ``training_set``: ``stages.cap_samples`` with the asset's seed (``seed * 1000 + 1``);
- ``checkpoint``: ``stages.fine_tune`` with ``TrainerResource.train_config(seed + 1)`` (packed, bf16 autocast
  where native), the run's prompter, device and validation fraction;
- ``eval_report``: ``SamplerResource.sampler(...)`` on the new checkpoint and ``evaluate`` with
  ``eval_config(prompter)``.

The problems are the ``problem_set`` partition as Dagster stored it (materialized untimed in every round),
so both sides see the same problems in the same order. After every round the script **asserts** that the
two sides produced the same raw samples (every completion), the same verdicts, the same training set,
bit-identical checkpoint weights and the same evaluation samples. For that the whole process runs with
``--threads`` torch threads (default 1): restem's bf16 engine reproduces a completion only with the same
batches and thread count, and its ``ThreadTuner`` would otherwise pick per step by timing; the memory
budget is pinned (``SamplerResource.memory_budget_mb``) so that batches do not depend on free memory.
With ``--threads`` > 1 the equality is reported, not asserted.

What the ratio then measures is orchestration alone: the Dagster side's time includes run start-up,
resource building, asset checks, Parquet writes and reads between stages and DuckDB summaries; the direct
side keeps tables in memory. Rounds (``--rounds``, default 2; 1 with --quick) alternate which side runs
first, each with fresh output directories and a fresh ephemeral instance, and every stage's faster round
is kept (noise on a shared machine only slows a run down). Not measured: a multi-process executor, a
persistent instance (its event log database), the Dagster webserver or daemon.

    python benchmarks/bench_pipeline.py [--quick] [--rounds N] [--threads N]

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
import polars as pl
import torch
from safetensors.torch import load_file

from assets.common import load_problems, run_prompter, settled
from assets.definitions import all_assets, all_checks, default_resources
from resources import ExperimentResource, StorageResource, TrainerResource
from restem_pipeline.data import arith
from restem_pipeline.evaluation.evaluate import evaluate
from restem_pipeline.experiments import Experiment, train_subset
from restem_pipeline.generation.modeling import TinyLlamaSpec
from restem_pipeline.stages import (
    BaseModelConfig,
    build_base_model,
    cap_samples,
    draw_samples_resumable,
    fine_tune,
    verify_samples,
)
from restem_pipeline.storage.shards import remove_shard_dir
from restem_pipeline.training.finetune import TrainConfig

STAGES = ["raw_samples", "verified_samples", "training_set", "checkpoint", "eval_report"]
PROBLEM_SET, STAGE = "bench", "iter_1"
MEMORY_BUDGET_MB = 2048.0  # pinned: the default (half of the free memory) could change batches between sides
EXPERIMENT = Experiment("restem", iterations=1)


def direct(resources: dict, problems, out: Path) -> tuple[dict[str, float], dict]:
    """The five stages through ``restem_pipeline`` calls: (seconds per stage, outputs)."""
    storage: StorageResource = resources["storage"]
    exp: ExperimentResource = settled(resources["experiment"], EXPERIMENT.overrides("experiment"))
    trainer: TrainerResource = settled(resources["trainer"], EXPERIMENT.overrides("trainer"))
    sampler_res = resources["sampler"]
    base = exp.base_model  # a path: the asset's base_model_path() returns it as given
    times, outputs = {}, {}
    t = time.perf_counter()
    prompter = run_prompter(storage, exp, PROBLEM_SET)
    train = [p for p in problems if p.split == "train"]
    if EXPERIMENT.train_fraction < 1.0:
        keep = train_subset([p.id for p in train], EXPERIMENT.train_fraction, exp.seed)
        train = [p for p in train if p.id in keep]
    smp = sampler_res.sampler(base, stop=prompter.stop(train[0]))
    shard_dir = out / "shards"
    raw, _ = draw_samples_resumable(
        smp, train, exp.e_step_params(1), PROBLEM_SET, STAGE, base, shard_dir, exp.shard_size, prompter
    )
    remove_shard_dir(shard_dir)
    times["raw_samples"] = time.perf_counter() - t
    outputs["sampler"] = {"class": type(smp).__name__, "dtype": str(getattr(smp, "dtype", "float32"))}
    t = time.perf_counter()
    ver = verify_samples(raw, problems, exp.verify_timeout_s, exp.verify_workers)
    times["verified_samples"] = time.perf_counter() - t
    t = time.perf_counter()
    kept, _ = cap_samples(ver, exp.max_per_problem, exp.seed * 1000 + 1)
    times["training_set"] = time.perf_counter() - t
    t = time.perf_counter()
    ckpt = out / "checkpoint"
    stats = fine_tune(
        base,
        problems,
        kept,
        ckpt,
        trainer.train_config(exp.seed + 1),
        prompter,
        None,
        trainer.device,
        validation_fraction=trainer.validation_fraction,
    )
    times["checkpoint"] = time.perf_counter() - t
    outputs["trainer"] = {"dtype": stats.dtype, "packing": stats.packing, "steps": stats.steps}
    t = time.perf_counter()
    cfg = exp.eval_config(prompter)
    tuned = sampler_res.sampler(str(ckpt), stop=cfg.prompter.stop(problems[0]))
    samples, _ = evaluate(tuned, problems, cfg)
    times["eval_report"] = time.perf_counter() - t
    outputs.update(raw=raw, verified=ver, kept=kept, checkpoint=ckpt, eval=samples)
    return times, outputs


def materialize(resources: dict, instance, key: dg.AssetKey) -> None:
    exps = [EXPERIMENT]
    dg.materialize(
        [*all_assets(exps), *all_checks(exps)],
        selection=[key],
        partition_key=PROBLEM_SET,
        instance=instance,
        resources=resources,
    )


def stored_problems(resources: dict) -> tuple:
    """A fresh ephemeral instance with this data root's ``problem_set`` partition materialized (untimed)."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("problem_set", [PROBLEM_SET])
    materialize(resources, instance, dg.AssetKey("problem_set"))
    return instance, load_problems(resources["storage"], PROBLEM_SET)


def through_dagster(resources: dict, instance) -> tuple[dict[str, float], dict]:
    """One materialization (one run) per asset of ``restem/iter_1``: (seconds per stage, outputs)."""
    times = {}
    for stage in STAGES:
        t = time.perf_counter()
        materialize(resources, instance, dg.AssetKey([EXPERIMENT.name, STAGE, stage]))
        times[stage] = time.perf_counter() - t
    root = resources["storage"].root(EXPERIMENT.name)
    outputs = {
        "raw": root.read_table("raw_samples", PROBLEM_SET, STAGE),
        "verified": root.read_table("verified_samples", PROBLEM_SET, STAGE),
        "kept": root.read_table("training_set", PROBLEM_SET, STAGE),
        "checkpoint": root.model_dir(PROBLEM_SET, STAGE),
        "eval": root.read_table("eval_samples", PROBLEM_SET, STAGE),
    }
    return times, outputs


def _rows(df: pl.DataFrame, cols: list[str], key: list[str]) -> list[tuple]:
    return df.select(cols).sort(key).rows()


def compare(a: dict, b: dict) -> dict[str, str]:
    """Per stage: 'identical' or what differs between two sides' outputs."""
    out = {}
    raw_cols = ["sample_id", "problem_id", "completion", "num_tokens", "finished", "seed"]
    ra, rb = _rows(a["raw"], raw_cols, ["sample_id"]), _rows(b["raw"], raw_cols, ["sample_id"])
    same = sum(x == y for x, y in zip(ra, rb, strict=False))
    out["raw_samples"] = "identical" if ra == rb else f"{same}/{max(len(ra), len(rb))} samples equal"
    ver_cols = ["sample_id", "status", "reward", "answer"]
    va, vb = _rows(a["verified"], ver_cols, ["sample_id"]), _rows(b["verified"], ver_cols, ["sample_id"])
    out["verified_samples"] = "identical" if va == vb else "verdicts differ"
    ka, kb = sorted(a["kept"]["sample_id"].to_list()), sorted(b["kept"]["sample_id"].to_list())
    out["training_set"] = "identical" if ka == kb else f"{len(ka)} vs {len(kb)} rows, {len(set(ka) & set(kb))} shared"
    wa, wb = (
        load_file(str(a["checkpoint"] / "model.safetensors")),
        load_file(str(b["checkpoint"] / "model.safetensors")),
    )
    gap = max((float((wa[k] - wb[k]).abs().max()) for k in wa), default=0.0) if wa.keys() == wb.keys() else None
    out["checkpoint"] = "identical" if gap == 0.0 else f"weights differ (max |diff| {gap})"
    ev_cols = [
        c for c in ("split", "kind", "problem_id", "sample_index", "completion", "status") if c in a["eval"].columns
    ]
    key = [c for c in ("split", "kind", "problem_id", "sample_index") if c in ev_cols]
    ea, eb = _rows(a["eval"], ev_cols, key), _rows(b["eval"], ev_cols, key)
    out["eval_report"] = (
        "identical" if ea == eb else f"{sum(x == y for x, y in zip(ea, eb, strict=False))}/{len(ea)} equal"
    )
    return out


def resources_for(data_root: Path, exp: ExperimentResource, trainer: TrainerResource) -> dict:
    """The one resource dict both sides take their settings from."""
    base = default_resources()
    return {
        **base,
        "storage": StorageResource(data_root=str(data_root)),
        "experiment": exp,
        "trainer": trainer,
        "sampler": settled(base["sampler"], {"memory_budget_mb": MEMORY_BUDGET_MB}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None, help="rounds, alternating which side runs first (default 2)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads for the whole process, both sides (default 1)"
    )
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 2)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sizes = (60, 20, 40) if args.quick else (300, 100, 200)
    load_start = [round(x, 2) for x in os.getloadavg()]
    direct_runs: list[dict[str, float]] = []
    dagster_runs: list[dict[str, float]] = []
    checks: list[dict[str, str]] = []
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
        exp = ExperimentResource(
            base_model=str(base),
            samples_per_problem=4 if args.quick else 8,
            eval_k=4,
            eval_train_subset=40 if args.quick else 100,
            max_new_tokens=64,
        )
        trainer = TrainerResource(epochs=1.0)
        sampler_resource: dict = {}
        parameters = sum(t.numel() for t in load_file(str(base / "model.safetensors")).values())
        for r in range(rounds):
            data_root = tmp / f"round{r}" / "data"
            (data_root / "problem_sets").mkdir(parents=True)
            with open(data_root / "problem_sets" / f"{PROBLEM_SET}.jsonl", "w") as f:
                for p in problems:
                    f.write(json.dumps(p.to_row()) + "\n")
            resources = resources_for(data_root, exp, trainer)
            sampler_resource = sampler_resource or resources["sampler"].model_dump()
            instance, stored = stored_problems(resources)
            sides = ["direct", "dagster"] if r % 2 == 0 else ["dagster", "direct"]
            outs = {}
            for side in sides:
                print(f"round {r + 1}: {side} ...", file=sys.stderr)
                if side == "direct":
                    d, outs["direct"] = direct(resources, stored, tmp / f"round{r}" / "direct")
                    direct_runs.append(d)
                else:
                    g, outs["dagster"] = through_dagster(resources, instance)
                    dagster_runs.append(g)
            check = compare(outs["direct"], outs["dagster"])
            checks.append(check)
            print(f"round {r + 1}: direct vs Dagster outputs: {check}", file=sys.stderr)
            used = {"sampler": outs["direct"]["sampler"], "trainer": outs["direct"]["trainer"]}
            if args.threads == 1:
                bad = {k: v for k, v in check.items() if v != "identical"}
                assert not bad, f"direct and Dagster sides did not do the same work: {bad}"
    d = {s: min(run[s] for run in direct_runs) for s in STAGES}
    g = {s: min(run[s] for run in dagster_runs) for s in STAGES}
    print(
        f"\nOne ReST-EM iteration, embedded task ({sizes[0]}/{sizes[1]}/{sizes[2]} problems), a "
        f"{parameters / 1e6:.2f}M-parameter TinyLlamaSpec base; sampler {used['sampler']['class']} "
        f"({used['sampler']['dtype']}), trainer {used['trainer']['dtype']} packed={used['trainer']['packing']}; "
        f"{args.threads} torch thread(s); "
        f"best of {rounds} round(s)"
    )
    print(f"{'stage':<18}{'direct s':>10}{'dagster s':>11}{'ratio':>8}  outputs")
    for s in STAGES:
        same = "identical" if all(c[s] == "identical" for c in checks) else "; ".join(c[s] for c in checks)
        print(f"{s:<18}{d[s]:>10.2f}{g[s]:>11.2f}{g[s] / d[s]:>8.2f}  {same}")
    td, tg = sum(d.values()), sum(g.values())
    print(f"{'one iteration':<18}{td:>10.2f}{tg:>11.2f}{tg / td:>8.2f}")
    load_end = [round(x, 2) for x in os.getloadavg()]
    print(f"load average: start {load_start}, end {load_end}")
    print(
        json.dumps(
            {
                "quick": args.quick,
                "rounds": rounds,
                "threads": args.threads,
                "problems": {"train": sizes[0], "validation": sizes[1], "test": sizes[2]},
                "model_parameters": parameters,
                "sampler": used["sampler"],
                "sampler_resource": {
                    k: sampler_resource[k] for k in ("backend", "dtype", "batch_size", "memory_budget_mb")
                },
                "trainer": used["trainer"],
                "direct_s": {k: round(v, 3) for k, v in d.items()},
                "dagster_s": {k: round(v, 3) for k, v in g.items()},
                "direct_s_all_rounds": {k: [round(run[k], 3) for run in direct_runs] for k in STAGES},
                "dagster_s_all_rounds": {k: [round(run[k], 3) for run in dagster_runs] for k in STAGES},
                "outputs_identical": all(v == "identical" for c in checks for v in c.values()),
                "output_checks": checks,
                "overhead_ratio": round(tg / td, 3),
                "overhead_s_per_asset": round((tg - td) / len(STAGES), 3),
                "load_average": {"start": load_start, "end": load_end},
            }
        )
    )


if __name__ == "__main__":
    main()
