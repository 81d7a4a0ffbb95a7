"""A hand-written forward pass with a static, pre-allocated KV cache for Llama-style causal LMs.

``LlamaStyleForward`` takes the weights of a loaded Hugging Face ``LlamaForCausalLM`` (and the
same layout: Mistral, Qwen2, Qwen3) and runs prefill and one-token decode steps against a
``KVCache`` it allocates once per batch: no per-step cache concatenation, no mask building, no
output objects. The ops mirror transformers' own (RMSNorm in float32, rotary tables taken from the
model's ``rotary_emb``, ``scaled_dot_product_attention``), so float32 results match the HF forward.
Rows of a batch are left-padded to one column grid: every row writes its next token into the same
cache column, and pad columns are masked out. ``check_against_hf`` compares logits with the HF
forward once, so an architecture detail this module does not model fails loudly instead of
sampling garbage. Not covered: sampling, batching and memory policy (``engine``), sliding-window
attention, architectures outside ``SUPPORTED_MODEL_TYPES``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


class UnsupportedModelError(ValueError):
    """The model is not a Llama-style causal LM this engine can run."""


@dataclass
class KVCache:
    """Per-layer key/value tensors of shape (batch, kv_heads, columns, head_dim)."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]

    @property
    def batch(self) -> int:
        return self.k[0].shape[0]

    def keep(self, rows: torch.Tensor, first_col: int, end_col: int) -> KVCache:
        """A compact copy holding only ``rows`` and columns ``first_col:end_col`` (the rest freed)."""
        cap = self.k[0].shape[2] - first_col

        def take(t: torch.Tensor) -> torch.Tensor:
            out = t.new_empty(len(rows), t.shape[1], cap, t.shape[3])
            out[:, :, : end_col - first_col] = t.index_select(0, rows)[:, :, first_col:end_col]
            return out

        return KVCache([take(t) for t in self.k], [take(t) for t in self.v])


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm: normalise in float32, cast back, scale."""
    if x.dtype == torch.float32:
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


@dataclass(frozen=True)
class Window:
    """Rows ``rows`` of a batch attend to cache columns from ``first_col`` on, where ``mask`` is True.

    ``mask`` is (rows, 1, query len, columns) or None when every column in the window is visible.
    """

    rows: slice
    first_col: int
    mask: torch.Tensor | None


@dataclass
class _Layer:
    ln1: torch.Tensor
    ln2: torch.Tensor
    w_qkv: torch.Tensor  # q, k and v projections stacked (one GEMM), transposed (in, out)
    b_qkv: torch.Tensor | None
    wo: torch.Tensor
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    w_gate_up: torch.Tensor  # gate and up projections stacked, transposed
    w_down: torch.Tensor


def _norm_eps(module) -> float:
    for name in ("variance_epsilon", "eps"):
        if hasattr(module, name):
            return float(getattr(module, name))
    raise UnsupportedModelError(f"cannot find the epsilon of norm module {type(module).__name__}")


def _check_supported(model) -> None:
    cfg = model.config
    kind = getattr(cfg, "model_type", None)
    if kind not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"the restem engine runs Llama-style models ({', '.join(SUPPORTED_MODEL_TYPES)}), not model_type "
            f"{kind!r}; use SamplerResource(backend='transformers') for this model"
        )
    inner = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    missing = [n for n in needed if inner is None or not hasattr(inner, n)]
    if missing or not hasattr(model, "lm_head"):
        raise UnsupportedModelError(
            f"model_type {kind!r} does not have the Llama module layout (missing {missing or ['lm_head']}); "
            "use SamplerResource(backend='transformers')"
        )
    biases = [getattr(model.lm_head, "bias", None), *(layer.self_attn.o_proj.bias for layer in inner.layers)]
    if getattr(cfg, "mlp_bias", False) or any(b is not None for b in biases):
        raise UnsupportedModelError(
            f"model_type {kind!r} with MLP, attention-output or lm_head biases is not supported by the restem "
            "engine; use SamplerResource(backend='transformers')"
        )


class LlamaStyleForward:
    """Prefill and decode over a static KV cache, with the weights of ``model`` cast to ``dtype``."""

    def __init__(self, model, dtype: torch.dtype, device: str | torch.device = "cpu"):
        _check_supported(model)
        cfg, inner = model.config, model.model
        self.model_type = cfg.model_type
        self.dtype, self.device = dtype, torch.device(device)
        # On CPU the cache (and attention) stays float32 even for bf16 weights: CPU SDPA is slow in bf16
        # and its matmuls copy strided cache windows; on GPU it follows the weights.
        self.cache_dtype = torch.float32 if self.device.type == "cpu" else dtype
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.num_layers = cfg.num_hidden_layers
        self.hidden_size = cfg.hidden_size
        self.intermediate_size = cfg.intermediate_size
        self.vocab_size = model.lm_head.weight.shape[0]
        window = getattr(cfg, "sliding_window", None)
        self.sliding_window = window if window and getattr(cfg, "use_sliding_window", True) else None

        def wt(*ts: torch.Tensor) -> torch.Tensor:
            """Linear weights stacked and stored transposed: ``x @ w`` is 5-15% faster than ``F.linear`` here."""
            return w(*ts).t().contiguous()

        def w(*ts: torch.Tensor | None) -> torch.Tensor | None:
            if ts[0] is None:
                return None
            t = torch.cat([x.detach() for x in ts]) if len(ts) > 1 else ts[0].detach()
            return t.to(device=self.device, dtype=dtype)

        self.layers: list[_Layer] = []
        for layer in inner.layers:
            att, mlp = layer.self_attn, layer.mlp
            self.act = mlp.act_fn
            qn, kn = getattr(att, "q_norm", None), getattr(att, "k_norm", None)
            self.layers.append(
                _Layer(
                    ln1=w(layer.input_layernorm.weight),
                    ln2=w(layer.post_attention_layernorm.weight),
                    w_qkv=wt(att.q_proj.weight, att.k_proj.weight, att.v_proj.weight),
                    b_qkv=w(att.q_proj.bias, att.k_proj.bias, att.v_proj.bias),
                    wo=wt(att.o_proj.weight),
                    q_norm=w(qn.weight) if qn is not None else None,
                    k_norm=w(kn.weight) if kn is not None else None,
                    w_gate_up=wt(mlp.gate_proj.weight, mlp.up_proj.weight),
                    w_down=wt(mlp.down_proj.weight),
                )
            )
        self.eps = _norm_eps(inner.layers[0].input_layernorm)
        self.final_eps = _norm_eps(inner.norm)
        self.embed = w(inner.embed_tokens.weight)
        self.final_norm = w(inner.norm.weight)
        self.lm_head = wt(model.lm_head.weight)
        self._rotary = inner.rotary_emb
        self.cos = self.sin = torch.empty(0, self.head_dim, dtype=dtype, device=self.device)
        self.ensure_positions(getattr(cfg, "max_position_embeddings", 2048))

    def ensure_positions(self, n: int) -> None:
        """Rotary tables for positions ``0..n-1``, from the model's own rotary module."""
        if n <= self.cos.shape[0]:
            return
        dev = self._rotary.inv_freq.device
        with torch.no_grad():
            cos, sin = self._rotary(torch.zeros(1, device=dev), torch.arange(n, device=dev)[None])
        sin = torch.cat((-sin[0, :, : self.head_dim // 2], sin[0, :, self.head_dim // 2 :]), -1)  # rotate_half's sign
        self.cos, self.sin = cos[0].to(self.device, self.dtype), sin.to(self.device, self.dtype)

    # -- cache ---------------------------------------------------------------------------------
    def kv_bytes_per_token(self) -> int:
        """Bytes of KV cache one sequence needs per token (all layers, keys and values)."""
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim * self.cache_dtype.itemsize

    def activation_bytes_per_token(self) -> int:
        """Rough peak of live activations per prompt token during prefill (hidden, qkv, MLP, norms)."""
        qkv = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        return (6 * self.hidden_size + qkv + 3 * self.intermediate_size) * max(self.dtype.itemsize, 4)

    def new_cache(self, batch: int, columns: int) -> KVCache:
        shape = (batch, self.num_kv_heads, columns, self.head_dim)
        make = lambda: torch.zeros(shape, dtype=self.cache_dtype, device=self.device)  # noqa: E731
        return KVCache([make() for _ in self.layers], [make() for _ in self.layers])

    # -- forward -------------------------------------------------------------------------------
    def _attend(self, q, k_cache, v_cache, first_col: int, end: int, mask) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q,
            k_cache[:, :, first_col:end],
            v_cache[:, :, first_col:end],
            attn_mask=mask,
            scale=self.scaling,
            enable_gqa=self.num_heads != self.num_kv_heads,
        )

    def _layer(self, x, p: _Layer, cos, sin, k_cache, v_cache, cols: slice, windows: list[Window]) -> torch.Tensor:
        b, t, _ = x.shape
        nq, nk, d = self.num_heads, self.num_kv_heads, self.head_dim
        h = _rms_norm(x, p.ln1, self.eps)
        qkv = torch.matmul(h, p.w_qkv)
        if p.b_qkv is not None:
            qkv = qkv + p.b_qkv
        qkv = qkv.view(b, t, nq + 2 * nk, d)
        qk, v = qkv[:, :, : nq + nk], qkv[:, :, nq + nk :]
        if p.q_norm is not None:
            qk = torch.cat(
                (_rms_norm(qk[:, :, :nq], p.q_norm, self.eps), _rms_norm(qk[:, :, nq:], p.k_norm, self.eps)), 2
            )
        qk = qk.transpose(1, 2)
        qk = (qk * cos) + (qk.roll(d // 2, -1) * sin)  # rotary on q and k at once; sin's first half is negated
        q, k = qk[:, :nq].to(self.cache_dtype), qk[:, nq:]
        k_cache[:, :, cols] = k
        v_cache[:, :, cols] = v.transpose(1, 2)
        if len(windows) == 1:
            w = windows[0]
            attn = self._attend(q, k_cache, v_cache, w.first_col, cols.stop, w.mask)
        else:
            attn = torch.cat(
                [
                    self._attend(q[w.rows], k_cache[w.rows], v_cache[w.rows], w.first_col, cols.stop, w.mask)
                    for w in windows
                ]
            )
        x = x + torch.matmul(attn.transpose(1, 2).reshape(b, t, nq * d).to(self.dtype), p.wo)
        h = _rms_norm(x, p.ln2, self.eps)
        gate, up = torch.matmul(h, p.w_gate_up).chunk(2, dim=-1)
        return x + torch.matmul(self.act(gate) * up, p.w_down)

    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache,
        cols: slice,
        windows: list[Window],
        all_positions: bool = False,
    ) -> torch.Tensor:
        """Float32 logits of the last column (or every column) for ``ids`` (batch, len).

        Keys/values go to cache columns ``cols``. Each ``Window`` (together covering the batch's
        rows in order) says which rows attend to which columns, up to ``cols.stop``; ``positions``
        (batch, len) are rotary positions.
        """
        x = F.embedding(ids, self.embed)
        cos, sin = self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)
        for p, kc, vc in zip(self.layers, cache.k, cache.v, strict=True):
            x = self._layer(x, p, cos, sin, kc, vc, cols, windows)
        h = _rms_norm(x if all_positions else x[:, -1], self.final_norm, self.final_eps)
        return torch.matmul(h, self.lm_head).float()


def prefill_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(batch, 1, width, width) causal mask for left-padded rows; pad queries see only themselves."""
    cols = torch.arange(width, device=lengths.device)
    real = cols[None, :] >= (width - lengths)[:, None]  # (batch, width)
    causal = cols[None, :] <= cols[:, None]  # (width, width)
    mask = causal[None] & real[:, None, :]
    return (mask | torch.eye(width, dtype=torch.bool, device=lengths.device)[None]).unsqueeze(1)


def max_logit_gap(fw: LlamaStyleForward, model, ids: torch.Tensor, lengths: torch.Tensor) -> float:
    """Largest |logit difference| between this forward and ``model``'s own, over every real position."""
    b, width = ids.shape
    mask2d = torch.arange(width, device=ids.device)[None, :] >= (width - lengths)[:, None]
    positions = (mask2d.long().cumsum(-1) - 1).clamp(min=0)
    cache = fw.new_cache(b, width)
    with torch.inference_mode():
        window = Window(slice(0, b), 0, prefill_mask(lengths, width))
        ours = fw.forward(ids, positions, cache, slice(0, width), [window], all_positions=True)
        ref = model(input_ids=ids, attention_mask=mask2d.long(), position_ids=positions).logits.float()
    return (ours - ref)[mask2d].abs().max().item()
