"""Helpers shared by the asset modules: progress logging and loading a partition's problems."""

import time
from collections.abc import Callable

import dagster as dg
import polars as pl

from resources import ExperimentResource, StorageResource, TrainerResource
from restem_pipeline.stages import fine_tune, problems_from_frame
from restem_pipeline.storage import DataRoot


def progress_logger(context: dg.AssetExecutionContext, label: str, every: float = 0.1) -> Callable[..., None]:
    """A callback ``(done, total, *extra)`` that logs about every ``every`` of the way."""
    state = {"next": 0.0, "t0": time.perf_counter()}

    def log(done: int, total: int, *extra: float) -> None:
        frac = done / max(total, 1)
        if frac >= state["next"] or done == total:
            state["next"] = frac + every
            tail = f", loss {extra[0]:.3f}" if extra else ""
            context.log.info(f"{label}: {done}/{total} ({frac:.0%}) in {time.perf_counter() - state['t0']:.0f}s{tail}")

    return log


def stage_progress(context: dg.AssetExecutionContext) -> Callable[[str, int, int], None]:
    loggers: dict[str, Callable[..., None]] = {}

    def log(label: str, done: int, total: int) -> None:
        loggers.setdefault(label, progress_logger(context, label, every=0.25))(done, total)

    return log


def load_problems(storage: StorageResource, problem_set: str):
    return problems_from_frame(storage.root().read_table("problems", problem_set, "ingest"))


def base_model_path(storage: StorageResource, experiment: ExperimentResource, problem_set: str) -> str:
    if experiment.uses_embedded_model:
        return str(storage.root().model_dir(problem_set, "base"))
    return experiment.base_model


def stage_model_path(root: DataRoot, problem_set: str, stage: str) -> str:
    return str(root.model_dir(problem_set, stage))


def md_table(df: pl.DataFrame, float_fmt: str = "{:.3f}") -> str:
    cols = df.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.iter_rows():
        cells = [float_fmt.format(v) if isinstance(v, float) else ("" if v is None else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fine_tune_result(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    experiment: ExperimentResource,
    trainer: TrainerResource,
    rows: pl.DataFrame,
    stage: str,
    seed: int,
    epochs: float | None = None,
) -> dg.MaterializeResult:
    """Fine-tune the base model on ``rows`` into ``models/<set>/<stage>`` and report it."""
    name = context.partition_key
    base = base_model_path(storage, experiment, name)
    out = storage.root().model_dir(name, stage)
    stats = fine_tune(
        base,
        load_problems(storage, name),
        rows,
        out,
        trainer.train_config(seed, epochs),
        experiment.few_shot,
        progress_logger(context, f"fine-tuning {stage}"),
        trainer.device,
    )
    return dg.MaterializeResult(
        metadata={
            "init_from": base,
            "examples": len(rows),
            "steps": stats.steps,
            "tokens": stats.tokens,
            "first_loss": stats.first_loss,
            "final_loss": stats.final_loss,
            "path": dg.MetadataValue.path(str(out)),
        }
    )
