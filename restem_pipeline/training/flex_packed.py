"""FlexAttention for packed rows: one kernel call per layer, causal inside each example, blocks between skipped.

A packed row's examples start where ``position_ids`` is 0 (``batching.micro_batch``; TRL's and
transformers' padding-free collators lay rows out the same way). ``document_ids`` numbers them;
``document_block_mask`` turns the numbers into a FlexAttention ``BlockMask`` for the document-causal
mask (query q sees key k when both are in the same example and k <= q). It is built directly from
the per-block first and last example numbers, O((tokens / 128)^2) small integer ops with no
``torch.compile`` and no [tokens x tokens] mask: a 128 x 128 tile is *full* when its queries and keys
all lie in one example and the keys' block comes before the queries' (no element mask needed),
*partial* when they can share an example on or below the diagonal (the element mask is evaluated
there), and skipped otherwise. Examples are contiguous and numbered in order, so a block's first and
last numbers are its smallest and largest: the classification is exact, never drops a visible pair.

``flex_document_attention`` is registered with transformers' ``AttentionInterface`` under ``NAME``
(``packed_attention.packed_attention(model, "flex")`` switches a model to it and adds
``block_mask_hook`` to the model's decoder): the hook builds the ``BlockMask`` from ``position_ids``
once per forward, before any layer (and outside compiled layers), and passes it as the decoder's
``attention_mask``; transformers hands a 4-D mask to every layer untouched. The same works for
restem's micro-batches and for TRL's padding-free batches (no attention mask, restarting position
ids). Called without a ``BlockMask`` the attention builds one itself from ``position_ids``. On CUDA the
kernel is ``torch.compile(flex_attention)`` (FlexAttention unfused materialises every score); inside
an already compiled region the plain function is traced instead. q, k, v go in in autocast's dtype
(bf16), grouped-query attention without repeating k/v.

Why not transformers' own padding-free paths: ``flash_attention_2`` (varlen from ``position_ids``)
needs the ``flash_attn`` package, a CUDA build matched to torch that the lent GPU machines do not
have and cannot download; ``sdpa`` with restarting ``position_ids`` gets a dense block-diagonal
[tokens x tokens] mask (every query against every key of the row, no causal skip: the slow path
issue 22 measured); transformers' ``flex_attention`` is the same kernel and is correct on packed rows
(with ``use_cache=False``: a KV cache silently turns its packed-sequence detection off), but builds its
``BlockMask`` with ``create_block_mask(_compile=True)`` over every element of the row (a compile per new
width) and repeats k/v for a query-head count that is not a power of two (SmolLM2's 9 heads: k/v
copied 3 times per layer). It is measured beside this one (``gpu_bench``'s ``trl_hf_flex``), so a GPU
run shows whether restem needs its own.

What only CUDA runs: the fused kernel and its backward. On CPU torch 2.13 runs FlexAttention's
forward only (unfused, materialising the scores) and refuses its backward, so the CPU tests check
the forward against one example at a time, the block classification against ``create_block_mask``,
and gradients through ``DENSE_NAME``: the same attention function and element mask, with sdpa on the
mask materialised (``create_mask``) in place of the kernel.
Not covered: dropout in attention, sliding windows, soft-capping, attention sinks, KV caches.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, create_mask, flex_attention

NAME = "restem_flex_document"
DENSE_NAME = "restem_flex_document_dense"
BLOCK_SIZE = 128  # FlexAttention's default tile; packed rows on this path are padded to a multiple of it

_COMPILED: dict[str, Callable] = {}


def document_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """(rows, tokens) example number of each position: a new example starts wherever the position is 0."""
    starts = position_ids == 0
    starts[:, 0] = True
    return starts.cumsum(-1) - 1


def document_mask_mod(docs: torch.Tensor) -> Callable:
    """FlexAttention ``mask_mod``: same example and key not after query."""

    def mask_mod(b, h, q_idx, kv_idx):
        return (docs[b, q_idx] == docs[b, kv_idx]) & (q_idx >= kv_idx)

    return mask_mod


def _ordered(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, indices) per query block: the True key blocks' indices first, in increasing order."""
    count = blocks.sum(-1, dtype=torch.int32)
    order = torch.argsort((~blocks).to(torch.int32), dim=-1, stable=True).to(torch.int32)
    return count[:, None], order[:, None]  # a head dimension of 1: the mask is the same for every head


