"""Cross-entropy through the output layer in chunks of tokens: the [tokens x vocabulary] logits never exist whole.

``linear_cross_entropy_sum(hidden, weight, targets)`` is ``F.cross_entropy(hidden @ weight.T, targets,
reduction="sum")`` for the rows of ``hidden`` that have a target (the caller drops prompt and padding
positions first, so their logits are never computed at all). It runs ``chunk_tokens`` rows at a time:
each chunk's logits are made in the compute dtype (bf16 under autocast, as the model's own output
layer would), upcast to fp32 for log-sum-exp, and the chunk's gradients are computed right there
(softmax minus one-hot, two matmuls) and kept, so backward only scales them by the incoming gradient
and the logits are never recomputed: the same three matmuls as an unchunked forward and backward,
with at most one chunk of fp32 logits alive. The output layer's gradient is accumulated over chunks
in fp32 (on CUDA without rounding each chunk's product to bf16 first). Without autograd (evaluation)
only the loss is computed. With ``compile=True`` the per-chunk arithmetic is ``torch.compile``-d,
which fuses the softmax, one-hot and casts into the matmuls' neighbours (shapes are dynamic: the last
chunk is shorter).

``output_hidden_states(head)`` makes the model's output layer return its input for the duration of a
forward, so ``model(...).logits`` holds the final hidden states: the forward still goes through the
model's (or the DDP/FSDP wrapper's) own ``__call__``, so DDP's gradient hooks and FSDP2's
all-gathers run as usual, and after the forward ``head.weight`` is the usable (FSDP2: unsharded, the
root module is not resharded after forward) parameter that the chunks multiply with.
``head_supports_chunks`` says when this is exact: a plain ``nn.Linear`` output layer without bias
(Llama, Qwen2, Qwen3; not a LoRA-adapted head, not logit scaling or soft-capping).
Not covered: label smoothing, z-loss, vocabulary-parallel (tensor-parallel) output layers, a bias.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

DEFAULT_CHUNK_TOKENS = 4096
SCALED_LOGIT_ATTRS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "logits_scaling")


def _loss_and_grad(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk: (summed fp32 loss, gradient of that sum w.r.t. the logits, in ``h``'s dtype)."""
    logits = (h @ w.t()).float()
    lse = torch.logsumexp(logits, dim=-1)
    loss = (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
    grad = logits.sub_(lse[:, None]).exp_()  # softmax, in the logits' memory: one fp32 chunk alive
    grad[torch.arange(t.shape[0], device=t.device), t] -= 1.0
    return loss, grad.to(h.dtype)


def _loss_only(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    logits = (h @ w.t()).float()
    return (torch.logsumexp(logits, dim=-1) - logits.gather(1, t[:, None]).squeeze(1)).sum()


_COMPILED: dict[str, Callable] = {}


def _chunk_fns(compile: bool) -> tuple[Callable, Callable]:
    if not compile:
        return _loss_and_grad, _loss_only
    if not _COMPILED:
        _COMPILED["grad"] = torch.compile(_loss_and_grad, dynamic=True)
        _COMPILED["loss"] = torch.compile(_loss_only, dynamic=True)
    return _COMPILED["grad"], _COMPILED["loss"]


def _accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` into fp32 ``acc``; bf16 operands on CUDA are not rounded to bf16 before the sum."""
    if acc.device.type == "cuda" and a.dtype != torch.float32:
        try:
            torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
            return
        except (TypeError, RuntimeError):  # torch without mm's out_dtype
            pass
    acc.add_((a @ b).float())


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_tokens: int, dtype: torch.dtype, compile: bool):
        grad_fn, _ = _chunk_fns(compile)
        h, w = hidden.to(dtype), weight.to(dtype)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, h.shape[0], chunk_tokens):
            hc, tc = h[start : start + chunk_tokens], targets[start : start + chunk_tokens]
            loss, g = grad_fn(hc, w, tc)
            total += loss
            if grad_h is not None:
                torch.mm(g, w, out=grad_h[start : start + chunk_tokens])
            if grad_w is not None:
                _accumulate(grad_w, g.t(), hc)
        ctx.save_for_backward(*(x for x in (grad_h, grad_w) if x is not None))
        ctx.need = (need_h, need_w)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        saved = list(ctx.saved_tensors)
        need_h, need_w = ctx.need
        gh = saved.pop(0).to(ctx.dtypes[0]) * grad_out if need_h else None
        gw = saved.pop(0).to(ctx.dtypes[1]) * grad_out if need_w else None
        return gh, gw, None, None, None, None


def linear_cross_entropy_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    dtype: torch.dtype | None = None,
    compile: bool = False,
) -> torch.Tensor:
    """fp32 sum over rows of ``-log softmax(hidden @ weight.T)[target]``, ``chunk_tokens`` rows at a time.

    ``hidden`` (tokens, hidden), ``weight`` (vocabulary, hidden), ``targets`` (tokens,), every target a
    real token id (no ignore index). ``dtype``: the matmuls' dtype (default: autocast's when it is on
    for ``hidden``'s device, else ``hidden``'s); log-sum-exp and the loss are fp32 either way.
    """
    if hidden.ndim != 2 or targets.shape != hidden.shape[:1]:
        shapes = f"{tuple(hidden.shape)} and {tuple(targets.shape)}"
        raise ValueError(f"hidden must be (tokens, hidden) and targets (tokens,), got {shapes}")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    device = hidden.device.type
    if dtype is None:
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    with torch.autocast(device, enabled=False):
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, chunk_tokens, dtype, compile)
        _, loss_fn = _chunk_fns(compile)
        h, w = hidden.to(dtype), weight.to(dtype)
        parts = [
            loss_fn(h[s : s + chunk_tokens], w, targets[s : s + chunk_tokens])
            for s in range(0, h.shape[0], chunk_tokens)
        ]
        return torch.stack(parts).sum() if parts else hidden.new_zeros((), dtype=torch.float32)


def head_supports_chunks(model) -> bool:
    """True when the model's logits are exactly ``hidden @ head.weight.T`` (nothing scaled, capped or adapted)."""
    head = model.get_output_embeddings()
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    scaled = any(getattr(cfg, a, None) not in (None, 1.0) for a in SCALED_LOGIT_ATTRS)
    return type(head) is torch.nn.Linear and head.bias is None and not scaled


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@contextmanager
def output_hidden_states(head: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Inside the block ``head(x)`` returns ``x``: the model's ``logits`` are its final hidden states."""
    before = head.__dict__.get("forward")  # an instance-level forward (accelerate hooks) to put back
    head.forward = _identity
    try:
        yield head
    finally:
        if before is None:
            del head.forward
        else:
            head.forward = before
