"""``CachedSampler``: restem's own decode loop, a faster drop-in for ``generate()`` behind ``Sampler``.

Per call: prompts are expanded N times and sorted by length; consecutive jobs form a batch whose
size is capped by ``batch_size`` and by a memory budget (KV cache + activations per sequence,
estimated from the model's shape, a prompt's share counted once for its N samples). Each batch
prefills its distinct prompts once, in length buckets (left padding only within a bucket; the N
samples of a prompt share its prefill), then decodes one token per step over a static KV cache
(``engine_llama``): in float32 a cache row per sequence; in half precision the N samples of a prompt
share one copy of its keys/values (``engine_llama.SharedPart``; ``shared_decode=False`` keeps a row
each). Rows that hit EOS or a stop string are dropped from the live batch and its cache. Sampling
(temperature, top-k, top-p) draws from a per-sequence stream seeded with ``batch_seed(seed, job
index)``, so in float32 a completion does not depend on batch size, memory budget, out-of-memory
retries, which other rows finished or the thread count: a re-run reproduces every completion, and
greedy (``temperature=0``) is exact argmax, token for token ``generate()``'s. In half precision
those change rounding (how many cache columns a row's attention sums over; oneDNN's bf16 products
split some sums by thread), so a completion is reproduced by a re-run with the same batches and
thread count. ``threads`` pins torch's thread count; by default ``engine_decode.ThreadTuner`` picks
it per batch and every few steps (one thread can be many times faster than two on a busy machine).
``dtype='auto'`` picks bfloat16 where the CPU (or GPU) has native bf16 and a probe shows bf16 keeps
the model's next-token choices; the sampling distribution is always float32 (argmax and top-k are
taken on the lm_head's own output). On a CUDA device (``device="cuda"``) the same loop runs with
weights, cache and activations there, bf16 by ``dtype='auto'``, and torch's thread count pinned
(nothing to tune: the GPU does the work). Completions follow ``TransformersSampler``: text cut at
the first stop string, ``finished`` when EOS or a stop string ended it; ``num_tokens`` counts tokens
generated up to EOS or up to the token that completed the stop string. Not covered: continuous
batching (refilling finished slots), speculative decoding, a compiled decode step, non-Llama
architectures (see ``engine_llama.SUPPORTED_MODEL_TYPES``; ``TransformersSampler`` runs anything).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from restem_pipeline.generation.engine_decode import SHARED_SLOTS, ThreadTuner, decode_batch
from restem_pipeline.generation.engine_llama import (
    LlamaStyleForward,
    Part,
    UnsupportedModelError,
    max_logit_gap,
    prefill_mask,
)
from restem_pipeline.generation.modeling import load_model, load_tokenizer, prompt_input_ids
from restem_pipeline.generation.sampling import (
    Completion,
    Progress,
    SamplingParams,
    batch_seed,
    stop_candidates,
    truncate_at_stop,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_MEMORY_FRACTION = 0.5
AUTO_BF16_MIN_BATCH = 4  # on CPU, below this batch size bf16 GEMVs lose to float32 (measured: bench_sampler.py)
PROBE_TEXT = (
    "Question: Tom has 12 apples and buys 7 more. How many apples does he have now?\n"
    "Answer: 12 + 7 = 19. The answer is 19.\n\nQuestion: The quick brown fox jumps over the lazy dog."
)


class SamplerMemoryError(MemoryError):
    """Not even one sequence fits in the memory budget."""


def native_bf16(device: str = "cpu") -> bool:
    """True where bfloat16 matmuls run natively: AMX/AVX512-BF16 (x86), BF16 (arm64), or a bf16 GPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    capability = torch.backends.cpu.get_cpu_capability().upper()
    if "AMX" in capability or "BF16" in capability:
        return True
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = {f for line in text.splitlines() if line.startswith(("flags", "Features")) for f in line.split()}
    return bool(flags & {"amx_bf16", "avx512_bf16", "bf16"})


def auto_dtype(device: str, batch_size: int) -> tuple[torch.dtype, str]:
    """bfloat16 where it is native and batches are big enough for it to pay, else float32 (and why)."""
    if not native_bf16(device):
        return torch.float32, "float32: no native bf16"
    if torch.device(device).type == "cpu" and batch_size < AUTO_BF16_MIN_BATCH:
        return torch.float32, f"float32: bf16 matrix-vector products are slower than float32 at batch {batch_size}"
    return torch.bfloat16, "bfloat16: native"


def available_memory_bytes(device: str = "cpu") -> int:
    """Free GPU memory, or MemAvailable from /proc/meminfo (free physical pages elsewhere)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def is_out_of_memory(err: BaseException) -> bool:
    """torch's OutOfMemoryError, or the CPU allocator's RuntimeError for a failed allocation."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
    )


