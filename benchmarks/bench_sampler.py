"""Sampling throughput: restem's ``CachedSampler`` (float32 and dtype='auto') vs transformers ``generate()``.

Same models, same prompts, same settings, side by side in one run. Prompts are the embedded
arithmetic task's test problems (``restem_pipeline.arith`` rendered with ``prompts.template_for``)
in order: levels 1-5 mixed, 29-117 tokens. Models are the 3.3M-parameter Llama of the issue
(hidden 256, 4 layers, 4 heads, MLP 704, the task's 384-token tokenizer) built with
``restem_pipeline.modeling``:

- ``random``: random init (seed 0). It never emits EOS, so every sequence runs all 64 new tokens:
  pure decode throughput.
- ``trained``: the same architecture pretrained briefly on the task (``build_base_model``, 80 steps;
  40 with --quick), so sequences end at EOS after 18-60 tokens and dropping finished rows matters.

Figures are tokens/s of generated tokens (EOS not counted), greedy, 64 new tokens (32 with --quick),
at batch 1 (8 prompts one after another; 2 with --quick), 64 and 256 (that many prompts, one
batch), plus an E-step-shaped run: the trained model, 64 prompts x N=8 samples, temperature 0.7,
top-k 40, batch 256. Each (setting, variant) runs in a fresh subprocess: load, a short warm-up, the
timed ``generate``. Peak RSS is that process's ``VmHWM`` (the high-water mark of its own image;
``getrusage`` deltas cannot isolate a variant once a process's peak was reached, and
``ru_maxrss`` carries the parent's peak across fork/exec); "+gen MB" is the peak minus the RSS
just before the timed call. Variants are interleaved and each measurement repeated (``--reps``,
best kept): this 2-core machine is shared and noisy, and noise only ever slows a run down. The run
also checks that restem's float32 greedy completions equal ``generate()``'s and counts the
dtype='auto' completions equal to float32's (sampled runs use different random streams, so only
their rates compare).

    python benchmarks/bench_sampler.py [--quick] [--reps N]

Prints a table, then one JSON line with the figures (last line).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("generate", "restem-fp32", "restem-auto")


def test_prompts(count: int) -> list[str]:
    from restem_pipeline import arith
    from restem_pipeline.prompts import template_for

    problems = [p for p in arith.embedded_problem_set(0, 600, 200, 400) if p.split == "test"]
    return [template_for(p).render(p.prompt) for p in problems[:count]]


def build_models(root: Path, train_steps: int) -> dict:
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
    return {"parameters": count_parameters(model), "first_loss": stats["first_loss"], "final_loss": stats["final_loss"]}


def status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since this process image started) from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(spec: dict) -> dict:
    """One measurement in this (fresh) process."""
    from restem_pipeline.engine import CachedSampler
    from restem_pipeline.sampling import SamplingParams, TransformersSampler

    prompts = test_prompts(spec["prompts"])
    batch = spec["batch"]
    if spec["variant"] == "generate":
        sampler, dtype = TransformersSampler(spec["model"], batch_size=batch), "float32"
    else:
        dtype = "float32" if spec["variant"] == "restem-fp32" else "auto"
        sampler = CachedSampler(spec["model"], dtype=dtype, batch_size=batch)
        dtype = str(sampler.dtype).removeprefix("torch.")
    sampling = spec.get("sampling", False)
    params = SamplingParams(
        n=spec.get("n", 1), temperature=0.7 if sampling else 0.0, top_k=40, max_new_tokens=spec["new"], seed=1
    )
    sampler.generate(prompts[: min(len(prompts), batch)], SamplingParams(n=1, temperature=0.0, max_new_tokens=4))
    before = status_mb("VmRSS")
    t = time.perf_counter()
    out = sampler.generate(prompts, params)
    seconds = time.perf_counter() - t
    peak = status_mb("VmHWM")
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


def run_child(*args: str) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def settings(quick: bool) -> list[dict]:
    new = 32 if quick else 64
    rows = [
        {
            "model": m,
            "batch": b,
            "prompts": (2 if quick else 8) if b == 1 else b,
            "new": new,
            "label": f"{m}, batch {b}",
        }
        for m in ("random", "trained")
        for b in (1, 64, 256)
    ]
    count = 16 if quick else 64
    rows.append(
        {
            "model": "trained",
            "batch": 256,
            "prompts": count,
            "n": 8,
            "new": new,
            "sampling": True,
            "label": f"trained, E-step: {count} x N=8, T=0.7 top-k 40, batch 256",
        }
    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer prompts and tokens, 40 training steps, 1 repetition")
    ap.add_argument(
        "--reps", type=int, default=None, help="repetitions per measurement, best kept (default 2; quick 1)"
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--build", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.build:
        print(json.dumps(build_models(Path(args.build[0]), int(args.build[1]))))
        return
    reps = args.reps or (1 if args.quick else 2)
    t0 = time.perf_counter()
    rows = settings(args.quick)
    best: dict[tuple[int, str], dict] = {}
    steps = 40 if args.quick else 80
    with tempfile.TemporaryDirectory() as tmp:  # this process never imports torch: children start small
        built = run_child("--build", tmp, str(steps))
        print(
            f"models: {built['parameters']:,} parameters; trained {steps} steps, loss "
            f"{built['first_loss']:.2f} -> {built['final_loss']:.2f}",
            file=sys.stderr,
        )
        for rep in range(reps):
            for k, row in enumerate(rows):
                for variant in VARIANTS:
                    res = run_child(
                        "--worker", json.dumps({**row, "model": f"{tmp}/{row['model']}", "variant": variant})
                    )
                    print(f"rep {rep + 1} {row['label']:<52} {variant:<12} {res['tok_s']:>8.0f} tok/s", file=sys.stderr)
                    if (k, variant) not in best or res["tok_s"] > best[k, variant]["tok_s"]:
                        best[k, variant] = res

    print(
        f"\n{'setting':<62}{'variant':<13}{'dtype':<10}{'tok/s':>8}{'x gen':>7}{'peak MB':>9}{'+gen MB':>9}"
        f"{'finished':>11}"
    )
    figures = []
    for k, row in enumerate(rows):
        gen, fp32, auto = (best[k, v] for v in VARIANTS)
        for variant in VARIANTS:
            r = best[k, variant]
            print(
                f"{row['label']:<62}{variant:<13}{r['dtype']:<10}{r['tok_s']:>8.0f}{r['tok_s'] / gen['tok_s']:>7.2f}"
                f"{r['peak_rss_mb']:>9.0f}{r['gen_rss_mb']:>9.0f}{r['finished']:>6}/{len(r['texts'])}"
            )
        total = len(gen["texts"])
        if row.get("sampling"):
            same = auto_same = "n/a (sampled)"
        else:
            same = f"{sum(a == b for a, b in zip(gen['texts'], fp32['texts'], strict=True))}/{total}"
            auto_same = f"{sum(a == b for a, b in zip(fp32['texts'], auto['texts'], strict=True))}/{total}"
        print(f"{'':<62}restem fp32 == generate: {same}; auto == fp32: {auto_same}")
        figures.append(
            {
                "setting": row["label"],
                "tok_s": {v: round(best[k, v]["tok_s"]) for v in VARIANTS},
                "ratio_vs_generate": {v: round(best[k, v]["tok_s"] / gen["tok_s"], 2) for v in VARIANTS[1:]},
                "peak_rss_mb": {v: round(best[k, v]["peak_rss_mb"]) for v in VARIANTS},
                "auto_dtype": auto["dtype"],
                "fp32_equal_generate": same,
                "auto_equal_fp32": auto_same,
            }
        )
    summary = {
        "quick": args.quick,
        "reps": reps,
        "new_tokens": rows[0]["new"],
        "seconds": round(time.perf_counter() - t0),
        "results": figures,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
