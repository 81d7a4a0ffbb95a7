"""The ReST-EM loop as an asset factory: five assets per iteration t, partitioned by problem set.

    iter_t/raw_samples      <- iter_{t-1}/checkpoint (base_model for t = 1), problem_set
    iter_t/verified_samples <- iter_t/raw_samples, problem_set
    iter_t/training_set     <- iter_t/verified_samples
    iter_t/checkpoint       <- iter_t/training_set, base_model   (ReST-EM: always from the base;
                               iter_{t-1}/checkpoint instead with init_from="previous", i.e. ReST)
    iter_t/eval_report      <- iter_t/checkpoint, problem_set

Dagster rejects cycles and self-dependencies across non-time partitions, so each iteration gets
its own asset keys (grouped ``iteration_t``); the lineage graph then shows the loop unrolled.
"""

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.common import (
    base_model_path,
    fine_tune_result,
    load_problems,
    md_table,
    progress_logger,
    run_prompter,
    stage_model_path,
)
from assets.ingest import base_model, problem_set
from assets.partitions import problem_sets
from assets.reports import evaluation_result, status_counts
from resources import ExperimentResource, SamplerResource, StorageResource, TrainerResource
from restem_pipeline.shards import remove_shard_dir
from restem_pipeline.stages import cap_samples, draw_samples_resumable, verify_samples


def iteration_key(t: int, name: str) -> dg.AssetKey:
    return dg.AssetKey([f"iter_{t}", name])


INIT_MODES = ("base", "previous")


def build_iteration(t: int, init_from: str = "base") -> list[dg.AssetsDefinition]:
    """The five assets of EM iteration ``t`` (1-based).

    ``init_from``: what the M-step fine-tunes: ``base`` (ReST-EM, the paper's choice) or ``previous``
    (ReST: checkpoint t-1, the base for t = 1). It is in the graph: the checkpoint's dependency says which.
    """
    if init_from not in INIT_MODES:
        raise ValueError(f"init_from must be one of {', '.join(INIT_MODES)}, got {init_from!r}")
    stage = f"iter_{t}"
    group = f"iteration_{t}"
    policy_dep = base_model.key if t == 1 else iteration_key(t - 1, "checkpoint")

    @dg.asset(
        key=iteration_key(t, "raw_samples"),
        pool="restem_gpu",
        deps=[policy_dep, problem_set.key],
        group_name=group,
        partitions_def=problem_sets,
        kinds={"pytorch", "parquet"},
        description=f"E-step {t}: N samples per train problem from "
        f"{'the base model' if t == 1 else f'checkpoint {t - 1}'} (top-k 40, T 0.7).",
    )
    def raw_samples(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        experiment: ExperimentResource,
        sampler: SamplerResource,
    ) -> dg.MaterializeResult:
        name = context.partition_key
        root = storage.root()
        model = base_model_path(storage, experiment, name) if t == 1 else stage_model_path(root, name, f"iter_{t - 1}")
        train = [p for p in load_problems(storage, name) if p.split == "train"]
        params = experiment.e_step_params(t)
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

    @dg.asset(
        key=iteration_key(t, "verified_samples"),
        pool="restem_sandbox",
        deps=[raw_samples, problem_set.key],
        group_name=group,
        partitions_def=problem_sets,
        kinds={"duckdb", "parquet"},
        description=f"Reward {t}: every raw sample scored with a status (correct / incorrect / "
        "unparseable / invalid gold / timeout; code: pass / fail / ... / infra error).",
    )
    def verified_samples(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        experiment: ExperimentResource,
        duckdb: DuckDBResource,
    ) -> dg.MaterializeResult:
        name = context.partition_key
        root = storage.root()
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
        unscored = sum(v for k, v in counts.items() if k in ("invalid_gold", "timeout", "infra_error"))
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

    @dg.asset(
        key=iteration_key(t, "training_set"),
        deps=[verified_samples],
        group_name=group,
        partitions_def=problem_sets,
        kinds={"duckdb", "parquet"},
        description=f"Filter {t}: correct samples only, at most max_per_problem per problem (seeded).",
    )
    def training_set(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        experiment: ExperimentResource,
        duckdb: DuckDBResource,
    ) -> dg.MaterializeResult:
        name = context.partition_key
        root = storage.root()
        verified = root.read_table("verified_samples", name, stage)
        kept, dropped = cap_samples(verified, experiment.max_per_problem, experiment.seed * 1000 + t)
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

    continues = init_from == "previous" and t > 1  # ReST: fine-tune checkpoint t-1, not the base

    @dg.asset(
        key=iteration_key(t, "checkpoint"),
        pool="restem_gpu",
        deps=[training_set, iteration_key(t - 1, "checkpoint") if continues else base_model.key, problem_set.key],
        group_name=group,
        partitions_def=problem_sets,
        kinds={"pytorch", "huggingface"},
        description=f"M-step {t}: fine-tune checkpoint {t - 1} (ReST, init_from=previous) on training set {t}."
        if continues
        else f"M-step {t}: fine-tune the BASE model (ReST-EM; not checkpoint {t - 1}) on training set {t}.",
    )
    def checkpoint(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        experiment: ExperimentResource,
        trainer: TrainerResource,
    ) -> dg.MaterializeResult:
        name = context.partition_key
        root = storage.root()
        rows = root.read_table("training_set", name, stage)
        if rows.is_empty():
            raise dg.Failure(f"training set {stage} of {name} is empty: no sample was verified correct")
        init = stage_model_path(root, name, f"iter_{t - 1}") if continues else None  # None: the base model
        return fine_tune_result(
            context, storage, experiment, trainer, rows, stage, experiment.seed + t, init_from=init, init_mode=init_from
        )

    @dg.asset(
        key=iteration_key(t, "eval_report"),
        pool="restem_gpu",
        deps=[checkpoint, problem_set.key],
        group_name=group,
        partitions_def=problem_sets,
        kinds={"pytorch", "duckdb"},
        description=f"Held-out evaluation of checkpoint {t}: pass@1 (greedy), pass@K, maj@K per level.",
    )
    def eval_report(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        experiment: ExperimentResource,
        sampler: SamplerResource,
    ) -> dg.MaterializeResult:
        model = stage_model_path(storage.root(), context.partition_key, stage)
        return evaluation_result(context, storage, experiment, sampler, stage, model)

    return [raw_samples, verified_samples, training_set, checkpoint, eval_report]


__all__ = ["build_iteration", "iteration_key"]
