"""``StaticCacheSampler``: transformers ``generate()`` over a static KV cache, optionally ``torch.compile``d.

The same batching, prompts and seeding as ``TransformersSampler`` (it is one, with two changes per
batch): ``generate(cache_implementation="static")`` pre-allocates the cache for prompt +
``max_new_tokens`` once, and with ``compile=True`` transformers compiles the decode step
(``CompileConfig``; on CUDA its default ``mode="reduce-overhead"``, CUDA graphs; on CPU
``mode="default"``, which transformers only allows through ``CompileConfig._compile_all_devices``).
``compile=False`` runs the static cache eagerly (``disable_compile=True``). Batches run longest
prompts first, so the first batch sets the cache length that transformers keeps for later ones
(``_previous_max_cache_length``) and the compiled step sees one cache shape per call.

Stop strings end a row early: ``GeneratedTextStop`` (a ``StoppingCriteria``) decodes a row's
generated tokens, only after a token that could complete a stop string, and marks the row done;
``generate()`` then pads it (its sampling draws continue for the whole batch, so no other row's
sample changes). Text is cut at the first stop string as in ``TransformersSampler``, and
``num_tokens`` counts up to the token that completed it (as the engine and vLLM do; plain
``TransformersSampler`` generates on to EOS). Greedy float32 output is ``generate()``'s token for
token. Seeds: batch b is seeded ``batch_seed(seed, b)`` as in ``TransformersSampler`` (batches are
formed longest first here, so sampled completions differ from its; a re-run with the same settings
reproduces them where the device's kernels are deterministic). Not covered: padding the last
batch to the others' size (a smaller last batch is one more compiled shape).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CompileConfig, StoppingCriteria, StoppingCriteriaList

from restem_pipeline.generation.sampling import SamplingParams, TransformersSampler, stop_candidates


class GeneratedTextStop(StoppingCriteria):
    """Rows whose generated text (the tokens after the first ``width`` columns) contains a stop string."""

    def __init__(self, tokenizer, stop: tuple[str, ...], width: int, candidates: torch.Tensor | None):
        self.tokenizer, self.stop, self.width, self.candidates = tokenizer, stop, width, candidates
        self.done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.done is None:
            self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        generated = input_ids[:, self.width :]
        if generated.shape[1]:
            last = generated[:, -1].cpu()
            check = ~self.done & (last != self.tokenizer.pad_token_id)  # pad: a row generate() has finished
            if self.candidates is not None:
                check &= self.candidates[last]
            for r in check.nonzero().flatten().tolist():
                text = self.tokenizer.decode(generated[r].tolist(), skip_special_tokens=True)
                if any(s in text for s in self.stop):
                    self.done[r] = True
        return self.done.to(input_ids.device)


class StaticCacheSampler(TransformersSampler):
    longest_first = True

    def __init__(
        self,
        model_path: str | Path,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 256,
        stop: tuple[str, ...] = (),
        compile: bool = True,
    ):
        super().__init__(model_path, device=device, dtype=dtype, batch_size=batch_size, stop=stop)
        self.compile = compile
        self._candidates = stop_candidates(self.tokenizer, stop, self.model.config.vocab_size)

    def _compile_config(self) -> CompileConfig:
        if torch.device(self.device).type == "cuda":
            return CompileConfig()  # transformers' default for generate(): reduce-overhead (CUDA graphs)
        config = CompileConfig(mode="default")
        config._compile_all_devices = True  # transformers compiles on CPU only when asked this way
        return config

    def _batch_kwargs(self, width: int, params: SamplingParams) -> dict:
        kwargs: dict = {"cache_implementation": "static"}
        if self.compile:
            kwargs["compile_config"] = self._compile_config()
        else:
            kwargs["disable_compile"] = True
        if self.stop:
            stop = GeneratedTextStop(self.tokenizer, self.stop, width, self._candidates)
            kwargs["stopping_criteria"] = StoppingCriteriaList([stop])
        return kwargs
