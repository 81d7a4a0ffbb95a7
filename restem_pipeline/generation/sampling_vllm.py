"""vLLM implementation of the ``Sampler`` interface, for GPU users (optional extra ``restem[vllm]``).

vLLM pins its own CUDA torch, so it lives in a separate GPU environment installed from
``requirements/vllm-py311.lock`` / ``vllm-py312.lock``, never in the CPU one; vllm is imported only
when a ``VLLMSampler`` is built, and a missing install raises ``VLLMNotInstalled`` saying what to
install. Same inputs and settings as the CPU samplers:

- prompts are the same token ids (``bos`` + the prompt encoded without special tokens), passed to
  vLLM as token prompts, so both backends condition on exactly the same sequence;
- ``SamplingParams`` map one to one: ``temperature=0`` is greedy (vLLM allows only n = 1 there, so
  one greedy completion is repeated n times, as the CPU samplers' n are identical), ``top_k=None``
  is vLLM's 0 (no top-k), ``top_p=None`` is 1.0, ``n``, ``max_new_tokens`` -> ``max_tokens``, stop
  strings (cut from the text, as the CPU samplers do, and ``finished``);
- each prompt ``i`` is one request seeded with ``batch_seed(params.seed, i)`` (vLLM seeds its ``n``
  children ``seed + j``), so a re-run reproduces every completion whatever the batching. Sampled
  completions are not the CPU engine's (different random streams); greedy ones are.

``num_tokens`` counts generated tokens without the EOS token; vLLM stops at a stop string, so it
counts up to there (the CPU samplers generate on to EOS). ``tensor_parallel_size`` shards a large
model over GPUs. Not covered: a vLLM server, LoRA, multi-node.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from restem_pipeline.generation.modeling import prompt_input_ids
from restem_pipeline.generation.sampling import Completion, Progress, SamplingParams, batch_seed

INSTALL_HINT = (
    "install vLLM in a separate GPU environment (it pins its own CUDA torch; never in the CPU one): "
    "pip install --require-hashes -r requirements/vllm-py311.lock (or vllm-py312.lock for Python 3.12), "
    "then pip install --no-deps -e . -- or, unpinned, pip install 'restem[vllm]'"
)


class VLLMNotInstalled(ImportError):
    """vLLM cannot be imported in this environment: an environment problem, never a sampling result."""


def import_vllm() -> Any:
    """The ``vllm`` module, or ``VLLMNotInstalled`` naming the extra and the lock to install."""
    try:
        import vllm
    except ImportError as err:
        raise VLLMNotInstalled(
            f"the 'vllm' sampling backend needs vLLM, which is not installed in this environment "
            f"({sys.executable}: {err}); {INSTALL_HINT}"
        ) from err
    return vllm


def request_settings(params: SamplingParams, index: int, stop: Sequence[str]) -> dict:
    """The vLLM ``SamplingParams`` fields for prompt ``index``: the CPU samplers' settings, a per-prompt seed."""
    settings: dict = {
        "n": params.n,
        "max_tokens": params.max_new_tokens,
        "stop": list(stop),
        "seed": batch_seed(params.seed, index),
        "skip_special_tokens": True,
    }
    if params.greedy:  # vLLM: temperature 0 is greedy, with n = 1 only (``generate`` repeats it n times)
        return {**settings, "n": 1, "temperature": 0.0, "top_k": 0, "top_p": 1.0}
    return {**settings, "temperature": params.temperature, "top_k": params.top_k or 0, "top_p": params.top_p or 1.0}


def prompt_token_ids(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    """What the transformers sampler feeds the model (``modeling.prompt_input_ids``)."""
    return prompt_input_ids(tokenizer, prompts)


def completion_from_output(output: Any, eos_token_id: int | None, prompt_index: int) -> Completion:
    """One vLLM ``CompletionOutput`` as a ``Completion``; an aborted request is an error, not a sample."""
    if output.finish_reason not in ("stop", "length"):
        raise RuntimeError(
            f"vLLM did not finish prompt {prompt_index} (finish_reason={output.finish_reason!r}): "
            "an engine problem, not a wrong answer"
        )
    ids = list(output.token_ids)
    n = len(ids) - (1 if ids and eos_token_id is not None and ids[-1] == eos_token_id else 0)
    return Completion(output.text, n, output.finish_reason == "stop")


def check_engine_settings(
    tensor_parallel_size: int, gpu_memory_utilization: float, max_model_len: int | None, chunk_prompts: int
) -> None:
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    if max_model_len is not None and max_model_len < 1:
        raise ValueError(f"max_model_len must be >= 1 or None (the model's own), got {max_model_len}")
    if chunk_prompts < 1:
        raise ValueError(f"chunk_prompts must be >= 1, got {chunk_prompts}")


class VLLMSampler:
    """``params.n`` completions per prompt from a vLLM engine; progress is reported per chunk of prompts."""

    def __init__(
        self,
        model_path: str | Path,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        dtype: str = "auto",
        max_model_len: int | None = None,
        stop: tuple[str, ...] = (),
        chunk_prompts: int = 1024,
    ):
        check_engine_settings(tensor_parallel_size, gpu_memory_utilization, max_model_len, chunk_prompts)
        vllm = import_vllm()
        from restem_pipeline.generation.modeling import load_tokenizer

        self.tokenizer = load_tokenizer(model_path)
        self.llm = vllm.LLM(
            model=str(model_path),
            tokenizer=str(model_path),
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            max_model_len=max_model_len,
            seed=0,
        )
        self.stop, self.chunk_prompts = tuple(stop), chunk_prompts

    def generate(
        self, prompts: list[str], params: SamplingParams, progress: Progress | None = None
    ) -> list[list[Completion]]:
        vllm = import_vllm()
        ids = prompt_token_ids(self.tokenizer, prompts)
        eos = self.tokenizer.eos_token_id
        out: list[list[Completion]] = []
        for start in range(0, len(prompts), self.chunk_prompts):
            chunk = range(start, min(start + self.chunk_prompts, len(prompts)))
            requests = [{"prompt_token_ids": ids[i]} for i in chunk]
            settings = [request_settings(params, i, self.stop) for i in chunk]
            results = self.llm.generate(requests, [vllm.SamplingParams(**s) for s in settings], use_tqdm=False)
            for i, s, result in zip(chunk, settings, results, strict=True):
                ordered = sorted(result.outputs, key=lambda o: o.index)
                if len(ordered) != s["n"]:
                    raise RuntimeError(f"vLLM returned {len(ordered)} completions for prompt {i}, expected {s['n']}")
                row = [completion_from_output(o, eos, i) for o in ordered]
                out.append(row * params.n if params.greedy else row)  # greedy: n identical, as on the CPU
            if progress:
                progress(len(out) * params.n, len(prompts) * params.n)
        return out
