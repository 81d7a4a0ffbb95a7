"""The bodies of one sample -> verify -> cap chain, for any experiment's iteration.

Each takes the run's settings (the deployment's resources with the experiment's overrides applied,
``assets/experiment.py``) and a ``DataRoot`` bound to the experiment, stores its table and returns the
asset's ``MaterializeResult``. The M-step and the evaluation are ``common.fine_tune_result`` and
``reports.evaluation_result``. Not covered: which model samples or is fine-tuned (the factory decides).
"""

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.common import load_problems, md_table, progress_logger, run_prompter
from assets.reports import status_counts
from resources import ExperimentResource, SamplerResource, StorageResource
from restem_pipeline.experiments import train_subset
from restem_pipeline.generation.sampling import SamplingParams
from restem_pipeline.rewards.verdicts import UNSCORED
from restem_pipeline.stages import cap_samples, draw_samples_resumable, verify_samples
from restem_pipeline.storage.shards import remove_shard_dir
from restem_pipeline.storage.tables import DataRoot


def sample_result(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    root: DataRoot,
    experiment: ExperimentResource,
    sampler: SamplerResource,
    stage: str,
    model: str,
    params: SamplingParams,
    train_fraction: float = 1.0,
) -> dg.MaterializeResult:
    """E-step: ``params.n`` samples per train problem (a seeded ``train_fraction`` of them) from ``model``."""
    name = context.partition_key
    train = [p for p in load_problems(storage, name) if p.split == "train"]
    if train_fraction < 1.0:
        keep = train_subset([p.id for p in train], train_fraction, experiment.seed)
        train = [p for p in train if p.id in keep]
    prompter = run_prompter(storage, experiment, name)
    smp = sampler.sampler(model, stop=prompter.stop(train[0]))
    context.log.info(f"sampling {params.n} x {len(train)} problems from {model}")
    shard_dir = root.shard_dir("raw_samples", name, stage)
    df, shards = draw_samples_resumable(
        smp,
        train,
        params,
        name,
        stage,
        model,
        shard_dir,
        experiment.shard_size,
        prompter,
        progress_logger(context, "sampling"),
        context.log.info,
    )
    path = root.write_table(df, "raw_samples", name, stage)
    remove_shard_dir(shard_dir)  # only once the table is stored: a crash before this resumes from the shards
    return dg.MaterializeResult(
        metadata={
            "samples": len(df),
            "problems": len(train),
            "train_fraction": train_fraction,
            "samples_per_problem": params.n,
            "prompt_style": prompter.name,
            "shards": shards.total,
            "shards_resumed": shards.resumed,
            "shards_redone": len(shards.redone),
            "finished_fraction": float(df["finished"].mean()),
            "mean_tokens": float(df["num_tokens"].mean()),
            "policy_model": model,
            "path": dg.MetadataValue.path(str(path)),
        }
    )


def verify_result(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    root: DataRoot,
    experiment: ExperimentResource,
    duckdb: DuckDBResource,
    stage: str,
) -> dg.MaterializeResult:
    """Reward: every raw sample scored with a status; per-level solve rates as metadata."""
    name = context.partition_key
    raw = root.read_table("raw_samples", name, stage)
    df = verify_samples(raw, load_problems(storage, name), experiment.verify_timeout_s, experiment.verify_workers)
    path = root.write_table(df, "verified_samples", name, stage)
    with duckdb.get_connection() as con:
        per_level = con.sql(
            "SELECT level, count(*) AS samples, avg(reward) AS reward, "
            "count(DISTINCT problem_id) FILTER (WHERE reward = 1) AS problems_solved, "
            "count(DISTINCT problem_id) AS problems FROM read_parquet($path) GROUP BY level ORDER BY level",
            params={"path": str(path)},
        ).pl()
    counts = status_counts(df)
    unscored = sum(v for k, v in counts.items() if k in UNSCORED)
    if unscored:
        context.log.warning(f"{unscored} samples could not be scored: {counts}")
    return dg.MaterializeResult(
        metadata={
            "samples": len(df),
            "reward_mean": float(df["reward"].fill_null(0).mean()),
            **{f"status/{k}": v for k, v in sorted(counts.items())},
            "unscored": unscored,
            "per_level": dg.MetadataValue.md(md_table(per_level)),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


def cap_result(
    context: dg.AssetExecutionContext,
    root: DataRoot,
    experiment: ExperimentResource,
    duckdb: DuckDBResource,
    stage: str,
    seed: int,
) -> dg.MaterializeResult:
    """Filter: correct samples only, at most ``max_per_problem`` per problem (seeded); drops kept with reasons."""
    name = context.partition_key
    verified = root.read_table("verified_samples", name, stage)
    kept, dropped = cap_samples(verified, experiment.max_per_problem, seed)
    path = root.write_table(kept, "training_set", name, stage)
    root.write_table(dropped, "dropped_samples", name, stage)
    with duckdb.get_connection() as con:
        per_problem = (
            con.sql(
                "SELECT min(n) AS min_per_problem, max(n) AS max_per_problem, avg(n) AS mean_per_problem, "
                "count(*) AS problems FROM (SELECT problem_id, count(*) AS n FROM read_parquet($path) GROUP BY 1)",
                params={"path": str(path)},
            )
            .pl()
            .row(0)
        )
    reasons = {r["drop_reason"]: int(r["len"]) for r in dropped.group_by("drop_reason").len().iter_rows(named=True)}
    if kept.is_empty():
        context.log.warning("no correct samples: the training set is empty")
    return dg.MaterializeResult(
        metadata={
            "examples": len(kept),
            "problems_covered": int(per_problem[3] or 0),
            "max_per_problem_observed": int(per_problem[1] or 0),
            "cap": experiment.max_per_problem,
            "mean_per_problem": float(per_problem[2] or 0.0),
            "dropped": len(dropped),
            **{f"dropped/{k}": v for k, v in sorted(reasons.items())},
            "path": dg.MetadataValue.path(str(path)),
        }
    )