class CachedSampler:
    def __init__(
        self,
        model_path: str | Path,
        device: str = "cpu",
        dtype: str = "auto",
        batch_size: int = 256,
        stop: tuple[str, ...] = (),
        memory_budget_mb: float | None = None,
        threads: int | None = None,
        shared_decode: bool | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if dtype != "auto" and dtype not in DTYPES:
            raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {dtype!r}")
        if memory_budget_mb is not None and memory_budget_mb <= 0:
            raise ValueError(
                f"memory_budget_mb must be > 0 (or None for a share of free memory), got {memory_budget_mb}"
            )
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 (or None to pick per decode step), got {threads}")
        self.tokenizer = load_tokenizer(model_path)
        self.device, self.batch_size, self.stop = device, batch_size, stop
        self.memory_budget_mb = memory_budget_mb
        model = load_model(model_path, device=device, dtype="float32").eval()
        fp32 = LlamaStyleForward(model, torch.float32, device)
        probe_ids, probe_lengths = self._probe_batch()
        gap = max_logit_gap(fp32, model, probe_ids, probe_lengths)
        if not gap <= 1e-3:
            raise UnsupportedModelError(
                f"the restem engine's forward differs from {model_path}'s own (max logit gap {gap:.3g}); this "
                f"{fp32.model_type} variant is not supported: use SamplerResource(backend='transformers')"
            )
        self.dtype_note = ""
        if dtype == "auto":
            chosen, self.dtype_note = auto_dtype(device, batch_size)
        else:
            chosen = DTYPES[dtype]
        self.forward = (
            fp32 if chosen == torch.float32 else LlamaStyleForward(model, chosen, device, shared_decode=shared_decode)
        )
        if dtype == "auto" and chosen != torch.float32 and not self._keeps_choices(fp32, probe_ids, probe_lengths):
            self.forward, self.dtype_note = fp32, "float32: bf16 changed the probe's next-token choices"
        del model
        self.dtype = self.forward.dtype
        self._stop_candidates = self._stop_candidate_table()
        self.stats: dict[str, int] = {}
        on_cpu = torch.device(device).type == "cpu"
        self.tuner = ThreadTuner(threads if threads or on_cpu else torch.get_num_threads())

    # -- set-up checks -----------------------------------------------------------------------------
    def _probe_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"][:64]
        rows = [ids, ids[: max(1, len(ids) // 2)]]  # two lengths, so left padding is exercised
        width = len(ids)
        batch = torch.full((2, width), self.tokenizer.pad_token_id, dtype=torch.long)
        for r, s in enumerate(rows):
            batch[r, width - len(s) :] = torch.tensor(s)
        return batch.to(self.device), torch.tensor([len(s) for s in rows], device=self.device)

    def _keeps_choices(self, fp32: LlamaStyleForward, ids: torch.Tensor, lengths: torch.Tensor) -> bool:
        """bf16 is sane if its logits are finite and, at >= 90% of probe positions, the token it ranks
        first has at least half the float32 probability of float32's own first choice."""
        width = ids.shape[1]
        logits = []
        for fw in (fp32, self.forward):
            with torch.inference_mode():
                cache = fw.new_cache(ids.shape[0], width)
                positions = (torch.arange(width, device=ids.device)[None] - (width - lengths)[:, None]).clamp(min=0)
                part = Part(
                    slice(0, ids.shape[0]), cache, slice(0, width), slice(0, width), prefill_mask(lengths, width)
                )
                out = fw.forward(ids, positions, [part], all_positions=True)
            logits.append(out[torch.arange(width, device=ids.device)[None] >= (width - lengths)[:, None]])
        ref, low = logits
        if not torch.isfinite(low).all():
            return False
        probs = torch.softmax(ref, -1)
        ok = probs.gather(1, low.argmax(-1, keepdim=True)).squeeze(1) >= 0.5 * probs.max(-1).values
        return ok.float().mean().item() >= 0.9

    def _stop_candidate_table(self) -> torch.Tensor | None:
        """Per token id: can emitting it complete a stop string? (Only those rows are decoded and checked.)"""
        return stop_candidates(self.tokenizer, self.stop, self.forward.vocab_size)

    # -- memory ------------------------------------------------------------------------------------
    def budget_bytes(self) -> int:
        if self.memory_budget_mb is not None:
            return int(self.memory_budget_mb * 2**20)
        return int(DEFAULT_MEMORY_FRACTION * available_memory_bytes(self.device))

    def bytes_per_sequence(self, prompt_len: int, max_new_tokens: int, samples: int = 1) -> int:
        """KV cache for prompt + new tokens, prefill activations, and the sampler's per-row vocab buffers.

        ``samples`` sequences share each prompt: its prefill (activations, attention scores) runs once
        for all of them, and with ``shared_decode`` its KV cache is kept once per ``SHARED_SLOTS`` of them.
        """
        fw = self.forward
        attention = fw.num_heads * prompt_len * prompt_len * 4
        vocab = fw.vocab_size * 24
        prompt_copies = min(samples, SHARED_SLOTS) if fw.shared_decode else 1
        return (
            fw.kv_bytes_per_token() * (-(-prompt_len // prompt_copies) + max_new_tokens)
            + -(-(fw.activation_bytes_per_token() * prompt_len + attention) // samples)
            + vocab
        )

    def max_batch(self, prompt_len: int, max_new_tokens: int, budget: int, samples: int = 1) -> int:
        need = self.bytes_per_sequence(prompt_len, max_new_tokens, samples)
        if need > budget:
            raise SamplerMemoryError(
                f"one sequence of {prompt_len} prompt + {max_new_tokens} new tokens needs about {need / 2**20:.1f} MB "
                f"of KV cache and activations, over the sampler's memory budget of {budget / 2**20:.1f} MB: raise "
                "SamplerResource.memory_budget_mb (or lower max_new_tokens)"
            )
        return min(self.batch_size, budget // need)

    # -- generation --------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self, prompts: list[str], params: SamplingParams, progress: Progress | None = None
    ) -> list[list[Completion]]:
        tok = self.tokenizer
        seqs = prompt_input_ids(tok, prompts)
        for i, s in enumerate(seqs):
            if not s:
                raise ValueError(f"prompt {i} is empty and the tokenizer has no BOS token to start from")
        longest = max(map(len, seqs), default=0) + params.max_new_tokens
        if self.forward.sliding_window and longest > self.forward.sliding_window:
            raise UnsupportedModelError(
                f"prompt + max_new_tokens = {longest} exceeds the model's sliding window "
                f"({self.forward.sliding_window}); use SamplerResource(backend='transformers')"
            )
        self.forward.ensure_positions(longest)
        jobs = sorted((len(seqs[i]), i, j) for i in range(len(prompts)) for j in range(params.n))
        out: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        self.stats = dict.fromkeys(("batches", "largest_batch", "compactions", "oom_retries", "prefill_tokens"), 0)
        self.stats["decode_row_steps"] = 0
        threads = torch.get_num_threads()  # the decode loop may change it per step (ThreadTuner)
        try:
            budget, start = self.budget_bytes(), 0
            while start < len(jobs):
                self.max_batch(jobs[start][0], params.max_new_tokens, budget)  # raises if one sequence does not fit
                size = 1
                while start + size < len(jobs) and size < self.max_batch(
                    jobs[start + size][0], params.max_new_tokens, budget, params.n
                ):
                    size += 1
                chunk = jobs[start : start + size]
                self.stats["largest_batch"] = max(self.stats["largest_batch"], size)
                results = self._run_with_retries(seqs, chunk, params)
                for (_, i, j), completion in zip(chunk, results, strict=True):
                    out[i][j] = completion
                start += size
                if progress:
                    progress(start, len(jobs))
        finally:
            torch.set_num_threads(threads)
        return out  # type: ignore[return-value]

    def _run_with_retries(self, seqs, chunk, params: SamplingParams) -> list[Completion]:
        """Run ``chunk``, halving the batch on out-of-memory (results do not depend on batch size)."""
        size, results = len(chunk), []
        while len(results) < len(chunk):
            part = chunk[len(results) : len(results) + size]
            try:
                results += self._run_batch(seqs, part, params)
            except (torch.OutOfMemoryError, RuntimeError) as err:
                if not is_out_of_memory(err):
                    raise
                if size == 1:
                    raise SamplerMemoryError(
                        f"out of memory with a batch of one sequence ({len(seqs[part[0][1]])} prompt tokens + "
                        f"{params.max_new_tokens} new): lower SamplerResource.memory_budget_mb or max_new_tokens"
                    ) from err
                size = max(1, size // 2)
                self.stats["oom_retries"] += 1
        return results

    def _run_batch(self, seqs, chunk, params: SamplingParams) -> list[Completion]:
        return decode_batch(self, seqs, chunk, params)

    def finish(self, ids: list[int], hit_eos: bool) -> Completion:
        """A completion from generated ids (EOS already removed), cut like ``TransformersSampler``."""
        pad = self.tokenizer.pad_token_id
        while ids and ids[-1] == pad:
            ids.pop()
        text, stopped = truncate_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), self.stop)
        return Completion(text, len(ids), hit_eos or stopped)

    def job_uniforms(self, params: SamplingParams, jobs: list[tuple[int, int]]) -> torch.Tensor:
        """(jobs, max_new_tokens) uniforms in [0, 1): sample j of prompt i draws from its own stream,
        seeded ``batch_seed(seed, i) + j`` (vLLM's per-prompt seeding), so batching never changes it."""
        rows = []
        for i, j in jobs:
            g = torch.Generator().manual_seed(batch_seed(params.seed, i) + j)
            rows.append(torch.rand(params.max_new_tokens, generator=g, dtype=torch.float64))
        return torch.stack(rows)
