"""The M-step on CUDA with NCCL, three ways: single process, DDP and FSDP2 under torchrun; one table.

For the GPU machines lent to restem's issues (torch and transformers, no dagster or polars: nothing
here imports them). For each model (the embedded default's size, a 1.1M-parameter tiny Llama, and a
~110M-parameter randomly initialised Llama, ``--no-large`` to skip it) it trains ``--steps`` steps of
the same M-step (restem's trainer: packed rows, bf16 autocast where the GPU has it, AdamW) on
generated arithmetic problems with strategy ``single`` (in this process), ``ddp`` and ``fsdp``
(``torchrun``, ``--processes`` ranks, one GPU each; default 1, i.e. world size 1), and prints tokens/s
(real input tokens, as ``TrainStats.tokens_per_s``), peak CUDA memory allocated, first and final loss,
and the largest weight difference of each checkpoint from the single-process one. The last stdout
line is one JSON object; the exit status is 0 when every run finished with finite losses and the
DDP/FSDP checkpoints match the single one within ``--weight-tol``.

    python scripts/gpu_mstep_check.py                  # on a CUDA machine, about 2-4 minutes on an H100
    python scripts/gpu_mstep_check.py --cpu-smoke      # gloo on CPU, 2 ranks, 2 steps, tiny model, 200 examples

Without CUDA (and without ``--cpu-smoke``) it exits with status 2 and says so.
Not covered: several nodes, real pretrained weights (the throughput of a random model is the same).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

from restem_pipeline.data import arith  # noqa: E402
from restem_pipeline.data.prompts import TEMPLATES  # noqa: E402
from restem_pipeline.generation.modeling import TinyLlamaSpec, tiny_llama, train_tokenizer  # noqa: E402
from restem_pipeline.training.finetune import TrainConfig, tokenize_pairs  # noqa: E402
from restem_pipeline.training.worker import MStepJob, run_job  # noqa: E402

STRATEGIES = ("single", "ddp", "fsdp")
NO_CUDA = "CUDA is not available: this check trains on GPUs with NCCL (use --cpu-smoke for gloo on CPU)"


def build_data(per_level: tuple[int, ...], max_length: int):
    tpl = TEMPLATES["arith"]
    pool = arith.pretraining_pool(7, per_level)
    prompts = [tpl.render(q) for q, _ in pool]
    targets = [tpl.target(a) for _, a in pool]
    tok = train_tokenizer([p + t for p, t in zip(prompts, targets, strict=True)], 384)
    return tok, tokenize_pairs(tok, prompts, targets, max_length)


def save_model(kind: str, tok, out: Path) -> int:
    if kind == "tiny":
        model = tiny_llama(TinyLlamaSpec(), tok, seed=1)  # the embedded default's size
    else:
        torch.manual_seed(1)
        config = LlamaConfig(
            vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
            num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=512,
            pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            tie_word_embeddings=True,
        )  # fmt: skip
        model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def max_weight_diff(a: Path, b: Path) -> float:
    wa = AutoModelForCausalLM.from_pretrained(a).state_dict()
    wb = AutoModelForCausalLM.from_pretrained(b).state_dict()
    if {k: v.shape for k, v in wa.items()} != {k: v.shape for k, v in wb.items()}:
        return math.inf
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def run_case(init: Path, out: Path, examples, cfg: TrainConfig, strategy: str, processes: int, device: str) -> dict:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    lines: list[str] = []
    procs = 1 if strategy == "single" else processes
    job = MStepJob(str(init), str(out), cfg, examples, strategy=strategy, processes=procs, device=device)
    t0 = time.perf_counter()
    try:
        stats = run_job(job, log=lines.append)
    except Exception as err:  # report it in the table and go on with the next strategy
        return {"strategy": strategy, "processes": procs, "error": f"{type(err).__name__}: {err}"[-2000:]}
    return {
        "strategy": strategy,
        "processes": procs,
        "steps": stats.steps,
        "tokens": stats.tokens,
        "tokens_per_s": round(stats.tokens_per_s, 1),
        "peak_memory_mb": round(stats.peak_memory_mb, 1),
        "first_loss": stats.first_loss,
        "final_loss": stats.loss_history[-1],
        "dtype": stats.dtype,
        "kernels": stats.kernels,  # on CUDA: flex attention, chunked loss, compiled layers (training.kernels)
        "train_seconds": round(stats.seconds, 2),
        "wall_seconds": round(time.perf_counter() - t0, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="gloo on CPU, 2 ranks, 2 steps, tiny model")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--processes", type=int, default=1, help="ranks for ddp/fsdp (one GPU each)")
    parser.add_argument("--no-large", action="store_true", help="skip the ~110M-parameter model")
    parser.add_argument("--weight-tol", type=float, default=None, help="default: 1e-5 in fp32 (smoke), 5e-2 bf16")
    parser.add_argument("--out", type=Path, default=None, help="where checkpoints go (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.cpu_smoke:  # small and one thread per process: a check of the pieces, not of speed
        device, processes, steps, models, dtype = "cpu", 2, 2, ["tiny"], "float32"
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            print(NO_CUDA, file=sys.stderr)
            print(json.dumps({"ok": False, "error": NO_CUDA}))
            return 2
        device, steps, dtype = "cuda", args.steps, "auto"
        processes = max(1, min(args.processes, torch.cuda.device_count()))
        models = ["tiny"] + ([] if args.no_large else ["llama-110m"])
    tol = args.weight_tol if args.weight_tol is not None else (1e-5 if dtype == "float32" else 5e-2)
    work = args.out or Path(tempfile.mkdtemp(prefix="gpu-mstep-"))
    tok, examples = build_data((60, 60, 40, 20, 20) if args.cpu_smoke else (600, 600, 400, 200, 200), 320)
    report = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (gloo smoke)",
        "torch": torch.__version__,
        "processes": processes,
        "steps": steps,
        "examples": len(examples),
        "results": [],
    }
    for kind in models:
        init = work / kind / "init"
        params = save_model(kind, tok, init)
        # one step = batch_size x processes examples for every strategy (single: the global batch)
        per_rank = 8 if args.cpu_smoke else 32 if kind == "tiny" else 64
        single: dict = {}
        for strategy in STRATEGIES:
            ranks = 1 if strategy == "single" else processes
            cfg = TrainConfig(
                max_steps=steps, batch_size=per_rank * processes // ranks, learning_rate=1e-3, dtype=dtype,
                seed=0, warmup_ratio=0.1,
            )  # fmt: skip
            row = run_case(init, work / kind / strategy, examples, cfg, strategy, processes, device)
            row |= {"model": kind, "parameters": params}
            if strategy == "single":
                single = row
            elif "error" not in row and "error" not in single:
                row["max_weight_diff_vs_single"] = max_weight_diff(work / kind / "single", work / kind / strategy)
            report["results"].append(row)
            print(f"{kind} {strategy}: {row}", file=sys.stderr, flush=True)
    ok = all(
        "error" not in r and math.isfinite(r["final_loss"]) and r.get("max_weight_diff_vs_single", 0.0) <= tol
        for r in report["results"]
    )
    report |= {"ok": ok, "weight_tol": tol, "workdir": str(work)}
    header = f"{'model':<11} {'strategy':<7} {'ranks':>5} {'tokens/s':>11} {'peak MB':>9} {'loss 1st':>9} {'loss end':>9} {'dW vs single':>12}"  # noqa: E501
    print(header)
    for r in report["results"]:
        if "error" in r:
            print(f"{r['model']:<11} {r['strategy']:<7} {r['processes']:>5} ERROR {r['error'][:200]}")
            continue
        diff = r.get("max_weight_diff_vs_single")
        print(
            f"{r['model']:<11} {r['strategy']:<7} {r['processes']:>5} {r['tokens_per_s']:>11.0f} "
            f"{r['peak_memory_mb']:>9.0f} {r['first_loss']:>9.4f} {r['final_loss']:>9.4f} "
            f"{'' if diff is None else f'{diff:.2e}':>12}"
        )
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
