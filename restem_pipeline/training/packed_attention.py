"""Attention for packed rows: causal attention inside each example only, at the cost of the example.

transformers turns the restarting ``position_ids`` of a packed row into a block-diagonal mask, but
with a dense mask sdpa computes every query against every key of the row, so attention costs grow
with the row rather than with the example, and the kernel's causal skip is lost. ``varlen_sdpa``
runs one causal sdpa per example instead (an example starts where ``position_ids`` is 0), as
flash-attention's varlen kernels do on a GPU: rows can be as long as the token budget and carry no
padding. ``packed_attention(model)`` swaps it in only while restem trains or scores a model whose
attention it reproduces exactly (Llama, Qwen2, Qwen3 with sdpa or eager and full attention in every
layer) and restores the model's own implementation afterwards; other models keep transformers'
block-diagonal mask. ``varlen_sdpa`` is the CPU path (the fastest there). ``packed_attention(model,
"flex")`` swaps in ``flex_packed``'s FlexAttention document mask instead, the GPU path: one kernel
call per layer rather than one sdpa call per example from a Python loop (``"flex_dense"``: the same
function with the mask materialised for sdpa, the CPU reference for its gradients).
Not covered: sliding-window attention, logit soft-capping, attention sinks, KV caches (training only).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

NAME = "restem_varlen_sdpa"
VARLEN_MODEL_TYPES = frozenset({"llama", "qwen2", "qwen3"})


def _causal_sdpa(q, k, v, dropout: float, scaling: float | None) -> torch.Tensor:
    """Causal sdpa over one segment; on CPU in fp32 whatever the autocast dtype.

    Below fp32, CPU sdpa keeps kernels and buffers for new shapes and strides it meets (megabytes
    each, never freed), and packed segments keep bringing new ones: a 3.3M-parameter model grew past
    2 GB in 200 bf16 steps. Attention is a small share of the compute, so on CPU it runs in fp32.
    """
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling, is_causal=True)
    q, k, v = q.float(), k.float(), v.float()  # under autocast q, k (after RoPE) are fp32 and v is bf16
    with torch.autocast("cpu", enabled=False):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling, is_causal=True)


def varlen_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """(batch, seq, heads, dim) output of causal attention within each position-id segment of each row."""
    if position_ids is None:
        raise ValueError(f"{NAME} attention needs position_ids to find where each packed example starts")
    if kwargs.get("past_key_values") is not None:
        raise ValueError(f"{NAME} attention is for training passes without a KV cache")
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    length = query.shape[2]
    positions = position_ids.expand(query.shape[0], -1)
    rows = []
    # split/unbind (not slicing): their backward is one cat/stack, where each slice's backward would
    # allocate a zero tensor of the whole row
    for q, k, v, pos in zip(query.unbind(0), key.unbind(0), value.unbind(0), positions, strict=True):
        starts = sorted({0, *(pos == 0).nonzero().flatten().tolist()}) + [length]
        sizes = [e - s for s, e in zip(starts[:-1], starts[1:], strict=True)]
        # 4-D inputs, so that sdpa picks its flash kernel on CPU; outputs joined along the sequence in
        # (seq, heads, dim) layout, so the gradient each piece gets back has strides of its own size
        pieces = [
            _causal_sdpa(qs[None], ks[None], vs[None], dropout, scaling).transpose(1, 2)
            for qs, ks, vs in zip(q.split(sizes, 1), k.split(sizes, 1), v.split(sizes, 1), strict=True)
        ]
        rows.append(torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0].contiguous())
    return (torch.cat(rows) if len(rows) > 1 else rows[0]), None


BACKENDS = ("varlen", "flex", "flex_dense")


def _names() -> dict[str, str]:
    from restem_pipeline.training import flex_packed

    return {"varlen": NAME, "flex": flex_packed.NAME, "flex_dense": flex_packed.DENSE_NAME}


def varlen_supported(model, backend: str = "varlen") -> bool:
    """True when ``backend``'s attention computes exactly what the model's own attention would."""
    cfg = model.config
    layer_types = getattr(cfg, "layer_types", None) or ["full_attention"]
    return (
        getattr(cfg, "model_type", None) in VARLEN_MODEL_TYPES
        and cfg._attn_implementation in ("sdpa", "eager", *_names().values())
        and all(t == "full_attention" for t in layer_types)
        and (backend == "varlen" or not getattr(cfg, "attention_dropout", 0.0))  # FlexAttention has no dropout
    )


def _register() -> None:
    from transformers import AttentionInterface

    from restem_pipeline.training import flex_packed

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, varlen_sdpa)
    flex_packed.register()


@contextmanager
def packed_attention(model, backend: str = "varlen") -> Iterator[bool]:
    """Use ``backend``'s attention inside the block when the model supports it; yields whether it does."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not varlen_supported(model, backend):
        yield False
        return
    _register()
    before = model.config._attn_implementation
    model.config._attn_implementation = _names()[backend]
    hook = None
    if backend != "varlen":  # the document BlockMask, built once per forward by the decoder
        from restem_pipeline.training.flex_packed import block_mask_hook

        hook = model.get_decoder().register_forward_pre_hook(block_mask_hook, with_kwargs=True)
    try:
        yield True
    finally:
        model.config._attn_implementation = before
        if hook is not None:
            hook.remove()
