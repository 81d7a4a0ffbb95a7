"""Helpers shared by the asset modules: progress logging, loading a partition's problems, an experiment's
settings over the deployment's resources (``settled``), the M-step's result."""

import time
from collections.abc import Callable
from typing import TypeVar

import dagster as dg
import polars as pl

from resources import ExperimentResource, StorageResource, TrainerResource
from restem_pipeline.data.prompts import Prompter, resolve_style
from restem_pipeline.generation import named_models
from restem_pipeline.generation.modeling import context_length, load_tokenizer
from restem_pipeline.stages import fine_tune, problems_from_frame, training_pairs
from restem_pipeline.storage.tables import DataRoot
from restem_pipeline.training.finetune import TrainStats, held_out_mask, tokenize_pairs
from restem_pipeline.training.lengths import LengthError, check_lengths
from restem_pipeline.training.worker import MStepJob, run_job

R = TypeVar("R", bound=dg.ConfigurableResource)
# a run tag: an evaluation whose stored report has the same fingerprint (model content, prompts, settings) is
# reused, not run again; `restem experiment paper` sets it, so a seed cut short resumes
REUSE_EVALUATIONS = "restem/reuse_stored_evaluations"


def settled(resource: R, overrides: dict) -> R:
    """``resource`` with the experiment's ``overrides`` applied (validated like a new resource)."""
    if not overrides:
        return resource
    fields = {k: getattr(resource, k) for k in type(resource).model_fields}
    return type(resource)(**{**fields, **overrides})


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
    """Where the base model is: built per partition (embedded), converted once (named), or as given."""
    if experiment.uses_embedded_model:
        return str(storage.root().model_dir(problem_set, "base"))
    if named_models.is_named(experiment.base_model):
        return str(named_models.checkpoint_dir(storage.root().root, experiment.base_model))
    return experiment.base_model


def run_prompter(storage: StorageResource, experiment: ExperimentResource, problem_set: str) -> Prompter:
    """The prompts every stage of this partition uses: ``prompt_style`` resolved on the base model's tokenizer."""
    base = base_model_path(storage, experiment, problem_set)
    style = experiment.prompt_style
    if style != "text":
        style = resolve_style(style, load_tokenizer(base))
    return experiment.prompter(style, base)


def run_lengths(
    storage: StorageResource, experiment: ExperimentResource, trainer: TrainerResource, problem_set: str
) -> dict:
    """The partition's lengths on the base model's tokenizer, checked before any sampling or training.

    Raises ``dg.Failure`` naming the setting and the length it needs (``training.lengths``).
    """
    base = base_model_path(storage, experiment, problem_set)
    prompter = run_prompter(storage, experiment, problem_set)
    problems = load_problems(storage, problem_set)
    try:
        lengths = check_lengths(
            load_tokenizer(base),
            [p.id for p in problems],
            [prompter.render(p) for p in problems],
            [(p.solution or "") if p.split == "train" else "" for p in problems],  # the SFT baseline's targets
            experiment.max_new_tokens,
            trainer.max_length,
            context_length(base),
        )
    except LengthError as err:
        raise dg.Failure(f"{problem_set}: {err}") from err
    return {
        "longest_prompt_tokens": lengths.longest_prompt,
        "longest_solution_tokens": lengths.longest_solution,
        "context_length": lengths.context or 0,
        "max_length": lengths.max_length,
    }


def stage_model_path(root: DataRoot, problem_set: str, stage: str) -> str:
    return str(root.model_dir(problem_set, stage))


