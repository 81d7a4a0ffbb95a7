"""Supervised fine-tuning of a causal LM on (prompt, completion) pairs, loss on completion tokens only.

Used for all three trainings in restem: pretraining the embedded base model, the SFT baseline, and
every ReST-EM M-step. One optimizer step sees ``batch_size`` examples; its loss is the mean over
their completion tokens, however the step is cut up:

- **packing** (default): uniformly shuffled batches, packed into rows (position ids restart per
  example, attention stays inside each example; see ``batching`` and ``packed_attention``) so padding is
  not computed; ``packing=False`` uses length-grouped padded rows. For the same examples both give the
  same loss and gradient, but length-grouped batches are each of one length (for arithmetic, mostly
  one level) and generalise worse (benchmarks/RESULTS.md, "bench_trainer").
- **micro-batches** (``micro_steps``): ``grad_accum_steps`` parts, each cut further to at most
  ``max_tokens_per_micro_batch`` cells (rows x width, padding included); gradients are summed and
  normalised by the step's real target tokens, not by the number of micro-batches. A micro-batch that
  runs out of memory is split in two and retried, no step lost; one example that cannot fit raises an
  error naming ``max_length`` and ``max_tokens_per_micro_batch``.
- **dtype**: ``auto`` runs forward under bf16 autocast where the hardware has native bf16 (CPU flags
  ``amx_bf16``/``avx512_bf16``, or a bf16 GPU), fp32 elsewhere; master weights and the loss stay fp32.
- **finetune**: ``full`` (default) trains every weight; ``lora`` trains rank-``lora_rank`` adapters on
  the ``lora_targets`` projections through ``peft`` (``restem_pipeline.training.lora``) and merges them into the
  weights at the end, so the model (and its checkpoint) is a plain transformers model either way.
  Packing, autocast, micro-batches and OOM splitting work the same in both modes; only the adapters
  are in the optimizer. ``TrainStats`` records the mode and the trainable-parameter count.
- AdamW, warm-up then ``cosine``/``linear`` decay to 10% of the peak or ``constant``; gradient clipping;
  fixed seed; optional validation loss every ``eval_every`` steps and at the end.
- **gradient_checkpointing**: activations of each decoder layer are recomputed in backward
  (transformers' non-reentrant checkpointing): less memory, about a third more compute, same numbers.
- **several processes** (``parallel``, from ``distributed``): DDP or FSDP2; one step's *global* batch
  is ``batch_size`` x processes examples, drawn in the same order as one process with that batch size
  would draw them; each rank trains on its shard, the loss is normalised by the global batch's
  target tokens and reported as the global mean.
- **resumable** (``state``, a ``train_state.TrainState``): model, optimizer, RNGs, data position and
  statistics saved every ``checkpoint_every_steps``; a compatible state is resumed from.
- **kernels** (``kernels``): ``attention``, ``loss`` and ``compile`` pick the GPU path on CUDA by
  default (FlexAttention document mask, ``torch.compile``d decoder layers) and keep the CPU path
  (varlen sdpa, eager) elsewhere; the cross-entropy is taken in chunks over completion tokens only on
  both; ``TrainStats.kernels`` records what ran.

Throughput (``TrainStats.tokens_per_s``) counts *real input tokens*: every non-padding token fed to the
model, prompt tokens included (they cost compute), padding excluded; validation time is not counted.
Not covered: several nodes.
"""

from __future__ import annotations

import math
import random
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from restem_pipeline.storage.atomic import write_dir
from restem_pipeline.training.batching import (
    IGNORE_INDEX,
    Example,
    collate,
    micro_batch,
    target_count,
    tokenize_pairs,
)
from restem_pipeline.training.kernels import (
    ATTENTION_CHOICES,
    COMPILE_CHOICES,
    LOSS_CHOICES,
    Kernels,
    resolve,
    training_kernels,
)
from restem_pipeline.training.lora import (
    DEFAULT_LORA_TARGETS,
    MISSING_PEFT,
    PeftNotInstalled,
    peft_available,
)
from restem_pipeline.training.micro_steps import StepLayout, StepRunner

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "IGNORE_INDEX",
    "PeftNotInstalled",
    "TrainConfig",
    "TrainStats",
    "collate",
    "evaluate_loss",
    "held_out_mask",
    "lr_at",
    "save_checkpoint",
    "tokenize_pairs",
]

