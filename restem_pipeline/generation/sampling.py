"""Sampling behind one ``Sampler`` interface: N completions per prompt with seeded settings.

``TransformersSampler`` runs any Hugging Face causal LM with ``generate()`` on CPU or GPU: prompts
are expanded N times, grouped by length into batches (left padding), and each batch is seeded from
(seed, batch index), so a re-run with the same settings reproduces every completion. Greedy
decoding is ``temperature=0``. The same interface: restem's engine (``engine``), ``generate()``
over a static cache (``sampling_static``), continuous batching (``sampling_continuous``), vLLM
(``sampling_vllm``); ``backends`` names them. Helpers shared by them: ``truncate_at_stop``,
``stop_token_count`` (tokens up to a stop string), ``stop_candidates`` (tokens that may complete
one), ``batch_seed``. Sample ids are not made here (see ``stages.sample_id``). Not covered: KV-cache
tricks beyond ``generate()``'s own, resumable sharded sampling.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from restem_pipeline.generation.modeling import load_model, load_tokenizer, prompt_input_ids

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.7
    top_k: int | None = 40
    top_p: float | None = None
    max_new_tokens: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n (samples per prompt) must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int
    finished: bool  # ended with EOS (or a stop string) rather than running out of tokens


class Sampler(Protocol):
    def generate(
        self, prompts: list[str], params: SamplingParams, progress: Progress | None = None
    ) -> list[list[Completion]]:
        """``params.n`` completions for each prompt, in prompt order."""
        ...


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` cut before the earliest stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop) if i != -1]
    return (text[: min(cuts)], True) if cuts else (text, False)


def stop_token_count(tokenizer, ids: list[int], stop: tuple[str, ...]) -> int | None:
    """How many of ``ids`` were generated up to and including the token that completed the first stop
    string in their text (what the engine and vLLM count), or None when the text holds none.

    Decoded prefixes grow monotonically, so the first such token is found by bisection."""
    if not stop or not ids:
        return None

    def has_stop(k: int) -> bool:
        text = tokenizer.decode(ids[:k], skip_special_tokens=True)
        return any(s in text for s in stop)

    if not has_stop(len(ids)):
        return None
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if has_stop(mid) else (mid + 1, hi)
    return lo


def stop_candidates(tokenizer, stop: tuple[str, ...], size: int = 0) -> torch.Tensor | None:
    """Per token id (at least ``size`` of them: a model's vocabulary may be padded past the
    tokenizer's, ids it does not know count as candidates): can emitting it complete a stop string?
    None without stop strings. A sampler decodes a row's text for stop strings only after such a token."""
    if not stop:
        return None
    n = len(tokenizer)
    lasts = {s[-1] for s in stop if s}
    if not lasts or any(c.isspace() for c in lasts):
        return torch.ones(max(n, size), dtype=torch.bool)  # pieces may hide spaces: check every token
    pieces = tokenizer.batch_decode([[i] for i in range(n)])
    flags = [not p or "\ufffd" in p or any(c in p for c in lasts) for p in pieces]
    return torch.tensor(flags + [True] * (size - n), dtype=torch.bool)


def batch_seed(seed: int, batch_index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{batch_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class TransformersSampler:
    longest_first = False  # batch order: shortest prompts first (subclasses may start with the longest)

    def __init__(
        self,
        model_path: str | Path,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 256,
        stop: tuple[str, ...] = (),
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tokenizer = load_tokenizer(model_path)
        self.model = load_model(model_path, device=device, dtype=dtype).eval()
        self.device, self.batch_size, self.stop = device, batch_size, stop

    def _truncate(self, text: str) -> tuple[str, bool]:
        return truncate_at_stop(text, self.stop)

    def _batch_kwargs(self, width: int, params: SamplingParams) -> dict:
        """Extra ``generate()`` arguments for one batch of left-padded prompts ``width`` tokens wide."""
        return {}

    @torch.inference_mode()
    def generate(
        self, prompts: list[str], params: SamplingParams, progress: Progress | None = None
    ) -> list[list[Completion]]:
        tok = self.tokenizer
        encoded = prompt_input_ids(tok, prompts)
        jobs = sorted(
            ((len(encoded[i]), i, j) for i in range(len(prompts)) for j in range(params.n)),
            key=lambda job: (-job[0] if self.longest_first else job[0], job[1], job[2]),
        )
        out: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        done = 0
        for b, start in enumerate(range(0, len(jobs), self.batch_size)):
            chunk = jobs[start : start + self.batch_size]
            seqs = [encoded[i] for _, i, _ in chunk]
            width = max(map(len, seqs))
            input_ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(input_ids)
            for r, s in enumerate(seqs):
                input_ids[r, width - len(s) :] = torch.tensor(s)
                mask[r, width - len(s) :] = 1
            torch.manual_seed(batch_seed(params.seed, b))
            kwargs = (
                {"do_sample": False}
                if params.greedy
                else {
                    "do_sample": True,
                    "temperature": params.temperature,
                    "top_k": params.top_k or 0,
                    "top_p": params.top_p or 1.0,
                }
            )
            gen = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=params.max_new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                **kwargs,
                **self._batch_kwargs(width, params),
            )[:, width:].cpu()
            for r, (_, i, j) in enumerate(chunk):
                ids = gen[r].tolist()
                eos = tok.eos_token_id in ids
                if eos:
                    ids = ids[: ids.index(tok.eos_token_id)]
                while ids and ids[-1] == tok.pad_token_id:
                    ids.pop()
                text, stopped = self._truncate(tok.decode(ids, skip_special_tokens=True))
                out[i][j] = Completion(text, len(ids), eos or stopped)
            done += len(chunk)
            if progress:
                progress(done, len(jobs))
        return out  # type: ignore[return-value]
