"""``restem demo``: materialize experiments' graphs through Dagster and print the comparison table.

Each asset is materialized as its own Dagster run, in dependency order, against the persistent
instance in ``$DAGSTER_HOME`` (default ``./.dagster_home``), so every run and materialization is in
the UI that ``dagster dev`` serves afterwards. The code path is the one the UI uses. The console shows a
progress bar and the runs' INFO lines (``console_run_config``); Dagster's DEBUG events stay in the instance.
"""

import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

import dagster as dg
from tqdm import tqdm

from assets.definitions import all_assets, all_checks, default_resources, experiments_from
from assets.ingest import problem_set as problem_set_asset
from assets.summary import label_of, run_stages, stage_roots
from resources import DistillResource, ExperimentResource, SamplerResource, StorageResource, TrainerResource
from restem_pipeline.experiments import DEFAULT_EXPERIMENT, Experiment
from restem_pipeline.storage.tables import DataRoot

QUICK = {
    "arith_train": 40,
    "arith_validation": 20,
    "arith_test": 30,
    "samples_per_problem": 4,
    "eval_k": 4,
    "pretrain_steps": 60,
    "pretrain_pool_scale": 0.1,
    "eval_train_subset": 30,
}


# A real (pretrained, instruction-tuned) model: chat prompts, room for GSM8K's worked solutions, and
# fine-tuning settings for 135M parameters. Sizes of the full run and of --quick (a smoke test).
# The full sizes are the experiment in README "A real model" (about 40 minutes on 2 idle cores).
REAL_MODEL = {
    "experiment": {
        "max_train_problems": 64,
        "max_eval_problems": 50,
        "samples_per_problem": 8,
        "eval_k": 4,
        "eval_train_subset": 20,
        "max_new_tokens": 256,
        "verify_workers": 2,
        "sft_epochs": 3.0,
        "sft_learning_rate": 0.0,  # the trainer's (5e-5): the embedded model's tuned 1e-5 is not this model's
        # chosen on validation: on 200 GSM8K validation problems the base solved 11.5% with a correct
        # sample among 8 with 4-shot chat prompts, 4.0% zero-shot (RESULTS.md, "A real model")
        "few_shot": True,
    },
    "trainer": {"batch_size": 16, "epochs": 2.0},  # lr: the default 5e-5; max_length: the model's context
}
# --quick runs the embedded arith set with 3-shot chat prompts: a 135M model rarely solves a GSM8K
# problem in a few samples, and an empty training set stops the graph at its blocking check (as it
# should). On 20 arith validation problems the base's samples were correct 5% of the time with 3-shot
# chat prompts, 2.5% zero-shot (where 65% ran past 128 tokens). 16 problems x 8 samples: about 6 correct
# expected (a run with 4 samples found 1, then 5 in iteration 2), so the E-step finds some (scripts/probe_base.py).
REAL_MODEL_QUICK = {
    "arith_train": 40,
    "arith_validation": 20,
    "arith_test": 30,
    "max_train_problems": 16,
    "max_eval_problems": 4,
    "samples_per_problem": 8,
    "eval_k": 2,
    "eval_train_subset": 4,
    "max_new_tokens": 96,
    "sft_epochs": 1.0,
}


# The demo's sampler: a fixed memory budget (so batches do not follow free memory) and, set at run time, a fixed
# thread count (torch's own: restem's engine would otherwise pick one per decode step by timing, and bf16 sums
# differ between counts). Together: the same completions, so the same table, on every run of a machine kind.
DEMO_SAMPLER = {"memory_budget_mb": 4096.0}


def demo_sampler(sampler: dict | None = None) -> dict:
    """``DEMO_SAMPLER`` with this process's torch thread count, then ``sampler``'s settings on top."""
    import torch

    return {**DEMO_SAMPLER, "threads": torch.get_num_threads(), **(sampler or {})}


