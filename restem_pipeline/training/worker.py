"""One M-step as a self-contained job: in this process, or on several ranks under ``torchrun``.

``MStepJob`` is everything a training run needs, as plain data (JSON): the initial checkpoint, the
output path, the ``TrainConfig``, the tokenized training (and validation) examples, the strategy
(``single`` / ``ddp`` / ``fsdp``), the number of processes, the device and the train-state period.
``run_mstep`` is what each rank does: load the model, train (``training.train_causal_lm``, resuming a
compatible ``train_state`` if one is there), then rank 0 writes the Hugging Face checkpoint with
``training.save_checkpoint`` (atomic; under FSDP the full state dict is gathered first and loaded into
an unsharded copy of the model, so the checkpoint is the same format either way) and removes the
train state. ``run_job`` runs a job in this process (``single``, one process) or starts ``torchrun``
as a subprocess and streams its output: progress and validation events to callbacks, other lines to
a log callback. ``python -m restem_pipeline.training.worker JOB.json [--stats STATS.json]`` is the entry
point torchrun starts on every rank (or a plain process, for ``single``).
Imports torch and transformers only (no dagster, no polars), so the GPU check and workers stay light.
Not covered: tokenizing rows (the caller's: ``assets.common.fine_tune_result``), several nodes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from restem_pipeline.generation.modeling import load_model, load_tokenizer
from restem_pipeline.storage.atomic import commit_file
from restem_pipeline.training.batching import Example
from restem_pipeline.training.distributed import (
    Parallel,
    die_with_parent,
    emit,
    make_parallel,
    stream_process,
    torchrun_command,
)
from restem_pipeline.training.finetune import TrainConfig, TrainStats, save_checkpoint
from restem_pipeline.training.loop import train_causal_lm
from restem_pipeline.training.state import TrainState, config_hash

MODULE = "restem_pipeline.training.worker"


@dataclass
class MStepJob:
    init_from: str
    out_dir: str
    config: TrainConfig
    examples: list[Example]
    validation: list[Example] | None = None
    strategy: str = "single"
    processes: int = 1
    device: str = "cpu"
    checkpoint_every_steps: int = 0

    @property
    def in_process(self) -> bool:
        return self.strategy == "single" and self.processes == 1

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "config": dataclasses.asdict(self.config)}

    @classmethod
    def from_json(cls, data: dict) -> MStepJob:
        def examples(rows):
            return None if rows is None else [(list(ids), int(n)) for ids, n in rows]

        config = TrainConfig(**{**data["config"], "lora_targets": tuple(data["config"]["lora_targets"])})
        fields = {**data, "config": config, "examples": examples(data["examples"])}
        return cls(**{**fields, "validation": examples(data.get("validation"))})


def stats_to_json(stats: TrainStats) -> dict:
    return {**dataclasses.asdict(stats), "val_loss_history": [list(v) for v in stats.val_loss_history]}


def stats_from_json(data: dict) -> TrainStats:
    history = [(int(s), float(v)) for s, v in data.get("val_loss_history", [])]
    return TrainStats(**{**data, "val_loss_history": history})


def run_mstep(
    job: MStepJob,
    par: Parallel,
    progress: Callable[[int, int, float], None] | None = None,
    on_validation: Callable[[int, float], None] | None = None,
    log: Callable[[str], None] = print,
) -> TrainStats:
    """Train on this rank; rank 0 saves the checkpoint at ``job.out_dir`` and removes the train state."""
    cfg = job.config
    tokenizer = load_tokenizer(job.init_from)
    model = load_model(job.init_from, device=str(par.device))
    digest = config_hash(cfg, job.examples, job.validation, job.init_from, par.strategy, par.world)
    state = TrainState(job.out_dir, job.checkpoint_every_steps, digest, log)
    stats = train_causal_lm(
        model, tokenizer, job.examples, cfg, progress, job.validation, on_validation, par,
        state if job.checkpoint_every_steps else None,
    )  # fmt: skip
    full = par.model_state(model)  # FSDP: a collective, gathered on rank 0
    if par.is_main:
        if par.strategy == "fsdp":  # the sharded module is not a plain transformers model: load into one
            model = load_model(job.init_from)
            model.load_state_dict(full)
        save_checkpoint(model, tokenizer, job.out_dir)
        state.clear()
    par.barrier()
    return stats


def run_job(
    job: MStepJob,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, float], None] | None = None,
    on_validation: Callable[[int, float], None] | None = None,
) -> TrainStats:
    """Run ``job`` here (one process, ``single``) or under torchrun with ``job.processes`` ranks."""
    if job.in_process:
        return run_mstep(job, Parallel(job.device), progress, on_validation, log)

    def on_event(event: dict) -> None:
        if event["event"] == "progress" and progress:
            progress(event["step"], event["total"], event["loss"])
        elif event["event"] == "validation" and on_validation:
            on_validation(event["step"], event["loss"])

    with tempfile.TemporaryDirectory(prefix="restem-mstep-") as tmp:
        job_path, stats_path = Path(tmp) / "job.json", Path(tmp) / "stats.json"
        job_path.write_text(json.dumps(job.to_json()))
        log(f"M-step: {job.strategy} on {job.processes} process(es), device {job.device}, via torchrun")
        stream_process(
            torchrun_command(job.processes, MODULE, str(job_path), "--stats", str(stats_path)), log, on_event
        )
        return stats_from_json(json.loads(stats_path.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One M-step (a rank of it under torchrun).")
    parser.add_argument("job", type=Path, help="job JSON (MStepJob.to_json)")
    parser.add_argument("--stats", type=Path, help="where rank 0 writes the TrainStats JSON")
    args = parser.parse_args(argv)
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a torchrun rank: end with the agent, not train on alone
        die_with_parent()
    job = MStepJob.from_json(json.loads(args.job.read_text()))
    par = make_parallel(job.strategy, job.device)
    main_rank = par.is_main

    def progress(step: int, total: int, loss: float) -> None:
        if main_rank:
            emit("progress", step=step, total=total, loss=loss)

    def on_validation(step: int, loss: float) -> None:
        if main_rank:
            emit("validation", step=step, loss=loss)

    def log(line: str) -> None:
        if main_rank:
            print(line, flush=True)

    stats = run_mstep(job, par, progress, on_validation, log)
    if main_rank and args.stats:
        args.stats.parent.mkdir(parents=True, exist_ok=True)
        commit_file(args.stats.parent, args.stats.name, lambda p: p.write_text(json.dumps(stats_to_json(stats))))
    par.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
