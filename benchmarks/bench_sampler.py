"""Sampling throughput: restem's ``CachedSampler`` (float32 and dtype='auto') vs transformers ``generate()``.

Same models, same prompts, same settings, side by side in one run. Prompts are the embedded
arithmetic task's test problems (``restem_pipeline.arith`` rendered with ``prompts.template_for``),
taken in order (levels 1-5 mixed, 29-117 tokens). Models are the 3.3M-parameter Llama of the
issue (hidden 256, 4 layers, 4 heads, MLP 704, the task's 384-token tokenizer), built with
``restem_pipeline.modeling``:

- ``random``: random init (seed 0). It never emits EOS, so every sequence runs the full 64 new
  tokens: pure decode throughput.
- ``trained``: the same architecture pretrained briefly on the task (``build_base_model``, 80 steps;
  40 with --quick): sequences end at EOS after 18-60 tokens, so dropping finished rows matters.

Each figure is tokens/s of generated tokens (EOS excluded), greedy, 64 new tokens, at batch 1
(8 prompts one at a time), 64 and 256 (that many prompts, one batch), plus an E-step-shaped run
(trained model, 64 prompts x N=8 samples, temperature 0.7, top-k 40, batch 256). Every (variant,
setting) runs in a fresh subprocess: load, a short warm-up generate, then the timed generate; peak
RSS is that process's ``ru_maxrss`` (``getrusage`` deltas cannot isolate a variant once the
process's peak was reached, and a fresh process also keeps one variant's caches from helping
another), and "+gen MB" is peak minus the RSS right before the timed call. Variants are
interleaved and each setting is repeated (``--reps``, best kept) because this 2-core machine is
shared and noisy. The run also checks that restem's float32 greedy completions equal
``generate()``'s, and reports how many bf16 completions equal float32's.

    python benchmarks/bench_sampler.py [--quick]

Prints a table, then one JSON line with the figures (last line).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = ("generate", "restem-fp32", "restem-auto")
NEW_TOKENS = 64


def test_prompts(count: int) -> list[str]:
    from restem_pipeline import arith
    from restem_pipeline.prompts import template_for

    problems = [p for p in arith.embedded_problem_set(0, 600, 200, 400) if p.split == "test"]
    return [template_for(p).render(p.prompt) for p in problems[:count]]


def build_models(root: Path, train_steps: int) -> dict[str, Path]:
    from restem_pipeline import arith
    from restem_pipeline.modeling import TinyLlamaSpec, count_parameters, load_tokenizer, tiny_llama
    from restem_pipeline.stages import BaseModelConfig, build_base_model
    from restem_pipeline.training import TrainConfig, save_checkpoint

    spec = TinyLlamaSpec(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=704)
    problems = arith.embedded_problem_set(0, 600, 200, 400)
    cfg = BaseModelConfig(
        spec=spec,
        pretrain=TrainConfig(max_steps=train_steps, batch_size=32, learning_rate=3e-3, seed=0),
        pool_per_level=(600, 600, 400, 300, 300),
    )
    stats = build_base_model(root / "trained", {p.prompt for p in problems}, cfg)
    tok = load_tokenizer(root / "trained")
    model = tiny_llama(spec, tok, seed=0)
    save_checkpoint(model, tok, root / "random")
    print(
        f"models: {count_parameters(model):,} parameters; trained {train_steps} steps, loss "
        f"{stats['first_loss']:.2f} -> {stats['final_loss']:.2f}",
        file=sys.stderr,
    )
    return {"random": root / "random", "trained": root / "trained"}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(spec: dict) -> dict:
    """One measurement in this (fresh) process."""
    from restem_pipeline.engine import CachedSampler
    from restem_pipeline.sampling import SamplingParams, TransformersSampler

    prompts = test_prompts(spec["prompts"])
    batch = spec["batch"]
    if spec["variant"] == "generate":
        sampler = TransformersSampler(spec["model"], batch_size=batch)
        dtype = "float32"
    else:
        dtype = "float32" if spec["variant"] == "restem-fp32" else "auto"
        sampler = CachedSampler(spec["model"], dtype=dtype, batch_size=batch)
        dtype = str(sampler.dtype).removeprefix("torch.")
    sampling = spec.get("sampling", False)
    params = SamplingParams(
        n=spec.get("n", 1),
        temperature=0.7 if sampling else 0.0,
        top_k=40,
        max_new_tokens=NEW_TOKENS,
        seed=1,
    )
    warm = prompts[: min(len(prompts), batch)]
    sampler.generate(warm, SamplingParams(n=1, temperature=0.0, max_new_tokens=4))
    before = rss_mb()
    t = time.perf_counter()
    out = sampler.generate(prompts, params)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tokens = sum(c.num_tokens for row in out for c in row)
    return {
        "seconds": seconds,
        "tokens": tokens,
        "tok_s": tokens / seconds,
        "dtype": dtype,
        "peak_rss_mb": peak,
        "gen_rss_mb": peak - before,
        "finished": sum(c.finished for row in out for c in row),
        "texts": [c.text for row in out for c in row],
    }


def run_worker(spec: dict) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def settings(quick: bool) -> list[dict]:
    one = 2 if quick else 8
    rows = [
        {"model": m, "batch": b, "prompts": one if b == 1 else b, "label": f"{m}, batch {b}"}
        for m in ("random", "trained")
        for b in (1, 64, 256)
    ]
    rows.append(
        {
            "model": "trained",
            "batch": 256,
            "prompts": 64,
            "n": 8,
            "sampling": True,
            "label": "trained, E-step: 64 x N=8, T=0.7 top-k 40, batch 256",
        }
    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 prompts at batch 1, 40 training steps, 1 repetition")
    ap.add_argument(
        "--reps", type=int, default=None, help="repetitions per measurement (best kept); default 2, quick 1"
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    reps = args.reps or (1 if args.quick else 2)
    t0 = time.perf_counter()
    rows = settings(args.quick)
    best: dict[tuple[int, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(Path(tmp), 40 if args.quick else 80)
        for rep in range(reps):
            for k, row in enumerate(rows):
                for variant in VARIANTS:
                    spec = {**row, "model": str(models[row["model"]]), "variant": variant}
                    res = run_worker(spec)
                    print(f"rep {rep + 1} {row['label']:<55} {variant:<12} {res['tok_s']:>9.0f} tok/s", file=sys.stderr)
                    if (k, variant) not in best or res["tok_s"] > best[k, variant]["tok_s"]:
                        best[k, variant] = res

    print(
        f"\n{'setting':<55}{'variant':<13}{'dtype':<10}{'tok/s':>9}{'x gen':>7}{'peak MB':>9}{'+gen MB':>9}"
        f"{'finished':>10}"
    )
    figures = []
    for k, row in enumerate(rows):
        gen = best[k, "generate"]
        fp32, auto = best[k, "restem-fp32"], best[k, "restem-auto"]
        same = sum(a == b for a, b in zip(gen["texts"], fp32["texts"], strict=True))
        bf16_same = sum(a == b for a, b in zip(fp32["texts"], auto["texts"], strict=True))
        for variant in VARIANTS:
            r = best[k, variant]
            print(
                f"{row['label']:<55}{variant:<13}{r['dtype']:<10}{r['tok_s']:>9.0f}{r['tok_s'] / gen['tok_s']:>7.2f}"
                f"{r['peak_rss_mb']:>9.0f}{r['gen_rss_mb']:>9.0f}{r['finished']:>6}/{len(r['texts'])}"
            )
        figures.append(
            {
                "setting": row["label"],
                "tok_s": {v: round(best[k, v]["tok_s"]) for v in VARIANTS},
                "ratio_vs_generate": {v: round(best[k, v]["tok_s"] / gen["tok_s"], 2) for v in VARIANTS[1:]},
                "peak_rss_mb": {v: round(best[k, v]["peak_rss_mb"]) for v in VARIANTS},
                "auto_dtype": auto["dtype"],
                "fp32_equal_generate": f"{same}/{len(gen['texts'])}",
                "auto_equal_fp32": f"{bf16_same}/{len(gen['texts'])}",
            }
        )
        print(
            f"{'':<55}restem fp32 == generate: {same}/{len(gen['texts'])}; auto == fp32: "
            f"{bf16_same}/{len(gen['texts'])}"
        )
    print(
        json.dumps(
            {
                "quick": args.quick,
                "reps": reps,
                "new_tokens": NEW_TOKENS,
                "seconds": round(time.perf_counter() - t0),
                "results": figures,
            }
        )
    )


if __name__ == "__main__":
    main()