def demo_settings(model: str, quick: bool) -> dict:
    """Resource overrides and the default problem set for ``restem demo --model MODEL [--quick]``."""
    if model == "embedded":
        return {"problem_set": "arith", "experiment": dict(QUICK) if quick else {}, "trainer": {}}
    experiment = {**REAL_MODEL["experiment"], "base_model": model, **(REAL_MODEL_QUICK if quick else {})}
    trainer = {**REAL_MODEL["trainer"], **({"max_steps": 2, "batch_size": 8} if quick else {})}
    return {
        "problem_set": "arith" if quick else "gsm8k",
        "experiment": experiment,
        "trainer": trainer,
        "iterations": 2 if quick else None,
    }


def ensure_instance() -> dg.DagsterInstance:
    """The instance in ``$DAGSTER_HOME``; a new home gets the repo's dagster.yaml (concurrency pools)."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    shipped = Path(__file__).resolve().parents[1] / "dagster.yaml"
    if not (home / "dagster.yaml").exists() and shipped.is_file():
        shutil.copyfile(shipped, home / "dagster.yaml")
    return dg.DagsterInstance.get()


def ordered_keys(assets: list) -> list[dg.AssetKey]:
    graph = dg.Definitions(assets=assets, resources=default_resources()).resolve_asset_graph()
    return [k for level in graph.toposorted_asset_keys_by_level for k in sorted(level, key=str)]


def chosen_experiments(names: list[str] | None, iterations: int | None = None) -> list[Experiment]:
    """The experiment files named (default: ``restem``), ``iterations`` overriding theirs when given."""
    known = {e.name: e for e in experiments_from()}
    names = names or [DEFAULT_EXPERIMENT]
    missing = [n for n in names if n not in known]
    if missing:
        raise SystemExit(f"no experiment {missing[0]!r}; experiment files define: {', '.join(sorted(known))}")
    chosen = [known[n] for n in names]
    return [dataclasses.replace(e, iterations=iterations) for e in chosen] if iterations else chosen


def run_demo(
    problem_set: str,
    experiments: list[Experiment],
    data_root: str | None,
    overrides: dict,
    instance: dg.DagsterInstance | None = None,
    show_progress: bool = True,
    trainer: dict | None = None,
    distill: dict | None = None,
    tags: dict[str, str] | None = None,
    sampler: dict | None = None,
) -> dict:
    """Materialize ``experiments`` (and the shared assets) for ``problem_set``, one run per asset.

    The transfer sets the experiments name are ingested first (their ``problem_set`` partitions). Returns
    wall times, warnings and {label: metrics} per evaluated model.
    """
    instance = instance or ensure_instance()
    assets = all_assets(experiments)
    checks = all_checks(experiments)
    resources = {
        **default_resources(),
        "storage": StorageResource(data_root=data_root or ""),
        "experiment": ExperimentResource(**overrides),
        **({"trainer": TrainerResource(**trainer)} if trainer else {}),
        **({"distill": DistillResource(**distill)} if distill else {}),
        **({"sampler": SamplerResource(**sampler)} if sampler else {}),
    }
    tags = {"restem/demo": "true", **(tags or {})}
    targets = sorted({t for e in experiments for t in e.transfer} - {problem_set})
    instance.add_dynamic_partitions("problem_set", [problem_set, *targets])
    for target in targets:  # a transfer set's problems, before any checkpoint is evaluated on them
        dg.materialize(
            assets, selection=[problem_set_asset.key], partition_key=target, instance=instance,
            resources=resources, run_config=console_run_config(False), tags=tags,
        )  # fmt: skip
    keys = ordered_keys(assets)
    warnings: list[str] = []
    t0 = time.perf_counter()
    bar = tqdm(keys, desc="restem demo", unit="asset", file=sys.stderr, disable=not show_progress)
    seconds: dict[str, float] = {}
    for key in bar:
        bar.set_postfix_str(key.to_user_string())
        t_key = time.perf_counter()
        result = dg.materialize(
            [*assets, *checks],
            selection=[key],
            partition_key=problem_set,
            instance=instance,
            resources=resources,
            run_config=console_run_config(show_progress),
            tags=tags,
            raise_on_error=True,
        )
        seconds[key.to_user_string()] = round(time.perf_counter() - t_key, 1)
        for ev in result.get_asset_check_evaluations():
            if ev.passed:
                continue
            where = f"asset check {ev.check_name} on {key.to_user_string()}"
            if ev.severity == dg.AssetCheckSeverity.ERROR:
                raise RuntimeError(f"{where} failed: {ev.metadata}")
            warnings.append(f"{where} warns: {ev.description or ''} {ev.metadata}")
            bar.write(f"warning: {warnings[-1]}")
    wall = time.perf_counter() - t0
    root = DataRoot(data_root or None)
    metrics = {}
    for exp in experiments:
        for stage, where in stage_roots(root.of(exp.name), run_stages(exp)).items():  # base, SFT: shared
            label = label_of(exp, stage, where)
            metrics[label] = read_metrics(where, problem_set, stage)
    return {"wall_seconds": wall, "asset_seconds": seconds, "warnings": warnings, "stages": metrics}


def console_run_config(show_progress: bool) -> dict:
    """The run's console logger at INFO (the stage's progress lines), WARNING without a progress bar;
    Dagster's DEBUG events are still stored in the instance and shown in the UI."""
    level = "INFO" if show_progress else "WARNING"
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def read_metrics(root: DataRoot, problem_set: str, stage: str) -> dict:
    import json

    return json.loads(root.report_path(problem_set, stage, ".json").read_text())["metrics"]


