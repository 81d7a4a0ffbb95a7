"""Pretraining that gives the same model on every x86 machine: ``build_base_model`` in a pinned child process.

Measured on this project's CPU machine (AVX-512, BF16): the embedded base's fp32 pretraining is bit for bit
the same at 1 and 2 torch threads, but not across instruction sets: with ``ATEN_CPU_CAPABILITY=avx2`` the
weights differ from the AVX-512 default, so machines of other kinds pretrained other bases (the demo's base
measured 45.8%-59.0% test pass@1 across versions and machines). Here the child process pins the kernels:
torch's own CPU kernels to AVX2 (``ATEN_CPU_CAPABILITY``), MKL's to its AVX2 code path in strict
conditional-numerical-reproducibility mode (``MKL_CBWR=AVX2,STRICT``), and the thread count. Shown in
``tests/test_pinned_pretraining.py``: the weights' hash is the same at 1 and 2 threads and on an emulated
AVX2-only machine (``MKL_ENABLE_INSTRUCTIONS=AVX2``, ``ONEDNN_MAX_CPU_ISA=AVX2``); the unpinned default
differs. It costs no time measured here (the tiny model is not matmul-bound).

Covered: x86-64 CPUs with AVX2 (every x86 server since 2013). Not covered: ARM CPUs (other kernels, another
model), CUDA (this pins CPU kernels only), bf16 pretraining (autocast kernels are not pinned by MKL_CBWR).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

PINNED_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}
PINNED_THREADS = 2  # bit-identical at 1 and 2 (measured); fixed anyway, so a 64-core machine runs the same sums


def pinned_env(threads: int = PINNED_THREADS, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **PINNED_ENV, **(extra or {})}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def build_base_model_pinned(
    out_dir: Path,
    exclude_texts: set[str],
    cfg,
    progress: Callable[..., None] | None = None,
    threads: int = PINNED_THREADS,
    extra_env: dict[str, str] | None = None,
) -> dict:
    """``stages.build_base_model`` in a child process with pinned kernels and threads; the same stats back.

    Progress lines of the child reach ``progress``; a failed child raises with the end of its output.
    """
    with tempfile.TemporaryDirectory(prefix="restem-pretrain-") as tmp:
        job = Path(tmp) / "job.pkl"
        job.write_bytes(pickle.dumps((str(out_dir), sorted(exclude_texts), cfg, threads)))
        cmd = [sys.executable, "-m", "restem_pipeline.pretrain", str(job)]
        proc = subprocess.Popen(
            cmd, env=pinned_env(threads, extra_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        tail: list[str] = []
        stats = None
        for line in proc.stdout:
            if line.startswith("restem-progress "):
                if progress:
                    progress(*json.loads(line.split(" ", 1)[1]))
            elif line.startswith("restem-stats "):
                stats = json.loads(line.split(" ", 1)[1])
            else:
                tail = [*tail[-40:], line.rstrip()]
        if proc.wait() != 0 or stats is None:
            raise RuntimeError(
                f"pinned pretraining of {out_dir} failed (exit {proc.returncode}):\n" + "\n".join(tail[-40:])
            )
        return stats


def _child(job: Path) -> None:
    import torch

    from restem_pipeline.stages import build_base_model

    out_dir, exclude, cfg, threads = pickle.loads(job.read_bytes())
    torch.set_num_threads(threads)

    def progress(*args: float) -> None:
        print("restem-progress " + json.dumps(list(args)), flush=True)

    stats = build_base_model(Path(out_dir), set(exclude), cfg, progress)
    pins = ", ".join(f"{k}={v}" for k, v in PINNED_ENV.items())
    stats["pinned_kernels"] = f"{pins}, {torch.get_num_threads()} threads"
    print("restem-stats " + json.dumps(stats), flush=True)


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
