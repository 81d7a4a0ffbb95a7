"""Sampling behind one ``Sampler`` interface: N completions per prompt with seeded settings.

``TransformersSampler`` runs any Hugging Face causal LM with ``generate()`` on CPU or GPU: prompts
are expanded N times, grouped by length into batches (left padding), and each batch is seeded from
(seed, batch index), so a re-run with the same settings reproduces every completion. Greedy
decoding is ``temperature=0``. ``VLLMSampler`` (in ``sampling_vllm``) implements the same interface
on a GPU. Sample ids are not made here (see ``stages.sample_id``). Not covered: KV-cache tricks
beyond ``generate()``'s own, resumable sharded sampling.
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


def batch_seed(seed: int, batch_index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{batch_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class TransformersSampler:
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

    @torch.inference_mode()
    def generate(
        self, prompts: list[str], params: SamplingParams, progress: Progress | None = None
    ) -> list[list[Completion]]:
        tok = self.tokenizer
        encoded = prompt_input_ids(tok, prompts)
        jobs = sorted((len(encoded[i]), i, j) for i in range(len(prompts)) for j in range(params.n))
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
