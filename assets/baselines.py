"""The paper's comparison points: the base model's own evaluation, and SFT on human solutions."""

import dagster as dg

from assets.common import base_model_path, load_problems, progress_logger, stage_model_path
from assets.ingest import base_model, problem_set
from assets.partitions import problem_sets
from assets.reports import evaluation_result
from resources import ExperimentResource, SamplerResource, StorageResource, TrainerResource
from restem_pipeline.stages import fine_tune, human_solution_rows


@dg.asset(
    key=dg.AssetKey(["baselines", "base_eval_report"]),
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
    root = storage.root()
    problems = load_problems(storage, name)
    rows = human_solution_rows(problems)
    if rows.is_empty():
        raise dg.Failure(f"problem set {name!r} has no human solutions to fine-tune on")
    root.write_table(rows, "training_set", name, "sft")
    out = root.model_dir(name, "sft")
    stats = fine_tune(
        base_model_path(storage, experiment, name),
        problems,
        rows,
        out,
        trainer.train_config(experiment.seed),
        experiment.few_shot,
        progress_logger(context, "fine-tuning on human solutions"),
        trainer.device,
    )
    return dg.MaterializeResult(
        metadata={
            "examples": len(rows),
            "steps": stats.steps,
            "first_loss": stats.first_loss,
            "final_loss": stats.final_loss,
            "path": dg.MetadataValue.path(str(out)),
        }
    )


@dg.asset(
    key=dg.AssetKey(["baselines", "sft_eval_report"]),
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