def md_table(df: pl.DataFrame, float_fmt: str = "{:.3f}") -> str:
    cols = df.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.iter_rows():
        cells = [float_fmt.format(v) if isinstance(v, float) else ("" if v is None else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fine_tune_job(
    context: dg.AssetExecutionContext,
    trainer: TrainerResource,
    problems,
    rows: pl.DataFrame,
    init: str,
    out,
    cfg,
    prompter: Prompter,
    progress: Callable[..., None],
    on_validation: Callable[[int, float], None],
) -> TrainStats:
    """``stages.fine_tune`` as a ``train_worker`` job: DDP/FSDP under torchrun, or resumable in-process.

    The rows are split and tokenized here exactly as ``fine_tune`` does (held-out problems, BOS only
    for text prompts); the job's ranks get token ids, so they need neither polars nor the prompts.
    """
    tokenizer = load_tokenizer(init)
    held = pl.Series(
        held_out_mask(rows["problem_id"].to_list(), trainer.validation_fraction, cfg.seed), dtype=pl.Boolean
    )
    add_bos = prompter.style == "text"
    limit = cfg.max_length or context_length(init) or 0  # max_length 0: the model's context

    def tokenized(part: pl.DataFrame):
        prompts, targets = training_pairs(problems, part, "completion", prompter)
        return tokenize_pairs(tokenizer, prompts, targets, limit, add_bos)

    val_rows = rows.filter(held)
    job = MStepJob(
        init_from=init,
        out_dir=str(out),
        config=cfg,
        examples=tokenized(rows.filter(~held)),
        validation=tokenized(val_rows) if len(val_rows) else None,
        strategy=trainer.strategy,
        processes=trainer.processes,
        device=trainer.device,
        checkpoint_every_steps=trainer.checkpoint_every_steps,
    )
    return run_job(job, context.log.info, progress, on_validation)


def fine_tune_result(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    experiment: ExperimentResource,
    trainer: TrainerResource,
    rows: pl.DataFrame,
    stage: str,
    seed: int,
    epochs: float | None = None,
    init_from: str | None = None,
    init_mode: str = "base",
    root: DataRoot | None = None,
) -> dg.MaterializeResult:
    """Fine-tune ``init_from`` (default: the base model) on ``rows`` into ``models/<set>/<stage>``; report it.

    ``init_mode`` says what ``init_from`` is: ``base`` (ReST-EM, SFT) or ``previous`` (ReST: the
    previous iteration's checkpoint). Both are recorded in the metadata. ``root``: the data root of the
    experiment the checkpoint belongs to (default: the shared one, for the SFT baseline). With ``trainer.strategy``
    ``ddp``/``fsdp`` the training runs under torchrun (a subprocess whose output is logged here, its
    progress through the same logger); with ``checkpoint_every_steps`` it saves a train state and
    resumes one a killed run left.
    """
    name = context.partition_key
    init = init_from or base_model_path(storage, experiment, name)
    out = (root or storage.root()).model_dir(name, stage)
    context.log.info(f"fine-tuning {stage} from {init} ({init_mode})")

    def log_validation(step: int, loss: float) -> None:
        context.log.info(f"fine-tuning {stage}: validation loss {loss:.4f} at step {step}")

    cfg = trainer.train_config(seed, epochs)
    problems, prompter = load_problems(storage, name), run_prompter(storage, experiment, name)
    progress = progress_logger(context, f"fine-tuning {stage}")
    if trainer.uses_worker:
        stats = _fine_tune_job(context, trainer, problems, rows, init, out, cfg, prompter, progress, log_validation)
    else:
        stats = fine_tune(
            init,
            problems,
            rows,
            out,
            cfg,
            prompter,
            progress,
            trainer.device,
            validation_fraction=trainer.validation_fraction,
            on_validation=log_validation,
        )
    validation = {}
    if stats.val_loss_history:
        validation = {
            "val_loss": stats.final_val_loss,
            "val_loss_history": dg.MetadataValue.json([[s, v] for s, v in stats.val_loss_history]),
        }
    return dg.MaterializeResult(
        metadata={
            "init_from": init,
            "init_mode": init_mode,
            "examples": len(rows),
            "steps": stats.steps,
            "tokens": stats.tokens,
            "target_tokens": stats.target_tokens,
            "tokens_per_s": stats.tokens_per_s,
            "dtype": stats.dtype,
            "packing": stats.packing,
            "oom_splits": stats.oom_splits,
            "strategy": stats.strategy,
            "processes": stats.processes,
            "resumed_from_step": stats.resumed_from_step,
            "first_loss": stats.first_loss,
            "final_loss": stats.final_loss,
            **validation,
            "path": dg.MetadataValue.path(str(out)),
        }
    )
