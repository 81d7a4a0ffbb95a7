"""One optimizer step's forward and backward passes, cut into micro-batches that fit in memory.

``StepRunner.step`` plans micro-batches for a step's examples (``grad_accum_steps`` parts, each cut to
the token budget), runs them under bf16 autocast where asked, and sums gradients normalised by the
step's real target tokens. A micro-batch that runs out of memory (``torch.OutOfMemoryError`` or a
RuntimeError saying so) is split in two and retried; after an OOM in backward the step is redone from
its first micro-batch, because some gradients may already hold part of the failed pass. The budget
stays lowered for later steps; a single example that does not fit raises an error naming the settings.

In a multi-process run (``StepSync``, from ``distributed``) every rank runs the same number of
micro-batches, so that the collectives of DDP (one gradient all-reduce, on the last backward) and
FSDP2 (an all-gather per forward) pair up: a rank with fewer pads its step with micro-batches whose
loss is multiplied by 0. The loss is divided by a normaliser the caller gives (the global batch's
target tokens / world size, since DDP and FSDP average gradients over ranks).
With ``kernels`` (``kernels.training_kernels``: what the trainer passes) the loss is the chunked
cross-entropy over target positions only where the kernels say so, and packed rows on the flex path
are padded to whole FlexAttention tiles.
Not covered: the optimizer, the schedule and the epoch loop (``training``); recovering from the Linux
OOM killer, which ends the process before any exception is raised; OOM splitting in a multi-process
run (a split on one rank would unpair the collectives: the error is raised).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F

from restem_pipeline.training.batching import (
    IGNORE_INDEX,
    Example,
    MicroBatch,
    Rows,
    halves,
    micro_batch,
    plan_micro_batches,
    split_evenly,
    target_count,
)
from restem_pipeline.training.chunked_loss import linear_cross_entropy_sum, output_hidden_states
from restem_pipeline.training.kernels import FLEX_PAD_TO, Kernels

OOM_MESSAGES = ("out of memory", "DefaultCPUAllocator: can't allocate memory")
PACKED_MULTIPLE = 64  # row width multiple under autocast: a packed row holds thousands of tokens
PADDED_MULTIPLE = 16


@cache
def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = {w for line in f if line.startswith("flags") for w in line.split()}
    except OSError:
        return False
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``dtype`` on ``device``; None means plain fp32."""
    if dtype == "float32":
        return None
    if dtype == "bfloat16":
        return torch.bfloat16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return None


def is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err) for m in OOM_MESSAGES)


def micro_batch_logits(model, mb: MicroBatch, amp: torch.dtype | None = None) -> torch.Tensor:
    """The model's logits for ``mb`` (under autocast to ``amp`` when given); no KV cache is built."""
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        return model(**mb.inputs, use_cache=False).logits


