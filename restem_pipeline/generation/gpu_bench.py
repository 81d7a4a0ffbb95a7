"""Timing sampler variants at the E-step's shape, to choose ``backends.CUDA_AUTO`` on a GPU.

``bench_samplers`` builds each candidate (a name in ``backends.VARIANTS``) in each dtype, runs one
``generate`` over the same prompts and settings, and returns a row per (candidate, dtype): setup
seconds (load, the engine's probes), the first run's seconds (with any compilation, CUDA-graph
capture or warm-up it does, as an E-step pays them), optionally the seconds of ``repeats`` more
runs (steady state), generated tokens and tokens/s, completions that ended (EOS or a stop string),
peak GPU memory, and the error, if the candidate failed (the others still run). ``generate()`` in
float32 and bfloat16 (``transformers``, dynamic cache) is the baseline: include it in the
candidates. Tokens are each sampler's ``num_tokens``: ``transformers`` generates on past a stop
string to EOS and counts those tokens, the others stop there, so compare seconds for the same work,
and tokens/s as throughput. ``fastest`` picks the reproducible candidate with the least estimated
E-step time (setup + first run + (scale - 1) x steady run, ``scale`` = the E-step's problems over
the benchmark's). The E-step's shape: ``ESTEP`` (64 GSM8K 4-shot prompts, ``TEMPLATES['gsm8k']``,
x N = 8, temperature 0.7, top-k 40, 256 new tokens, its stop string). Not covered: greedy
agreement (the tests check it), the GPU script around it (``scripts/gpu_check.py``), loading prompts.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from restem_pipeline.data.prompts import TEMPLATES
from restem_pipeline.generation.backends import VARIANTS, build_sampler
from restem_pipeline.generation.sampling import SamplingParams

ESTEP: dict[str, Any] = {
    "prompts": 64,
    "n": 8,
    "max_new_tokens": 256,
    "temperature": 0.7,
    "top_k": 40,
    "stop": TEMPLATES["gsm8k"].stop,
}
GPU_CANDIDATES = ("transformers", "restem", "restem_unshared", "static_compile", "continuous")
CPU_CANDIDATES = ("transformers", "restem", "restem_unshared", "static", "continuous")  # static_compile: slow


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _release(device: str) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch._dynamo.reset()  # compiled graphs hold the previous model's weights


def _pairs(candidates: Sequence[str], dtypes: Sequence[str]) -> list[tuple[str, str]]:
    """(candidate, dtype) pairs: every candidate in every dtype; ``name@dtype`` pins one."""
    out = []
    for c in candidates:
        name, _, pinned = c.partition("@")
        if name not in VARIANTS:
            raise ValueError(f"unknown candidate {name!r}: one of {', '.join(VARIANTS)}")
        out += [(name, pinned)] if pinned else [(name, d) for d in dtypes]
    return out


def bench_samplers(
    model_path: str | Path,
    prompts: list[str],
    n: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    device: str,
    dtypes: Sequence[str],
    candidates: Sequence[str],
    *,
    stop: tuple[str, ...] = (),
    seed: int = 0,
    batch_size: int = 256,
    repeats: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """A row per (candidate, dtype): seconds, tokens/s and the rest (see the module doc)."""
    params = SamplingParams(n=n, temperature=temperature, top_k=top_k, max_new_tokens=max_new_tokens, seed=seed)
    rows = []
    for name, dtype in _pairs(candidates, dtypes):
        row: dict[str, Any] = {
            "candidate": name,
            "dtype": dtype,
            "backend": VARIANTS[name].backend,
            "reproducible": VARIANTS[name].reproducible,
            "device": device,
            "prompts": len(prompts),
            "n": n,
            "max_new_tokens": max_new_tokens,
            "error": None,
        }
        _release(device)
        sampler = None
        try:
            start = time.perf_counter()
            sampler = build_sampler(name, model_path, device=device, dtype=dtype, batch_size=batch_size, stop=stop)
            _sync(device)
            row["setup_s"] = time.perf_counter() - start
            start = time.perf_counter()
            out = sampler.generate(prompts, params)
            _sync(device)
            row["run_s"] = time.perf_counter() - start
            steady = []
            for _ in range(repeats):
                start = time.perf_counter()
                sampler.generate(prompts, params)
                _sync(device)
                steady.append(time.perf_counter() - start)
            row["steady_s"] = min(steady) if steady else None
            flat = [c for r in out for c in r]
            row["completions"] = len(flat)
            row["tokens"] = sum(c.num_tokens for c in flat)
            row["finished"] = sum(c.finished for c in flat) / max(len(flat), 1)
            row["tokens_per_s"] = row["tokens"] / row["run_s"]
            row["steady_tokens_per_s"] = row["tokens"] / row["steady_s"] if steady else None
        except Exception as err:  # one failing candidate must not cost the others their device time
            row["error"] = f"{type(err).__name__}: {err}"
        if torch.device(device).type == "cuda":
            row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        del sampler
        rows.append(row)
        if log:
            log(format_row(row))
    _release(device)
    return rows


def format_row(row: dict[str, Any]) -> str:
    if row["error"]:
        return f"{row['candidate']:<18} {row['dtype']:<9} FAILED {row['error']}"
    steady = f" steady {row['steady_s']:.1f}s" if row.get("steady_s") is not None else ""
    return (
        f"{row['candidate']:<18} {row['dtype']:<9} setup {row['setup_s']:.1f}s run {row['run_s']:.1f}s{steady} "
        f"{row['tokens']} tokens {row['tokens_per_s']:.0f} tok/s finished {row['finished']:.0%}"
    )


def estimate_s(row: dict[str, Any], scale: float = 1.0) -> float:
    """Seconds for an E-step ``scale`` times the benchmark's size: setup, the first run (compilation
    included), and the rest at the steady run's speed where measured, else the first run's."""
    per_run = row["steady_s"] if row.get("steady_s") is not None else row["run_s"]
    return row["setup_s"] + row["run_s"] + (scale - 1) * per_run


def fastest(rows: list[dict[str, Any]], scale: float = 1.0) -> dict[str, Any]:
    """The reproducible, successful row with the least ``estimate_s`` (what ``CUDA_AUTO`` should name)."""
    ok = [r for r in rows if not r["error"] and r["reproducible"]]
    if not ok:
        raise ValueError("no candidate ran (or none is reproducible)")
    return min(ok, key=lambda r: estimate_s(r, scale))
