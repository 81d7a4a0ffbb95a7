"""Distillation as an asset variant (paper Figure 6): a bigger teacher samples, the base model learns.

    distill/teacher_model       <- problem_set                 (embedded bigger tiny Llama, or a named model)
    distill/teacher_eval_report <- distill/teacher_model, problem_set
    distill/raw_samples         <- distill/teacher_model, problem_set   (E-step from the TEACHER)
    distill/verified_samples    <- distill/raw_samples, problem_set
    distill/training_set        <- distill/verified_samples
    distill/checkpoint          <- distill/training_set, base_model, problem_set   (the STUDENT: the base)
    distill/eval_report         <- distill/checkpoint, problem_set

Group ``distillation``, partitioned by problem set; storage stages ``teacher`` (model, report) and
``distill`` (tables, student checkpoint, report). The E-step, reward, cap and fine-tuning settings and
seeds are iteration 1's, so ``distill`` differs from ``iter_1`` only in the model that was sampled.
The stage bodies call the same core functions as ``assets/iteration.py`` (draw_samples_resumable,
verify_samples, cap_samples, fine_tune_result, evaluation_result); ``sampled_result``,
``verified_result`` and ``training_set_result`` are written stage-generic so the iterations can share
them later. Not covered: asset checks on the distillation tables, logit distillation.
"""

import dagster as dg
import polars as pl

from assets.common import (
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
from resources import DistillResource, ExperimentResource, SamplerResource, StorageResource, TrainerResource
from restem_pipeline.modeling import load_tokenizer
from restem_pipeline.sampling import SamplingParams
from restem_pipeline.shards import remove_shard_dir
from restem_pipeline.stages import build_base_model, cap_samples, draw_samples_resumable, verify_samples

GROUP = "distillation"
STAGE = "distill"
TEACHER_STAGE = "teacher"
SETTINGS_OF_ITERATION = 1  # E-step / cap / fine-tune seeds: the same as iter_1's
UNSCORED = ("invalid_gold", "timeout", "infra_error")


def distill_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["distill", name])


def teacher_model_path(storage: StorageResource, distill: DistillResource, problem_set: str) -> str:
    if distill.uses_embedded_teacher:
        return stage_model_path(storage.root(), problem_set, TEACHER_STAGE)
    return distill.teacher_model


def sampled_result(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    experiment: ExperimentResource,
    sampler: SamplerResource,
    stage: str,
    model: str,
    params: SamplingParams,
) -> dg.MaterializeResult:
    """E-step: ``params.n`` samples per train problem from ``model``, sharded and resumable, stored."""
    name = context.partition_key
    root = storage.root()
    train = [p for p in load_problems(storage, name) if p.split == "train"]
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
    remove_shard_dir(shard_dir)  # only once the table is stored
    return dg.MaterializeResult(
        metadata={
            "samples": len(df),
            "problems": len(train),
            "samples_per_problem": params.n,
            "shards_resumed": shards.resumed,
            "finished_fraction": float(df["finished"].mean()),
            "mean_tokens": float(df["num_tokens"].mean()),
            "policy_model": model,
            "path": dg.MetadataValue.path(str(path)),
        }
    )


def verified_result(
    context: dg.AssetExecutionContext, storage: StorageResource, experiment: ExperimentResource, stage: str
) -> dg.MaterializeResult:
    """Reward: every raw sample of ``stage`` scored with a status; per-level solve rates as metadata."""
    name = context.partition_key
    root = storage.root()
    raw = root.read_table("raw_samples", name, stage)
    df = verify_samples(raw, load_problems(storage, name), experiment.verify_timeout_s, experiment.verify_workers)
    path = root.write_table(df, "verified_samples", name, stage)
    per_level = (
        df.group_by("level")
        .agg(
            pl.len().alias("samples"),
            pl.col("reward").mean().alias("reward"),
            pl.col("problem_id").filter(pl.col("reward") == 1.0).n_unique().alias("problems_solved"),
            pl.col("problem_id").n_unique().alias("problems"),
        )
        .sort("level")
    )
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


