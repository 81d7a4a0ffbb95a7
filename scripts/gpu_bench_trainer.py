"""GPU check of ``benchmarks/bench_trainer.py``: restem's M-step vs TRL SFTTrainer vs HF Trainer on one CUDA device.

Runs bench_trainer's comparison with ``--device cuda`` (bf16 autocast for every method, as restem's
``dtype="auto"`` picks on a bf16 GPU) on a random-init 85M-parameter Llama (``--model llama100m``: hidden
768, 12 layers, the embedded arithmetic data and tokenizer; nothing is downloaded) or the 3.3M toy
(``--model embedded``). Peak memory is ``torch.cuda.max_memory_allocated`` during training. Sized for
under 5 minutes on one H100/H200 (each method in a fresh process: ~15 s of imports and CUDA set-up each).

TRL rows need ``trl`` and its dependencies (``datasets``, ``pandas``, ``pyarrow``, ...) importable: ``--site
DIR`` puts DIR first on every child's ``sys.path`` (e.g. a ``pip install --target DIR trl==1.16.0`` made for
the same Python and platform); without them the TRL rows are skipped and the reason is printed. Attention
for the HF/TRL rows is sdpa (padding-free rows get transformers' block-diagonal mask, correct but
quadratic in the row); with ``flash_attn`` importable the flattened HF/TRL rows are run a second time with
``--attn flash_attention_2``, the kernel TRL's documentation asks for.

    python scripts/gpu_bench_trainer.py [--site DIR] [--model llama100m|embedded] [--quick] [--budget-s 290]

Prints bench_trainer's tables; the last line is one JSON object: {"gpu": ..., "sdpa": <bench JSON>,
"flash_attention_2": <bench JSON> or a reason}.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "bench_trainer.py"
FLAT_METHODS = "trl_packed_bfd,trl_padding_free,hf_flattening"


def run_bench(args, extra: list[str], timeout: float) -> dict:
    cmd = [sys.executable, str(BENCH), "--device", "cuda", "--model", args.model, *extra]
    if args.quick:
        cmd.append("--quick")
    if args.site:
        cmd += ["--site", str(args.site)]
    print("$", " ".join(cmd), flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        print(f"timed out after {timeout:.0f} s", file=sys.stderr)
        return {"failed": f"timed out after {timeout:.0f} s", "stdout_tail": (err.stdout or b"")[-1500:].decode()}
    print(proc.stdout.rstrip("\n").rsplit("\n", 1)[0] if proc.stdout else "", flush=True)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        return {"failed": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-1500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", type=Path, help="directory with trl (and datasets, ...) for the TRL rows")
    ap.add_argument("--model", choices=["llama100m", "embedded"], default="llama100m")
    ap.add_argument("--quick", action="store_true", help="a few steps: checks that it runs")
    ap.add_argument("--budget-s", type=float, default=290.0, help="stop starting new passes after this many seconds")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("no CUDA device: run benchmarks/bench_trainer.py for the CPU figures")
    gpu = {
        "name": torch.cuda.get_device_name(0),
        "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        "bf16": torch.cuda.is_bf16_supported(),
        "torch": torch.__version__,
    }
    print(f"gpu: {gpu}", flush=True)
    t0 = time.monotonic()
    out: dict = {"gpu": gpu, "sdpa": run_bench(args, [], args.budget_s)}
    left = args.budget_s - (time.monotonic() - t0)
    env_has_flash = subprocess.run(
        [sys.executable, "-c", "import flash_attn"], capture_output=True, env=os.environ, check=False
    )
    if env_has_flash.returncode != 0:
        out["flash_attention_2"] = "skipped: flash_attn is not installed"
    elif left < 90:
        out["flash_attention_2"] = f"skipped: {left:.0f} s of the budget left"
    else:
        out["flash_attention_2"] = run_bench(args, ["--attn", "flash_attention_2", "--methods", FLAT_METHODS], left)
    print(f"total {time.monotonic() - t0:.0f} s", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