def micro_batch_loss_sum(
    model, mb: MicroBatch, amp: torch.dtype | None = None, kernels: Kernels | None = None
) -> torch.Tensor:
    """Summed fp32 cross-entropy over ``mb``'s targets, with ``kernels`` where given (see ``kernels``).

    Chunked loss: the model's output layer returns its input (``chunked_loss.output_hidden_states``)
    and the loss is taken over the target positions' hidden states only, in chunks.
    """
    if kernels is None or not kernels.chunked_loss:
        logits = micro_batch_logits(model, mb, amp)
        return F.cross_entropy(
            logits.float().flatten(0, 1), mb.targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
    head = getattr(model, "module", model).get_output_embeddings()  # DDP keeps the model as .module
    with output_hidden_states(head):
        hidden = micro_batch_logits(model, mb, amp)
    targets = mb.targets.flatten()
    where = (targets != IGNORE_INDEX).nonzero().squeeze(1)
    weight = head.weight  # after the forward: FSDP2 leaves the root's parameters unsharded for backward
    if hasattr(weight, "full_tensor"):  # a sharded DTensor all the same
        weight = weight.full_tensor()
    return linear_cross_entropy_sum(
        hidden.flatten(0, 1).index_select(0, where), weight, targets.index_select(0, where),
        kernels.chunk_tokens, amp or weight.dtype, kernels.compile,
    )  # fmt: skip


@dataclass(frozen=True)
class StepLayout:
    """How one optimizer step is cut up (from ``TrainConfig``)."""

    packing: bool
    grad_accum_steps: int
    max_tokens_per_micro_batch: int
    max_length: int
    dtype: str


@dataclass(frozen=True)
class StepSync:
    """How the ranks of a multi-process step agree (built by ``distributed``).

    ``agree(n)`` returns the largest micro-batch count of all ranks; ``no_sync(last)`` is the context
    for one micro-batch's forward and backward (DDP: no gradient all-reduce unless ``last``);
    ``filler`` is an example index every rank holds, for a rank whose shard of a step is empty.
    """

    agree: Callable[[int], int]
    no_sync: Callable[[bool], AbstractContextManager]
    filler: int


class StepRunner:
    """Runs one optimizer step's forward/backward passes: micro-batch planning, OOM splitting.

    Packed rows are as long as the budget when ``varlen`` attention is active (varlen sdpa or the flex
    document mask: attention cost stays per example); otherwise no longer than the longest example of
    the part (a dense block mask costs row length squared). ``kernels``: the attention and loss in
    effect (``kernels.training_kernels``); None: the model's logits and a full cross-entropy.
    """

    def __init__(
        self,
        model,
        examples: list[Example],
        layout: StepLayout,
        pad_id: int,
        varlen: bool = False,
        sync: StepSync | None = None,
        kernels: Kernels | None = None,
    ):
        self.model, self.examples, self.layout, self.pad_id, self.varlen = model, examples, layout, pad_id, varlen
        self.sync, self.kernels = sync, kernels
        self.device = next(model.parameters()).device
        self.amp = autocast_dtype(layout.dtype, self.device)
        self.budget = layout.max_tokens_per_micro_batch
        self.oom_splits = 0
        # bf16 kernels on CPU keep buffers per shape, never freed: round widths so that shapes repeat
        self.pad_to = 1 if self.amp is None else (PACKED_MULTIPLE if layout.packing else PADDED_MULTIPLE)
        if kernels is not None and kernels.flex and layout.packing:
            self.pad_to = FLEX_PAD_TO  # whole tiles, and few shapes for the compiled kernels

    def plan(self, indices: list[int]) -> list[Rows]:
        """Micro-batches (rows of example indices) for the examples ``indices``."""
        plan = []
        for part in split_evenly(indices, self.layout.grad_accum_steps):
            longest = max(len(self.examples[i][0]) for i in part)
            capacity = max(self.budget, longest) if self.varlen else longest
            plan += plan_micro_batches(self.examples, part, self.budget, self.layout.packing, capacity)
        return plan

    def loss_sum(self, mb: MicroBatch) -> torch.Tensor:
        return micro_batch_loss_sum(self.model, mb, self.amp, self.kernels)

    def _split_or_raise(self, rows: Rows, err: BaseException) -> list[Rows]:
        parts = halves(rows)
        if parts is None:
            n = len(self.examples[rows[0][0]][0])
            raise RuntimeError(
                f"out of memory on a single example of {n} tokens: lower max_length (now {self.layout.max_length}) "
                f"to shorten examples; max_tokens_per_micro_batch (now {self.layout.max_tokens_per_micro_batch}, "
                f"adapted to {self.budget}) cannot split one example"
            ) from err
        self.oom_splits += 1
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return parts

    def step(self, indices: list[int], totals: dict[str, int], normaliser: float | None = None) -> float:
        """Accumulate gradients for the examples ``indices``; return their loss sum / ``normaliser``.

        ``normaliser`` defaults to the examples' target tokens (the step's mean loss per token).
        """
        plan = self.plan(indices) if indices else []
        n_targets = normaliser or sum(target_count(self.examples[i]) for i in indices)
        real = len(plan)  # micro-batches after ``real`` are a multi-process step's padding
        if self.sync is not None:
            plan += [[[indices[0] if indices else self.sync.filler]]] * (self.sync.agree(real) - real)
        i = 0
        loss_total = 0.0
        counts = {"tokens": 0, "computed_tokens": 0, "micro_batches": 0}
        while i < len(plan):
            mb = micro_batch(self.examples, plan[i], self.pad_id, self.layout.packing, self.pad_to).to(self.device)
            with self.sync.no_sync(i == len(plan) - 1) if self.sync is not None else nullcontext():
                try:
                    loss = self.loss_sum(mb)
                except RuntimeError as err:  # torch.OutOfMemoryError is one
                    if not is_oom(err) or self.sync is not None:
                        raise
                    plan[i : i + 1] = self._split_or_raise(plan[i], err)
                    real += 1
                    self.budget = max(1, min(self.budget, mb.cells // 2))
                    continue
                try:
                    (loss / n_targets if i < real else loss * 0.0).backward()
                except RuntimeError as err:  # torch.OutOfMemoryError is one
                    if not is_oom(err) or self.sync is not None:
                        raise
                    del loss
                    plan[i : i + 1] = self._split_or_raise(plan[i], err)
                    real += 1
                    self.budget = max(1, min(self.budget, mb.cells // 2))
                    self.model.zero_grad(set_to_none=True)  # gradients may be half-accumulated: redo the step
                    i, loss_total = 0, 0.0
                    counts = dict.fromkeys(counts, 0)
                    continue
            if i < real:
                loss_total += float(loss.detach())
                counts["tokens"] += mb.real_tokens
                counts["computed_tokens"] += mb.cells
                counts["micro_batches"] += 1
            i += 1
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
        return loss_total / n_targets