LR_SCHEDULES = ("cosine", "linear", "constant")
DTYPES = ("auto", "float32", "bfloat16")
FINETUNE_MODES = ("full", "lora")


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 2.0
    max_steps: int | None = None
    batch_size: int = 32  # examples per optimizer step
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    lr_schedule: str = "cosine"  # cosine | linear | constant (after warm-up)
    max_grad_norm: float = 1.0
    max_length: int = 320  # tokens per example; longer ones lose prompt tokens from the left; 0 = no limit
    seed: int = 0
    packing: bool = True
    dtype: str = "auto"  # auto | float32 | bfloat16 (autocast; weights stay fp32)
    grad_accum_steps: int = 1
    max_tokens_per_micro_batch: int = 16384
    eval_every: int = 0  # 0: validation loss only at the end (when validation examples are given)
    finetune: Literal["full", "lora"] = "full"  # lora: peft adapters, merged into the weights at the end
    lora_rank: int = 16  # r: rank of each adapter's B @ A
    lora_alpha: float = 32.0  # the adapter's update is scaled by lora_alpha / lora_rank
    lora_dropout: float = 0.0  # dropout on the adapters' input
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS  # linear layers (last name component) to adapt
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward
    attention: str = "auto"  # auto | varlen | flex | flex_dense: packed rows' (auto: flex on CUDA, else varlen)
    loss: str = "auto"  # auto | full | chunked: cross-entropy (auto: chunked, the output layer in chunks)
    compile: str = "auto"  # auto | on | off: torch.compile the decoder layers and the loss (auto: on CUDA)

    def __post_init__(self) -> None:
        if self.epochs <= 0 and not self.max_steps:
            raise ValueError(f"epochs must be > 0 (got {self.epochs}) unless max_steps is set")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.max_length < 0 or self.max_length == 1:
            raise ValueError(f"max_length must be 0 (no limit) or > 1, got {self.max_length}")
        if not 1 <= self.grad_accum_steps <= self.batch_size:
            raise ValueError(
                f"grad_accum_steps must be in 1..batch_size ({self.batch_size}), got {self.grad_accum_steps}"
            )
        if self.max_length and self.max_tokens_per_micro_batch < self.max_length:
            raise ValueError(
                f"max_tokens_per_micro_batch ({self.max_tokens_per_micro_batch}) must be >= max_length "
                f"({self.max_length}): one example of max_length tokens must fit in a micro-batch"
            )
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be positive, got {self.max_grad_norm}")
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune must be one of {', '.join(FINETUNE_MODES)}, got {self.finetune!r}")
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int) or self.lora_rank < 1:
            raise ValueError(f"lora_rank must be an integer >= 1, got {self.lora_rank!r}")
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if isinstance(self.lora_targets, str):
            raise ValueError(f"lora_targets must be a list of layer names, not one string: got {self.lora_targets!r}")
        if not self.lora_targets or not all(isinstance(t, str) and t for t in self.lora_targets):
            raise ValueError(f"lora_targets must be a non-empty list of layer names, got {self.lora_targets!r}")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        for name, choices in (("attention", ATTENTION_CHOICES), ("loss", LOSS_CHOICES), ("compile", COMPILE_CHOICES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.finetune == "lora" and not peft_available():
            raise PeftNotInstalled(MISSING_PEFT)

    def step_layout(self) -> StepLayout:
        return StepLayout(
            self.packing, self.grad_accum_steps, self.max_tokens_per_micro_batch, self.max_length, self.dtype
        )


@dataclass
class TrainStats:
    steps: int = 0
    examples: int = 0
    tokens: int = 0  # real input tokens (prompt + completion, no padding)
    target_tokens: int = 0  # completion tokens the loss is taken over
    computed_tokens: int = 0  # positions computed, padding included
    micro_batches: int = 0
    oom_splits: int = 0
    seconds: float = 0.0  # training time, validation excluded
    dtype: str = "float32"
    packing: bool = True
    varlen_attention: bool = False  # packed rows attended per example (varlen sdpa or the flex document mask)
    kernels: str = ""  # kernels.Kernels.describe(): attention, loss and compile in effect
    finetune: str = "full"  # full | lora (adapters merged into the weights after training)
    trainable_parameters: int = 0  # parameters the optimizer updated (lora: the adapters')
    skipped_examples: int = 0  # no completion token left after truncation
    strategy: str = "single"  # single | ddp | fsdp
    processes: int = 1
    resumed_from_step: int = 0  # 0: started from scratch
    peak_memory_mb: float = 0.0  # CUDA: peak allocated, max over ranks; CPU: the process's peak RSS, max over ranks
    loss_history: list[float] = field(default_factory=list)
    val_loss_history: list[tuple[int, float]] = field(default_factory=list)

    @property
    def first_loss(self) -> float:
        return self.loss_history[0] if self.loss_history else float("nan")

    @property
    def final_loss(self) -> float:
        tail = self.loss_history[-max(1, len(self.loss_history) // 10) :]
        return sum(tail) / len(tail) if tail else float("nan")

    @property
    def final_val_loss(self) -> float:
        return self.val_loss_history[-1][1] if self.val_loss_history else float("nan")

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def lr_at(step: int, total: int, peak: float, warmup: int, schedule: str = "cosine") -> float:
    """Learning rate at 0-based ``step``: linear warm-up to ``peak``, then decay to 10% of it (or constant)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return peak * (1.0 - 0.9 * progress)
    if schedule == "cosine":
        return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")


def held_out_mask(groups: list[str], fraction: float, seed: int) -> list[bool]:
    """True for rows whose group (e.g. problem id) is held out: a seeded ``fraction`` of the distinct groups.

    Whole groups are held out, so validation never sees a problem that training saw; at least one group
    when ``fraction > 0`` and there are two or more, never all of them.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {fraction}")
    distinct = sorted(set(groups))
    if fraction == 0 or len(distinct) < 2:
        return [False] * len(groups)
    n = min(len(distinct) - 1, max(1, round(fraction * len(distinct))))
    held = set(random.Random(seed).sample(distinct, n))
    return [g in held for g in groups]


def _layout(model, cfg: TrainConfig, device: torch.device | None = None):
    """Context for a pass over packed or padded rows; yields the ``kernels.Kernels`` in effect."""
    device = device or next(model.parameters()).device
    return training_kernels(model, resolve(cfg, device), cfg.packing)


@torch.no_grad()
def evaluate_loss(
    model, examples: list[Example], cfg: TrainConfig, pad_id: int, kernels: Kernels | None = None
) -> float:
    """Mean loss per completion token over ``examples`` (no gradient; same layout and dtype as training).

    ``kernels``: those already applied to ``model`` (inside the trainer's loop); by default they are
    resolved and applied here.
    """
    kept = [i for i, ex in enumerate(examples) if target_count(ex)]
    if not kept:
        return float("nan")
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    with _layout(model, cfg) if kernels is None else nullcontext(kernels) as kernels:
        stepper = StepRunner(model, examples, cfg.step_layout(), pad_id, kernels.attention != "model", kernels=kernels)
        for rows in stepper.plan(kept):
            mb = micro_batch(examples, rows, pad_id, cfg.packing, stepper.pad_to).to(stepper.device)
            total += float(stepper.loss_sum(mb))
            n += mb.target_tokens
    model.train(was_training)
    return total / n


def save_checkpoint(model, tokenizer, out_dir: str | Path) -> Path:
    """Save an HF checkpoint atomically: complete at ``out_dir`` or the previous one left there (``atomic``)."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return write_dir(out_dir, write)