def _pct(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return "" if value is None or value != value else f"{100 * value:.1f}%"


def comparison_markdown(record: dict) -> str:
    """The demo's table (markdown) and its verdict line, from a ``restem demo`` record (``demo_record``).

    One row per evaluated model; then the iteration validation picks, per experiment, with its validation
    pass@1 against the base's, and its test pass@1 against the base's and SFT's, in points, with what one
    test problem is worth. The README's table and the
    docs' are this function's output for the committed record (``tests/test_docs.py``).
    """
    k, stages = record["k"], record["stages"]
    cols = [
        ("test pass@1", "test/pass@1"), (f"test pass@{k}", f"test/pass@{k}_sampled"),
        (f"test maj@{k}", f"test/maj@{k}"), ("val pass@1", "validation/pass@1"), ("train pass@1", "train/pass@1"),
    ]  # fmt: skip
    lines = ["| model | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---:|" * len(cols)]
    lines += [f"| {label} | " + " | ".join(_pct(m, key) for _, key in cols) + " |" for label, m in stages.items()]
    for exp in record["experiments"]:
        iters = [(label, m) for label, m in stages.items() if label.startswith(f"{exp}/iter_")]
        scored = [(label, m) for label, m in iters if m.get("validation/pass@1") is not None]
        if not scored or "base" not in stages:
            continue
        label, best = max(scored, key=lambda lm: (lm[1]["validation/pass@1"], -int(lm[0].rsplit("_", 1)[1])))
        gains = [
            f"{100 * (best['test/pass@1'] - stages[other]['test/pass@1']):+.1f} points over {name}"
            for other, name in (("base", "the base"), ("sft", "SFT"))
            if other in stages
        ]
        n = int(stages["base"].get("test/scored_problems") or 0)
        worth = f" ({n} test problems: one is {100 / n:.2f} points)" if n else ""
        val = best["validation/pass@1"] - (stages["base"].get("validation/pass@1") or 0.0)
        picked = f"Validation picks {label} (validation pass@1 {100 * val:+.1f} points vs the base)"
        lines += ["", f"{picked}: test pass@1 " + ", ".join(gains) + worth + "."]
    return "\n".join(lines)


def demo_record(model: str, problem_set: str, experiments: list[Experiment], quick: bool, k: int, out: dict,
                settings: dict) -> dict:  # fmt: skip
    """What ``restem demo --json`` writes: the run's settings (resolved resources), metrics and wall times."""
    return {
        "model": model,
        "problem_set": problem_set,
        "experiments": {e.name: e.iterations for e in experiments},
        "quick": quick,
        "k": k,
        "settings": settings,
        **out,
    }
