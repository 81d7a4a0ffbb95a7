"""The paper's comparison points: the base model's own evaluation, and SFT on human solutions."""

import dagster as dg

from assets.common import base_model_path, fine_tune_result, load_problems, settled, stage_model_path
from assets.ingest import base_model, problem_set
from assets.partitions import problem_sets
from assets.reports import evaluation_result
from resources import ExperimentResource, SamplerResource, StorageResource, TrainerResource
from restem_pipeline.stages import human_solution_rows


@dg.asset(
    key=dg.AssetKey(["baselines", "base_eval_report"]),
    pool="restem_gpu",
    deps=[base_model, problem_set],
    partitions_def=problem_sets,
    group_name="baselines",
    kinds={"pytorch", "duckdb"},
    description="Held-out evaluation of the base model (iteration 0).",
)
def base_eval_report(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    experiment: ExperimentResource,
    sampler: SamplerResource,
) -> dg.MaterializeResult:
    model = base_model_path(storage, experiment, context.partition_key)
    return evaluation_result(context, storage, experiment, sampler, "base", model)


@dg.asset(
    key=dg.AssetKey(["baselines", "sft_baseline"]),
    pool="restem_gpu",
    deps=[base_model, problem_set],
    partitions_def=problem_sets,
    group_name="baselines",
    kinds={"pytorch", "huggingface"},
    description="SFT baseline: the base model fine-tuned on one human solution per train problem.",
)
def sft_baseline(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    experiment: ExperimentResource,
    trainer: TrainerResource,
) -> dg.MaterializeResult:
    name = context.partition_key
    rows = human_solution_rows(load_problems(storage, name))
    if rows.is_empty():
        raise dg.Failure(f"problem set {name!r} has no human solutions to fine-tune on")
    storage.root().write_table(rows, "training_set", name, "sft")
    if experiment.sft_learning_rate:  # tuned on validation (studies/tune_sft.py); else the trainer's
        trainer = settled(trainer, {"learning_rate": experiment.sft_learning_rate})
    return fine_tune_result(context, storage, experiment, trainer, rows, "sft", experiment.seed, experiment.sft_epochs)


@dg.asset(
    key=dg.AssetKey(["baselines", "sft_eval_report"]),
    pool="restem_gpu",
    deps=[sft_baseline, problem_set],
    partitions_def=problem_sets,
    group_name="baselines",
    kinds={"pytorch", "duckdb"},
    description="Held-out evaluation of the SFT baseline.",
)
def sft_eval_report(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    experiment: ExperimentResource,
    sampler: SamplerResource,
) -> dg.MaterializeResult:
    model = stage_model_path(storage.root(), context.partition_key, "sft")
    return evaluation_result(context, storage, experiment, sampler, "sft", model)