def document_block_mask(position_ids: torch.Tensor, block_size: int = BLOCK_SIZE) -> BlockMask:
    """The document-causal ``BlockMask`` of packed rows with these ``position_ids`` (rows, tokens)."""
    docs = document_ids(position_ids)
    rows, length = docs.shape
    n = math.ceil(length / block_size)
    if n * block_size > length:  # past the end: one more example of its own (never a real query or key)
        docs = torch.cat([docs, (docs[:, -1:] + 1).expand(rows, n * block_size - length)], dim=1)
    blocks = docs.view(rows, n, block_size)
    first, last = blocks[..., 0], blocks[..., -1]  # the smallest and largest example number in each block
    q_first, q_last = first[:, :, None], last[:, :, None]
    k_first, k_last = first[:, None, :], last[:, None, :]
    idx = torch.arange(n, device=docs.device)
    below = idx[None, :] <= idx[:, None]  # key block not after query block
    strictly_below = idx[None, :] < idx[:, None]
    share = (k_first <= q_last) & (k_last >= q_first)
    one_example = (q_first == q_last) & (k_first == k_last) & (q_first == k_first)
    full = strictly_below & one_example
    partial = below & share & ~full
    kv_count, kv_idx = _ordered(partial)
    full_count, full_idx = _ordered(full)
    return BlockMask.from_kv_blocks(
        kv_count, kv_idx, full_count, full_idx,
        BLOCK_SIZE=block_size, mask_mod=document_mask_mod(docs), seq_lengths=(length, length),
    )  # fmt: skip


def block_mask_hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """Forward pre-hook (``with_kwargs=True``) for a decoder: its ``attention_mask`` becomes the document mask.

    Only for a training-style call: position ids given, no attention mask, no KV cache.
    """
    position_ids = kwargs.get("position_ids")
    if position_ids is None or kwargs.get("attention_mask") is not None:
        return None
    if kwargs.get("past_key_values") is not None or kwargs.get("cache") is not None:
        return None
    inputs = kwargs.get("input_ids")
    if inputs is None:
        inputs = kwargs.get("inputs_embeds")
    if inputs is None and args:
        inputs = args[0]
    rows = inputs.shape[0] if inputs is not None else position_ids.shape[0]
    return args, {**kwargs, "attention_mask": document_block_mask(position_ids.expand(rows, -1))}


def _kernel(device: torch.device) -> Callable:
    if device.type != "cuda" or torch.compiler.is_compiling():
        return flex_attention
    if "flex" not in _COMPILED:
        _COMPILED["flex"] = torch.compile(flex_attention)  # shapes go dynamic after the first new width
    return _COMPILED["flex"]


def _dense(q, k, v, block_mask: BlockMask, scale: float | None, enable_gqa: bool) -> torch.Tensor:
    """The reference: sdpa with the block mask's element mask materialised (supports backward on CPU)."""
    rows, _, length, _ = q.shape
    mask = create_mask(block_mask.mask_mod, rows, 1, length, length, device=q.device)
    if enable_gqa:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def _compute_dtype(query: torch.Tensor) -> torch.dtype:
    device = query.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype


def _attention(dense: bool):
    def attention(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: BlockMask | torch.Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        """(batch, seq, heads, dim) output of causal attention within each example of each packed row."""
        if dropout:
            raise ValueError(f"{NAME} attention has no dropout: set the model's attention_dropout to 0")
        if kwargs.get("past_key_values") is not None or kwargs.get("cache") is not None:
            raise ValueError(f"{NAME} attention is for training passes without a KV cache")
        rows, _, length, _ = query.shape
        if isinstance(attention_mask, BlockMask):
            block_mask = attention_mask
        elif position_ids is not None:  # no decoder hook: one mask per layer
            block_mask = document_block_mask(position_ids.expand(rows, -1))
        else:
            raise ValueError(f"{NAME} attention needs a BlockMask or position_ids to find the packed examples")
        dtype = _compute_dtype(query)
        q, k, v = query.to(dtype), key.to(dtype), value.to(dtype)
        gqa = q.shape[1] != k.shape[1]
        if dense:
            out = _dense(q, k, v, block_mask, scaling, gqa)
        else:
            out = _kernel(q.device)(q, k, v, block_mask=block_mask, scale=scaling, enable_gqa=gqa)
        return out.transpose(1, 2).contiguous(), None

    return attention


flex_document_attention = _attention(dense=False)
dense_document_attention = _attention(dense=True)


def register() -> None:
    from transformers import AttentionInterface

    for name, fn in ((NAME, flex_document_attention), (DENSE_NAME, dense_document_attention)):
        if name not in AttentionInterface._global_mapping:
            AttentionInterface.register(name, fn)
