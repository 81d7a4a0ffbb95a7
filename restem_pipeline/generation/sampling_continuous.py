"""``ContinuousBatchingSampler``: transformers' continuous batching (paged attention) behind ``Sampler``.

One ``generate`` call is one continuous-batching session over the model (``init_continuous_batching``:
a paged KV cache, a scheduler that refills finished slots, CUDA graphs on a GPU; the API
``generate_batch`` wraps, driven here directly so it behaves the same in transformers 5.17 and 5.25):

- prompts are the same token ids as every sampler's (``modeling.prompt_input_ids``: one BOS);
- ``n`` samples per prompt are ``n`` requests of the same prompt (``num_return_sequences`` forks are
  collected only by newer transformers); greedy runs one request per prompt and repeats it n times;
- the whole workload is queued before the session starts, so the scheduler sees the same requests in
  the same order on every run; the session seeds torch with ``batch_seed(seed, 0)``
  (``ContinuousBatchingConfig.seed``) and samples each step's batch with one ``multinomial``: a
  re-run with the same settings, model and device reproduces every sample, while the draws a
  request gets depend on the whole workload (not per-sequence streams as in restem's engine);
- sampling settings map to a ``GenerationConfig`` like ``TransformersSampler``'s (``top_k=None`` is 0,
  ``top_p=None`` 1.0), on top of the model's own generation config;
- requests end at EOS or ``max_new_tokens``; continuous batching has no stop-string criterion, so
  the text is cut at the first stop string afterwards (``truncate_at_stop``, ``finished``), and
  ``num_tokens`` counts up to the token that completed it (``stop_token_count``, as the engine and
  vLLM count). ``cancel_at_stop=True`` streams tokens and cancels a request once its text holds a stop
  string, saving the tokens after it, but when a cancellation lands depends on timing, which changes
  later batches: sampled completions are then not reproducible (greedy float32 ones still are);
- on CPU the cache and batch are sized from the workload (``num_blocks`` for every request at once,
  capped by ``memory_budget_mb``, default half the free memory; ``max_batch_tokens`` 512), since
  transformers' sizing targets GPU memory; on a GPU transformers sizes them (``max_batch_tokens``
  may be given). Attention stays the model's own (SDPA, paged): the switch to flash attention is off,
  since it would fetch a kernel from the Hub where the package is missing.

Greedy float32 output is ``generate()``'s token for token (checked on CPU). Not covered: streaming
to the caller, LoRA adapters, tensor parallelism, a manager kept across calls.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch
from transformers.generation.configuration_utils import ContinuousBatchingConfig
from transformers.generation.continuous_batching.utils import WorkloadHints

from restem_pipeline.generation.engine import available_memory_bytes
from restem_pipeline.generation.modeling import load_model, load_tokenizer, prompt_input_ids
from restem_pipeline.generation.sampling import (
    Completion,
    Progress,
    SamplingParams,
    batch_seed,
    stop_candidates,
    stop_token_count,
    truncate_at_stop,
)

CPU_MAX_BATCH_TOKENS = 512  # tokens per forward on CPU (prefill chunks and decode rows together)


class ContinuousBatchingError(RuntimeError):
    """The continuous-batching session failed or lost requests."""


def _config_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}


class ContinuousBatchingSampler:
    def __init__(
        self,
        model_path: str | Path,
        device: str = "cpu",
        dtype: str = "float32",
        stop: tuple[str, ...] = (),
        cancel_at_stop: bool = False,
        max_batch_tokens: int | None = None,
        memory_budget_mb: float | None = None,
    ):
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1 (or None), got {max_batch_tokens}")
        if memory_budget_mb is not None and memory_budget_mb <= 0:
            raise ValueError(f"memory_budget_mb must be > 0 (or None), got {memory_budget_mb}")
        self.tokenizer = load_tokenizer(model_path)
        self.model = load_model(model_path, device=device, dtype=dtype).eval()
        self.device, self.stop, self.cancel_at_stop = device, stop, cancel_at_stop
        self.max_batch_tokens, self.memory_budget_mb = max_batch_tokens, memory_budget_mb
        self._candidates = stop_candidates(self.tokenizer, stop, self.model.config.vocab_size)
        self.stats: dict[str, int] = {}

    @property
    def on_gpu(self) -> bool:
        return torch.device(self.device).type != "cpu"

    # -- configuration -----------------------------------------------------------------------------
    def generation_config(self, params: SamplingParams):
        config = copy.deepcopy(self.model.generation_config)
        sampled = {"temperature": params.temperature, "top_k": params.top_k or 0, "top_p": params.top_p or 1.0}
        config.update(
            do_sample=not params.greedy,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            num_return_sequences=1,
            **(dict.fromkeys(sampled) if params.greedy else sampled),
        )
        return config

    def kv_bytes_per_token(self) -> int:
        cfg = self.model.config
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cfg.num_hidden_layers * 2 * kv_heads * head_dim * self.model.dtype.itemsize

    def batching_config(self, params: SamplingParams, inputs: list[list[int]]) -> ContinuousBatchingConfig:
        fields = _config_fields()
        kwargs: dict = {"seed": batch_seed(params.seed, 0)}
        if "auto_switch_to_flash" in fields:
            kwargs["auto_switch_to_flash"] = False
        if self.max_batch_tokens is not None:
            kwargs["max_batch_tokens"] = self.max_batch_tokens
        if not self.on_gpu:
            default = ContinuousBatchingConfig()
            block = default.page_size if "page_size" in fields else default.block_size  # 5.25 renamed it
            blocks = [-(-(len(s) + params.max_new_tokens) // block) for s in inputs]
            budget = self.memory_budget_mb * 2**20 if self.memory_budget_mb else available_memory_bytes() // 2
            fit = int(budget // (block * self.kv_bytes_per_token()))
            kwargs["num_blocks"] = max(max(blocks) + 1, min(sum(blocks) + 1, fit))
            kwargs.setdefault("max_batch_tokens", CPU_MAX_BATCH_TOKENS)
            kwargs["use_cuda_graph"] = False
        return ContinuousBatchingConfig(**kwargs)

    def _keep_sdpa(self) -> None:
        """transformers 5.17 has no ``auto_switch_to_flash``: a paged implementation is kept as it is."""
        impl = self.model.config._attn_implementation
        if "auto_switch_to_flash" not in _config_fields() and not impl.startswith("paged|") and "flash" not in impl:
            self.model.set_attn_implementation(f"paged|{impl}")

    # -- generation --------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self, prompts: list[str], params: SamplingParams, progress: Progress | None = None
    ) -> list[list[Completion]]:
        if not prompts:
            return []
        seqs = prompt_input_ids(self.tokenizer, prompts)
        for i, s in enumerate(seqs):
            if not s:
                raise ValueError(f"prompt {i} is empty and the tokenizer has no BOS token to start from")
        copies = 1 if params.greedy else params.n
        inputs = [s for s in seqs for _ in range(copies)]  # request k: prompt k // copies, sample k % copies
        self._keep_sdpa()
        hints = WorkloadHints(
            max_prompt_length=max(map(len, inputs)),
            max_generated_length=params.max_new_tokens,
            num_requests=len(inputs),
        )
        manager = self.model.init_continuous_batching(
            generation_config=self.generation_config(params),
            continuous_batching_config=self.batching_config(params, inputs),
            workload_hints=hints,
        )
        try:
            if self.on_gpu:
                manager.warmup()  # CUDA graphs captured before any request runs
            ids = manager.add_requests(
                inputs=inputs, max_new_tokens=params.max_new_tokens, streaming=self.cancel_at_stop and bool(self.stop)
            )
            manager.start()
            tokens = self._collect(manager, ids, progress, params.n // copies)
        finally:
            manager.stop(block=True, timeout=30)
            manager.destroy()
        out = []
        for i in range(len(prompts)):
            row = [self._completion(tokens[ids[i * copies + j]]) for j in range(copies)]
            out.append(row if copies == params.n else row * params.n)
        return out

    def _collect(self, manager, ids: list[str], progress: Progress | None, per_request: int) -> dict[str, list[int]]:
        """Generated token ids per request id (a cancelled request's last streamed ones); ``per_request``
        completions per request, for progress."""
        pending, tokens = set(ids), {}
        self.stats = {"requests": len(ids), "cancelled": 0}
        while pending:
            result = manager.get_result(timeout=1.0)
            if result is None:
                if not manager.is_running():
                    raise ContinuousBatchingError(
                        f"the continuous-batching session stopped with {len(pending)} of {len(ids)} requests unfinished"
                    )
                continue
            rid = result.request_id
            if rid not in pending:
                continue  # a streamed update after its request was cancelled
            if result.error is not None:
                raise ContinuousBatchingError(f"request {rid} failed: {result.error}")
            if not result.is_finished():
                if not self._hit_stop(result.generated_tokens):
                    continue
                manager.cancel_request(rid)
                self.stats["cancelled"] += 1
            tokens[rid] = list(result.generated_tokens)
            pending.discard(rid)
            if progress:
                progress(len(tokens) * per_request, len(ids) * per_request)
        return tokens

    def _hit_stop(self, generated: list[int]) -> bool:
        if not generated or (self._candidates is not None and not self._candidates[generated[-1]]):
            return False
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        return any(s in text for s in self.stop)

    def _completion(self, ids: list[int]) -> Completion:
        tok = self.tokenizer
        eos = tok.eos_token_id in ids
        if eos:
            ids = ids[: ids.index(tok.eos_token_id)]
        while ids and ids[-1] == tok.pad_token_id:
            ids.pop()
        text, stopped = truncate_at_stop(tok.decode(ids, skip_special_tokens=True), self.stop)
        if stopped:
            ids = ids[: stop_token_count(tok, ids, self.stop) or len(ids)]
        return Completion(text, len(ids), eos or stopped)
