"""Which kernels an M-step runs, by device: packed-row attention, the loss, ``torch.compile``.

``TrainConfig.attention``, ``.loss`` and ``.compile`` are ``"auto"`` by default; ``resolve`` turns them
into a ``Kernels`` for the device the model is on:

- **attention** (packed rows only; padded rows keep the model's own): ``flex`` on CUDA, the
  FlexAttention document mask of ``flex_packed`` (one kernel call per layer); ``varlen`` elsewhere,
  ``packed_attention.varlen_sdpa`` (one sdpa call per example: the fastest on a CPU, where
  FlexAttention has no backward). A model neither reproduces exactly keeps its own attention.
- **loss**: ``chunked`` on every device, ``chunked_loss.linear_cross_entropy_sum`` over the target
  positions only (no [tokens x vocabulary] fp32 logits, 49k columns for SmolLM2, and no logits at all
  for prompt tokens); on a CPU it is no slower than ``full`` (the model's logits and
  ``F.cross_entropy``) and faster where prompts are long (issue 22's report). A head that is not a
  plain bias-free linear layer (LoRA on ``lm_head``, scaled or capped logits) always gets ``full``.
- **compile**: on for CUDA, off elsewhere. On: each decoder layer's ``forward`` is
  ``torch.compile``-d (the instance attribute, so checkpoints, state dicts, DDP and FSDP2's per-layer
  hooks are untouched, and transformers' gradient checkpointing wraps the compiled forward), and so
  is the chunked loss's per-chunk arithmetic. FlexAttention on CUDA is compiled whatever this says:
  unfused it materialises every score.

``training_kernels(model, kernels)`` applies them for a block (attention implementation, compiled
layers) and restores the model afterwards; it yields the ``Kernels`` in effect (``attention="model"``
where the model's own stays).
Not covered: choosing by measurement (the defaults follow benchmarks/RESULTS.md and issue 22), CUDA
graphs, fp8.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

import torch

from restem_pipeline.training.chunked_loss import DEFAULT_CHUNK_TOKENS, head_supports_chunks
from restem_pipeline.training.packed_attention import packed_attention

# flex_dense: the flex path's function and element mask with sdpa on the materialised mask (quadratic in the
# row): the reference that lets a CPU train through the GPU path's wiring (FlexAttention has no CPU backward)
ATTENTION_CHOICES = ("auto", "varlen", "flex", "flex_dense")
LOSS_CHOICES = ("auto", "full", "chunked")
COMPILE_CHOICES = ("auto", "on", "off")
FLEX_PAD_TO = 128  # FlexAttention's tile: packed rows padded to a multiple of it (and fewer shapes to compile)


@dataclass(frozen=True)
class Kernels:
    """What a run uses: ``attention`` varlen | flex | flex_dense | model, the chunked loss, compiled layers."""

    attention: str = "varlen"
    chunked_loss: bool = False
    compile: bool = False
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS

    @property
    def flex(self) -> bool:
        return self.attention in ("flex", "flex_dense")

    def describe(self) -> str:
        loss = "chunked" if self.chunked_loss else "full"
        return f"attention={self.attention} loss={loss} compile={'on' if self.compile else 'off'}"


def resolve(cfg, device: torch.device | str) -> Kernels:
    """The kernels ``cfg`` (a ``TrainConfig``) asks for on ``device``; the model may still veto some."""
    cuda = torch.device(device).type == "cuda"
    attention = cfg.attention if cfg.attention != "auto" else ("flex" if cuda else "varlen")
    if attention == "flex" and not cuda:
        raise ValueError(
            "attention='flex' trains on CUDA only: torch's FlexAttention has no backward pass on CPU "
            "(use attention='varlen' or 'auto')"
        )
    loss = cfg.loss if cfg.loss != "auto" else "chunked"
    compile_ = cfg.compile == "on" or (cfg.compile == "auto" and cuda)
    return Kernels(attention=attention, chunked_loss=loss == "chunked", compile=compile_)


def _decoder_layers(model) -> list[torch.nn.Module]:
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names or type(m).__name__.removeprefix("FSDP") in names]


@contextmanager
def compiled_layers(model) -> Iterator[int]:
    """Each decoder layer's ``forward`` compiled inside the block (dynamic shapes); yields how many."""
    layers = _decoder_layers(model)
    before = [layer.__dict__.get("forward") for layer in layers]
    for layer in layers:
        layer.forward = torch.compile(layer.forward, dynamic=None)
    try:
        yield len(layers)
    finally:
        for layer, old in zip(layers, before, strict=True):
            if old is None:
                del layer.forward
            else:
                layer.forward = old


@contextmanager
def training_kernels(model, kernels: Kernels, packing: bool = True) -> Iterator[Kernels]:
    """Apply ``kernels`` to ``model`` inside the block; yields those in effect."""
    with ExitStack() as stack:
        on = stack.enter_context(packed_attention(model, kernels.attention)) if packing else False
        effective = kernels if on else replace(kernels, attention="model")
        if kernels.chunked_loss and not head_supports_chunks(model):
            effective = replace(effective, chunked_loss=False)
        if kernels.compile:
            stack.enter_context(compiled_layers(model))
        yield effective
