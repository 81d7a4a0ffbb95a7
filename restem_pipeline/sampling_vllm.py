"""vLLM implementation of the ``Sampler`` interface, for GPU users (optional extra ``restem[vllm]``).

vLLM pins its own torch, so it lives in a separate GPU environment, never in the CPU one; this
module imports vllm only when a ``VLLMSampler`` is built. Same ``SamplingParams`` as the
transformers backend (top-k 40 / temperature 0.7 for the E-step; temperature 1.0 / top-p 0.95 for
pass@K); ``tensor_parallel_size`` shards a large model across GPUs. Not covered: a vLLM server.
"""

from __future__ import annotations

from pathlib import Path

from restem_pipeline.sampling import Completion, Progress, SamplingParams


class VLLMSampler:
    def __init__(
        self,
        model_path: str | Path,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        dtype: str = "auto",
        stop: tuple[str, ...] = (),
    ):
        try:
            from vllm import LLM
        except ImportError as err:  # an environment problem, said plainly
            raise RuntimeError(
                "the vllm sampler needs the 'vllm' extra in a GPU environment: pip install 'restem[vllm]'"
            ) from err
        self.llm = LLM(
            model=str(model_path),
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
        )
        self.stop = list(stop)

    def generate(
        self, prompts: list[str], params: SamplingParams, progress: Progress | None = None
    ) -> list[list[Completion]]:
        from vllm import SamplingParams as VParams

        vparams = VParams(
            n=params.n,
            temperature=params.temperature,
            top_k=params.top_k if params.top_k else -1,
            top_p=params.top_p or 1.0,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
            stop=self.stop or None,
        )
        results = self.llm.generate(prompts, vparams, use_tqdm=progress is None)
        out = [[Completion(o.text, len(o.token_ids), o.finish_reason == "stop") for o in r.outputs] for r in results]
        if progress:
            progress(len(prompts) * params.n, len(prompts) * params.n)
        return out
