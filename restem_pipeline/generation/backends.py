"""Sampler backends by name, and what ``auto`` means on CPU and on a CUDA GPU.

Backends (``SamplerResource.backend``), each a ``Sampler`` with the same contract (one-BOS prompt ids,
``SamplingParams``, stop strings, seeded re-runs, greedy float32 = ``generate()`` token for token):

- ``restem``: restem's own engine (``engine.CachedSampler``): static KV cache, finished rows dropped,
  in half precision the N samples of a prompt read one copy of its KV cache;
- ``transformers``: ``generate()`` with its dynamic cache (``sampling.TransformersSampler``), the reference;
- ``static`` / ``static_compile``: ``generate()`` over a static cache, eager / ``torch.compile``d
  (``sampling_static.StaticCacheSampler``);
- ``continuous``: transformers' continuous batching, paged attention (``sampling_continuous``);
- ``vllm``: vLLM, where it is installed (``sampling_vllm``).

``VARIANTS`` maps these names, and two more that ``gpu_bench`` measures (``restem_unshared``: the
engine with a KV-cache row per sample; ``continuous_cancel``: continuous batching cancelling a request
at its stop string, whose samples are not reproducible, so it is never ``auto``), to a backend and its
options. ``auto`` is ``restem`` on CPU (measured there: ``benchmarks/bench_sampler.py``) and
``CUDA_AUTO`` on a CUDA device, in ``CUDA_AUTO_DTYPE`` where the dtype is ``auto``: the variant that
``gpu_bench.bench_samplers`` measured fastest at the E-step's shape, set from the GPU check's result.
Until measured it is restem's engine in bf16 (the one that shares a prompt's KV cache across its N
samples). A model the engine does not run (``UnsupportedModelError``) falls back to ``transformers``.
Not covered: the resource's validation (``resources.models``), choosing by measurement at run time.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from restem_pipeline.generation.engine import CachedSampler, UnsupportedModelError, native_bf16
from restem_pipeline.generation.sampling import Sampler, TransformersSampler

BACKENDS = ("auto", "restem", "transformers", "continuous", "static", "static_compile", "vllm")


@dataclass(frozen=True)
class Variant:
    backend: str  # restem, transformers, static, continuous or vllm: the sampler class
    options: dict[str, Any] = field(default_factory=dict)  # its extra constructor arguments
    reproducible: bool = True  # a seeded re-run gives the same samples (may be ``auto``)


VARIANTS: dict[str, Variant] = {
    "restem": Variant("restem"),
    "restem_unshared": Variant("restem", {"shared_decode": False}),
    "transformers": Variant("transformers"),
    "static": Variant("static", {"compile": False}),
    "static_compile": Variant("static", {"compile": True}),
    "continuous": Variant("continuous"),
    "continuous_cancel": Variant("continuous", {"cancel_at_stop": True}, reproducible=False),
    "vllm": Variant("vllm"),
}

CPU_AUTO = "restem"
# Set from the GPU check (scripts/gpu_check.py, gpu_bench.bench_samplers at the E-step's shape): the
# fastest reproducible variant and its dtype. Until then: restem's engine in bf16 (not yet measured).
CUDA_AUTO = "restem"
CUDA_AUTO_DTYPE = "bfloat16"
FALLBACK = "transformers"  # for models restem's engine does not run


def on_cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"


def resolve(backend: str, device: str) -> str:
    """The variant a backend name stands for on ``device`` (``auto``: ``CPU_AUTO`` or ``CUDA_AUTO``)."""
    if backend == "auto":
        return CUDA_AUTO if on_cuda(device) else CPU_AUTO
    if backend not in VARIANTS:
        raise ValueError(f"unknown sampler backend {backend!r}: one of {', '.join(BACKENDS)}")
    return backend


def resolve_dtype(variant: str, dtype: str, device: str, chosen_by_auto: bool = False) -> str:
    """The dtype a variant runs in for a requested ``dtype`` (``auto``: per backend, see the module doc)."""
    if dtype != "auto":
        return dtype
    backend = VARIANTS[variant].backend
    if chosen_by_auto and on_cuda(device):
        # the engine's own auto is bf16 on a bf16 GPU, kept only if a probe shows it keeps the model's choices
        return "auto" if backend == "restem" and CUDA_AUTO_DTYPE == "bfloat16" else CUDA_AUTO_DTYPE
    if backend in ("restem", "vllm"):
        return "auto"  # the engine picks bf16 where native and sane; vLLM the model's own
    if backend in ("static", "continuous") and on_cuda(device) and native_bf16(device):
        return "bfloat16"
    return "float32"  # generate(): the reference precision


def build_sampler(
    variant: str,
    model_path: str | Path,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 256,
    stop: tuple[str, ...] = (),
    memory_budget_mb: float | None = None,
    vllm: dict[str, Any] | None = None,
    threads: int | None = None,
) -> Sampler:
    """A sampler for ``variant`` (a name in ``VARIANTS``) with ``dtype`` already resolved."""
    spec = VARIANTS[variant]
    opts = spec.options
    if spec.backend == "vllm":
        from restem_pipeline.generation.sampling_vllm import VLLMSampler

        return VLLMSampler(model_path, dtype=dtype, stop=stop, **(vllm or {}))  # raises VLLMNotInstalled
    if spec.backend == "restem":
        return CachedSampler(
            model_path,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            stop=stop,
            memory_budget_mb=memory_budget_mb,
            threads=threads,
            **opts,
        )
    if spec.backend == "static":
        from restem_pipeline.generation.sampling_static import StaticCacheSampler

        return StaticCacheSampler(model_path, device=device, dtype=dtype, batch_size=batch_size, stop=stop, **opts)
    if spec.backend == "continuous":
        from restem_pipeline.generation.sampling_continuous import ContinuousBatchingSampler

        return ContinuousBatchingSampler(
            model_path, device=device, dtype=dtype, stop=stop, memory_budget_mb=memory_budget_mb, **opts
        )
    return TransformersSampler(model_path, device=device, dtype=dtype, batch_size=batch_size, stop=stop)


def sampler_for(
    backend: str,
    model_path: str | Path,
    *,
    device: str = "cpu",
    dtype: str = "auto",
    batch_size: int = 256,
    stop: tuple[str, ...] = (),
    memory_budget_mb: float | None = None,
    vllm: dict[str, Any] | None = None,
    threads: int | None = None,
) -> Sampler:
    """``backend`` (or ``auto``) resolved on ``device`` and built; ``auto`` falls back to ``FALLBACK``
    (with a warning) for a model restem's engine does not run."""
    variant = resolve(backend, device)
    chosen = backend == "auto"
    run_dtype = resolve_dtype(variant, dtype, device, chosen_by_auto=chosen)
    common = {"device": device, "batch_size": batch_size, "stop": stop, "memory_budget_mb": memory_budget_mb}
    try:
        return build_sampler(variant, model_path, dtype=run_dtype, vllm=vllm, threads=threads, **common)
    except UnsupportedModelError as err:
        if not chosen:
            raise
        warnings.warn(f"sampling with {FALLBACK}: {err}", stacklevel=2)
    return build_sampler(FALLBACK, model_path, dtype=resolve_dtype(FALLBACK, dtype, device), **common)