def training_set_result(
    context: dg.AssetExecutionContext, storage: StorageResource, experiment: ExperimentResource, stage: str, seed: int
) -> dg.MaterializeResult:
    """Filter: correct samples only, at most ``max_per_problem`` per problem (seeded); drops kept with reasons."""
    name = context.partition_key
    root = storage.root()
    kept, dropped = cap_samples(root.read_table("verified_samples", name, stage), experiment.max_per_problem, seed)
    path = root.write_table(kept, "training_set", name, stage)
    root.write_table(dropped, "dropped_samples", name, stage)
    per_problem = kept.group_by("problem_id").len()["len"]
    reasons = {r["drop_reason"]: int(r["len"]) for r in dropped.group_by("drop_reason").len().iter_rows(named=True)}
    if kept.is_empty():
        context.log.warning("no correct samples: the training set is empty")
    return dg.MaterializeResult(
        metadata={
            "examples": len(kept),
            "problems_covered": len(per_problem),
            "max_per_problem_observed": int(per_problem.max() or 0),
            "cap": experiment.max_per_problem,
            "dropped": len(dropped),
            **{f"dropped/{k}": v for k, v in sorted(reasons.items())},
            "path": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(
    key=distill_key("teacher_model"),
    pool="restem_gpu",
    deps=[problem_set],
    group_name=GROUP,
    partitions_def=problem_sets,
    kinds={"pytorch", "huggingface"},
    description="The teacher: a bigger tiny Llama than the base, pretrained here on the same pool "
    "(DistillResource), or a named Hugging Face model.",
)
def teacher_model(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    experiment: ExperimentResource,
    distill: DistillResource,
) -> dg.MaterializeResult:
    name = context.partition_key
    path = teacher_model_path(storage, distill, name)
    if not distill.uses_embedded_teacher:
        try:
            tok = load_tokenizer(path)
        except (OSError, ValueError) as err:
            raise dg.Failure(f"teacher_model {path!r} cannot be loaded: {err}") from err
        return dg.MaterializeResult(metadata={"model": path, "vocab_size": len(tok), "built_here": False})
    exclude = {p.prompt for p in load_problems(storage, name)}
    cfg = distill.teacher_config(experiment.base_model_config())
    stats = build_base_model(
        storage.root().model_dir(name, TEACHER_STAGE), exclude, cfg, progress_logger(context, "pretraining teacher")
    )
    return dg.MaterializeResult(
        metadata={
            **{k: (float(v) if isinstance(v, float) else v) for k, v in stats.items()},
            "model": dg.MetadataValue.path(path),
            "built_here": True,
            "architecture": f"Llama, hidden {cfg.spec.hidden_size}, {cfg.spec.num_layers} layers",
        }
    )


@dg.asset(
    key=distill_key("teacher_eval_report"),
    pool="restem_gpu",
    deps=[teacher_model, problem_set],
    group_name=GROUP,
    partitions_def=problem_sets,
    kinds={"pytorch", "duckdb"},
    description="Held-out evaluation of the teacher itself (the ceiling the student is distilled towards).",
)
def teacher_eval_report(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    experiment: ExperimentResource,
    sampler: SamplerResource,
    distill: DistillResource,
) -> dg.MaterializeResult:
    model = teacher_model_path(storage, distill, context.partition_key)
    return evaluation_result(context, storage, experiment, sampler, TEACHER_STAGE, model)


@dg.asset(
    key=distill_key("raw_samples"),
    pool="restem_gpu",
    deps=[teacher_model, problem_set],
    group_name=GROUP,
    partitions_def=problem_sets,
    kinds={"pytorch", "parquet"},
    description="E-step from the teacher: N samples per train problem, iteration 1's settings and seed.",
)
def distill_raw_samples(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    experiment: ExperimentResource,
    sampler: SamplerResource,
    distill: DistillResource,
) -> dg.MaterializeResult:
    model = teacher_model_path(storage, distill, context.partition_key)
    params = experiment.e_step_params(SETTINGS_OF_ITERATION)
    return sampled_result(context, storage, experiment, sampler, STAGE, model, params)


@dg.asset(
    key=distill_key("verified_samples"),
    pool="restem_sandbox",
    deps=[distill_raw_samples, problem_set],
    group_name=GROUP,
    partitions_def=problem_sets,
    kinds={"parquet"},
    description="Reward: every teacher sample scored with a status, as in the iterations.",
)
def distill_verified_samples(
    context: dg.AssetExecutionContext, storage: StorageResource, experiment: ExperimentResource
) -> dg.MaterializeResult:
    return verified_result(context, storage, experiment, STAGE)


@dg.asset(
    key=distill_key("training_set"),
    deps=[distill_verified_samples],
    group_name=GROUP,
    partitions_def=problem_sets,
    kinds={"parquet"},
    description="Filter: correct teacher samples only, at most max_per_problem per problem (seeded).",
)
def distill_training_set(
    context: dg.AssetExecutionContext, storage: StorageResource, experiment: ExperimentResource
) -> dg.MaterializeResult:
    return training_set_result(context, storage, experiment, STAGE, experiment.seed * 1000 + SETTINGS_OF_ITERATION)


@dg.asset(
    key=distill_key("checkpoint"),
    pool="restem_gpu",
    deps=[distill_training_set, base_model, problem_set],
    group_name=GROUP,
    partitions_def=problem_sets,
    kinds={"pytorch", "huggingface"},
    description="The student: the BASE model fine-tuned on the teacher's verified samples.",
)
def distill_checkpoint(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    experiment: ExperimentResource,
    trainer: TrainerResource,
    distill: DistillResource,
) -> dg.MaterializeResult:
    name = context.partition_key
    rows = storage.root().read_table("training_set", name, STAGE)
    if rows.is_empty():
        raise dg.Failure(f"distillation training set of {name} is empty: no teacher sample was verified correct")
    result = fine_tune_result(
        context, storage, experiment, trainer, rows, STAGE, experiment.seed + SETTINGS_OF_ITERATION
    )
    teacher = teacher_model_path(storage, distill, name)
    return dg.MaterializeResult(metadata={**(result.metadata or {}), "teacher": teacher})


@dg.asset(
    key=distill_key("eval_report"),
    pool="restem_gpu",
    deps=[distill_checkpoint, problem_set],
    group_name=GROUP,
    partitions_def=problem_sets,
    kinds={"pytorch", "duckdb"},
    description="Held-out evaluation of the distilled student: pass@1 (greedy), pass@K, maj@K per level.",
)
def distill_eval_report(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    experiment: ExperimentResource,
    sampler: SamplerResource,
) -> dg.MaterializeResult:
    model = stage_model_path(storage.root(), context.partition_key, STAGE)
    return evaluation_result(context, storage, experiment, sampler, STAGE, model)


DISTILL_ASSETS = [
    teacher_model,
    teacher_eval_report,
    distill_raw_samples,
    distill_verified_samples,
    distill_training_set,
    distill_checkpoint,
    distill_eval_report,
]


def distill_assets() -> list[dg.AssetsDefinition]:
    """The ``distillation`` group, for ``assets/definitions.py``."""
    return list(DISTILL_ASSETS)


__all__ = ["DISTILL_ASSETS", "distill_assets", "distill_key", "teacher_model_path"]
