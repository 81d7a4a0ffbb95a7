"""The transformers sampling backend on CUDA with the embedded default model (issue 13, item 6).

Builds the embedded default model (TinyLlamaSpec, pretrained ``--pretrain-steps`` steps on arithmetic, on
the CPU), then samples N completions for arithmetic prompts with ``TransformersSampler`` on CUDA and on
the CPU, and checks seeded reproducibility on CUDA (same settings twice, same completions). Prints a
table and, as its last line, one JSON object. torch + transformers only (no Dagster, no polars).
Run: ``python scripts/gpu_sampling_check.py``; exits 2 without CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from restem_pipeline.data import arith  # noqa: E402
from restem_pipeline.data.prompts import template_for  # noqa: E402
from restem_pipeline.data.schema import Problem  # noqa: E402
from restem_pipeline.generation.modeling import TinyLlamaSpec, tiny_llama, train_tokenizer  # noqa: E402
from restem_pipeline.generation.sampling import SamplingParams, TransformersSampler  # noqa: E402
from restem_pipeline.training.finetune import TrainConfig, save_checkpoint, tokenize_pairs  # noqa: E402
from restem_pipeline.training.loop import train_causal_lm  # noqa: E402


def build_embedded(out: Path, exclude: set[str], steps: int) -> dict:
    """stages.build_base_model's recipe (the embedded default), without the pipeline's table imports."""
    pool = arith.pretraining_pool(0, arith.POOL_PER_LEVEL, exclude)
    tpl = template_for(Problem("x", "math", "x", "arith", answer="0"))
    prompts, targets = [tpl.render(q) for q, _ in pool], [tpl.target(a) for _, a in pool]
    spec = TinyLlamaSpec()
    tok = train_tokenizer([p + t for p, t in zip(prompts, targets, strict=True)], spec.vocab_size)
    model = tiny_llama(spec, tok, 0)
    cfg = TrainConfig(max_steps=steps, batch_size=64, learning_rate=3e-3)
    stats = train_causal_lm(model, tok, tokenize_pairs(tok, prompts, targets, cfg.max_length), cfg)
    save_checkpoint(model, tok, out)
    return {"final_loss": stats.final_loss}


def rate(sampler: TransformersSampler, prompts: list[str], params: SamplingParams) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = sampler.generate(prompts, params)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return dt, out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--cpu-smoke", action="store_true", help="no CUDA: the CPU row only, to check the script")
    args = ap.parse_args()
    devices = ("cpu",) if args.cpu_smoke else ("cuda", "cpu")
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_sampling_check: no CUDA device", file=sys.stderr)
        return 2
    problems = [p for p in arith.embedded_problem_set(0, 200, 50, 100) if p.split == "test"][: args.problems]
    prompts = [p.prompt for p in problems]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        stats = build_embedded(Path(tmp) / "base", {p.prompt for p in problems}, args.pretrain_steps)  # CPU
        pretrain_s = time.perf_counter() - t0
        params = SamplingParams(n=args.n, temperature=0.7, top_k=40, max_new_tokens=32, seed=0)
        rows, out = [], {}
        for device in devices:
            smp = TransformersSampler(Path(tmp) / "base", device=device, batch_size=512)
            dt, comps = rate(smp, prompts, params)
            toks = sum(len(smp.tokenizer(c.text)["input_ids"]) for cs in comps for c in cs)
            rows.append((device, len(prompts) * args.n, dt, toks / dt))
            out[device] = {
                "seconds": round(dt, 3),
                "completions": len(prompts) * args.n,
                "tokens_per_s": round(toks / dt, 1),
            }
            if device == "cuda":
                _, again = rate(smp, prompts, params)
                out["cuda_reproducible"] = [c.text for cs in comps for c in cs] == [c.text for cs in again for c in cs]
    print(f"pretraining {args.pretrain_steps} steps (CPU): {pretrain_s:.1f}s, final loss {stats['final_loss']:.3f}")
    print(f"{'device':8s} {'completions':>12s} {'seconds':>9s} {'tokens/s':>10s}")
    for d, n, dt, tps in rows:
        print(f"{d:8s} {n:12d} {dt:9.2f} {tps:10.1f}")
    if args.cpu_smoke:
        print(json.dumps(out))
        return 0
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(0),
                "pretrain_s": round(pretrain_s, 1),
                "pretrain_final_loss": round(stats["final_loss"], 4),
                **out,
                "cuda_vs_cpu": round(out["cpu"]["seconds"] / out["cuda"]["seconds"], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
