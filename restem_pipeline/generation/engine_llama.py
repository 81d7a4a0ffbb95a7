"""A hand-written forward pass with a static, pre-allocated KV cache for Llama-style causal LMs.

``LlamaStyleForward`` takes the weights of a loaded Hugging Face ``LlamaForCausalLM`` (and the
same layout: Mistral, Qwen2, Qwen3) and runs prefill and one-token decode steps against a
``KVCache`` it allocates once per batch: no per-step cache concatenation, no mask building, no
output objects. The ops mirror transformers' own (RMSNorm in float32, rotary tables taken from the
model's ``rotary_emb``, ``scaled_dot_product_attention``), so float32 results match the HF forward.
Rows of a batch are left-padded to one column grid: every row writes its next token into the same
cache column, and pad columns are masked out; or (``SharedPart``, half precision on CPU or GPU)
the samples of a prompt share its cache rows and attend to them as one query block. Nothing here
is CPU-only: on a CUDA device the same ops run there (the residual stream in the half-precision
dtype, as transformers does; ``act_dtype`` sets it). ``max_logit_gap`` compares logits with the HF
forward once, so an architecture detail this module does not model fails loudly instead of
sampling garbage. Not covered: sampling, batching and memory policy
(``engine``), sliding-window attention, architectures outside ``SUPPORTED_MODEL_TYPES``.
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

    def select(self, rows: torch.Tensor) -> KVCache:
        """A copy with rows ``rows`` (repeats allowed)."""
        return KVCache([t.index_select(0, rows) for t in self.k], [t.index_select(0, rows) for t in self.v])

    def keep(self, rows: torch.Tensor, first_col: int, end_col: int) -> KVCache:
        """A compact copy holding only ``rows`` and columns ``first_col:end_col`` (the rest freed)."""
        cap = self.k[0].shape[2] - first_col

        def take(t: torch.Tensor) -> torch.Tensor:
            out = t.new_zeros(len(rows), t.shape[1], cap, t.shape[3])  # zeros: dense reads see unused columns
            out[:, :, : end_col - first_col] = t[:, :, first_col:end_col].index_select(0, rows)
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
class Part:
    """Rows ``rows`` of a forward's batch and the cache they use (their own, rows aligned with them).

    The current tokens' keys/values go to cache columns ``write``; queries attend to columns
    ``read`` where ``mask`` (rows, 1, query len, columns; bool) allows, or all of them when ``mask``
    is None.
    """

    rows: slice
    cache: KVCache
    write: slice
    read: slice
    mask: torch.Tensor | None


@dataclass(frozen=True)
class SharedPart:
    """Decode rows ``rows`` (one token each) whose prompts' keys/values are stored once, not per row.

    Cache row u (a *unit*) holds one prompt, right-aligned to column ``end``, followed by the
    generated tokens of up to ``slots`` rows interleaved: the token of step s of the row in slot j
    is column ``end + s * slots + j``. The unit's rows attend together, as one query block of
    ``slots * query heads per KV head`` rows against the unit's cache (one attention problem per unit
    and KV head instead of one per row: the prompt is read once for all its samples); ``mask``
    (units, 1, that block, columns; additive, cache dtype) lets each slot see its prompt and only
    its own generated tokens. Queries attend to columns ``0:read``. ``write`` indexes the new
    keys/values of (row, KV head) in the cache viewed as (units * KV heads * columns, head_dim);
    ``flat`` is each row's unit * slots + slot, None when the rows fill every slot in order.
    """

    rows: slice
    cache: KVCache
    write: torch.Tensor  # (rows * kv_heads,) long
    read: int
    mask: torch.Tensor
    slots: int
    flat: torch.Tensor | None


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

    def __init__(
        self,
        model,
        dtype: torch.dtype,
        device: str | torch.device = "cpu",
        shared_decode: bool | None = None,
        act_dtype: torch.dtype | None = None,
    ):
        _check_supported(model)
        cfg, inner = model.config, model.model
        self.model_type = cfg.model_type
        self.dtype, self.device = dtype, torch.device(device)
        # half precision (CPU or GPU): decode rows share their prompt's cache (``SharedPart``) unless
        # ``shared_decode=False``; float32 keeps a cache row per sequence and transformers' own attention
        # call, so greedy matches generate()
        self.shared_decode = dtype != torch.float32 if shared_decode is None else shared_decode
        # on CPU the residual stream, norms and rotary stay float32: only matrix products (weights, their
        # inputs) and the KV cache are half precision, so bf16 rarely changes a greedy choice; on a GPU
        # they are ``dtype``, as in transformers' own half-precision forward
        self.act_dtype = act_dtype or (torch.float32 if self.device.type == "cpu" else dtype)
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

        def w(*ts: torch.Tensor | None, to: torch.dtype = dtype) -> torch.Tensor | None:
            if ts[0] is None:
                return None
            t = torch.cat([x.detach() for x in ts]) if len(ts) > 1 else ts[0].detach()
            return t.to(device=self.device, dtype=to)

        def n(t: torch.Tensor | None) -> torch.Tensor | None:
            return w(t, to=self.act_dtype)

        self.layers: list[_Layer] = []
        for layer in inner.layers:
            att, mlp = layer.self_attn, layer.mlp
            self.act = mlp.act_fn
            qn, kn = getattr(att, "q_norm", None), getattr(att, "k_norm", None)
            self.layers.append(
                _Layer(
                    ln1=n(layer.input_layernorm.weight),
                    ln2=n(layer.post_attention_layernorm.weight),
                    w_qkv=wt(att.q_proj.weight, att.k_proj.weight, att.v_proj.weight),
                    b_qkv=w(att.q_proj.bias, att.k_proj.bias, att.v_proj.bias),
                    wo=wt(att.o_proj.weight),
                    q_norm=n(qn.weight) if qn is not None else None,
                    k_norm=n(kn.weight) if kn is not None else None,
                    w_gate_up=wt(mlp.gate_proj.weight, mlp.up_proj.weight),
                    w_down=wt(mlp.down_proj.weight),
                )
            )
        self.eps = _norm_eps(inner.layers[0].input_layernorm)
        self.final_eps = _norm_eps(inner.norm)
        self.embed = w(inner.embed_tokens.weight)
        self.final_norm = n(inner.norm.weight)
        self.lm_head = wt(model.lm_head.weight)
        self._rotary = inner.rotary_emb
        self.cos = self.sin = torch.empty(0, self.head_dim, dtype=self.act_dtype, device=self.device)
        self.ensure_positions(getattr(cfg, "max_position_embeddings", 2048))

    def ensure_positions(self, n: int) -> None:
        """Rotary tables for positions ``0..n-1``, from the model's own rotary module."""
        if n <= self.cos.shape[0]:
            return
        dev = self._rotary.inv_freq.device
        with torch.no_grad():
            cos, sin = self._rotary(torch.zeros(1, device=dev), torch.arange(n, device=dev)[None])
        sin = torch.cat((-sin[0, :, : self.head_dim // 2], sin[0, :, self.head_dim // 2 :]), -1)  # rotate_half's sign
        self.cos, self.sin = cos[0].to(self.device, self.act_dtype), sin.to(self.device, self.act_dtype)

    # -- cache ---------------------------------------------------------------------------------
    def kv_bytes_per_token(self) -> int:
        """Bytes of KV cache one sequence needs per token (all layers, keys and values)."""
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim * self.dtype.itemsize

    def activation_bytes_per_token(self) -> int:
        """Rough peak of live activations per prompt token during prefill (hidden, qkv, MLP, norms)."""
        qkv = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        return (6 * self.hidden_size + qkv + 3 * self.intermediate_size) * max(self.dtype.itemsize, 4)

    def new_cache(self, batch: int, columns: int) -> KVCache:
        shape = (batch, self.num_kv_heads, columns, self.head_dim)
        make = lambda: torch.zeros(shape, dtype=self.dtype, device=self.device)  # noqa: E731
        return KVCache([make() for _ in self.layers], [make() for _ in self.layers])

    # -- forward -------------------------------------------------------------------------------
    def _attend(self, q, k_cache, v_cache, read: slice, mask) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q,
            k_cache[:, :, read],
            v_cache[:, :, read],
            attn_mask=mask,
            scale=self.scaling,
            enable_gqa=self.num_heads != self.num_kv_heads,
        )

    def _attend_shared(self, q: torch.Tensor, k_cache, v_cache, part: SharedPart) -> torch.Tensor:
        """Attention for ``SharedPart`` rows: q (rows, heads, 1, dim) -> (rows, heads, 1, dim)."""
        b, nq, _, d = q.shape
        nk, units, n = self.num_kv_heads, k_cache.shape[0], part.slots
        g = nq // nk
        q = q.reshape(b, nq, d)
        if part.flat is not None:  # some slots are empty (rows ended, or a prompt with fewer samples)
            q = q.new_zeros(units * n, nq, d).index_copy_(0, part.flat, q)
        q = q.view(units, n, nk, g, d).transpose(1, 2).reshape(units, nk, n * g, d)
        out = F.scaled_dot_product_attention(
            q,
            k_cache[:, :, : part.read],
            v_cache[:, :, : part.read],
            attn_mask=part.mask[..., : part.read],
            scale=self.scaling,
        )
        out = out.view(units, nk, n, g, d).transpose(1, 2).reshape(units * n, nq, d)
        if part.flat is not None:
            out = out.index_select(0, part.flat)
        return out.view(b, nq, 1, d)

    def _layer(self, x, b: int, t: int, index: int, cos, sin, parts: list[Part | SharedPart]) -> torch.Tensor:
        """One decoder layer on ``x`` (b * t, hidden): activations stay 2-D so every product is one ``mm``."""
        p = self.layers[index]
        nq, nk, d = self.num_heads, self.num_kv_heads, self.head_dim
        h = _rms_norm(x, p.ln1, self.eps).to(self.dtype)
        qkv = torch.mm(h, p.w_qkv) if p.b_qkv is None else torch.addmm(p.b_qkv, h, p.w_qkv)
        qkv = qkv.view(b, t, nq + 2 * nk, d)
        qk, v = qkv[:, :, : nq + nk], qkv[:, :, nq + nk :]
        if p.q_norm is not None:
            qk = torch.cat(
                (_rms_norm(qk[:, :, :nq], p.q_norm, self.eps), _rms_norm(qk[:, :, nq:], p.k_norm, self.eps)), 2
            )
        qk = qk.to(self.act_dtype).transpose(1, 2)  # widened once: mixed-dtype products are slow on CPU
        qk = (qk * cos) + (qk.roll(d // 2, -1) * sin)  # rotary on q and k at once; sin's first half is negated
        q, k, v = qk[:, :nq].to(self.dtype), qk[:, nq:], v.transpose(1, 2)
        outs = []
        whole = len(parts) == 1
        for part in parts:
            kc, vc = part.cache.k[index], part.cache.v[index]
            kp, vp, qp = (k, v, q) if whole else (k[part.rows], v[part.rows], q[part.rows])
            if isinstance(part, SharedPart):
                kc.view(-1, d).index_copy_(0, part.write, kp.reshape(-1, d).to(kc.dtype))
                vc.view(-1, d).index_copy_(0, part.write, vp.reshape(-1, d).to(vc.dtype))
                outs.append(self._attend_shared(qp, kc, vc, part))
                continue
            kc[:, :, part.write] = kp
            vc[:, :, part.write] = vp
            outs.append(self._attend(qp, kc, vc, part.read, part.mask))
        attn = outs[0] if len(outs) == 1 else torch.cat(outs)
        x = x + torch.mm(attn.transpose(1, 2).reshape(b * t, nq * d), p.wo)
        h = _rms_norm(x, p.ln2, self.eps).to(self.dtype)
        gate, up = torch.mm(h, p.w_gate_up).chunk(2, dim=-1)
        return x + torch.mm(self.act(gate) * up, p.w_down)

    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        parts: list[Part | SharedPart],
        all_positions: bool = False,
        float_logits: bool = True,
    ) -> torch.Tensor:
        """Logits of the last column (or every column) for ``ids`` (batch, len): float32, or with
        ``float_logits=False`` the lm_head's own dtype (no copy of a batch x vocab tensor).

        ``parts`` cover the batch's rows in order, each with its cache (see ``Part``, ``SharedPart``);
        ``positions`` (batch, len) are rotary positions.
        """
        b, t = ids.shape
        x = F.embedding(ids.view(-1), self.embed).to(self.act_dtype)
        cos, sin = self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)
        for index in range(self.num_layers):
            x = self._layer(x, b, t, index, cos, sin, parts)
        if not all_positions and t > 1:
            x = x.view(b, t, -1)[:, -1]
        logits = torch.mm(_rms_norm(x, self.final_norm, self.final_eps).to(self.dtype), self.lm_head)
        if float_logits:
            logits = logits.float()
        return logits.view(b, t, -1) if all_positions else logits


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
        part = Part(slice(0, b), cache, slice(0, width), slice(0, width), prefill_mask(lengths, width))
        ours = fw.forward(ids, positions, [part], all_positions=True)
        ref = model(input_ids=ids, attention_mask=mask2d.long(), position_ids=positions).logits.float()
    return (ours - ref)[mask2d].abs().max().item()
