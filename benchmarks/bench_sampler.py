"""Sampling throughput: restem's ``CachedSampler`` (float32 and dtype='auto') vs transformers ``generate()``.

Same models, same prompts, same settings, side by side in one run. Prompts are the embedded
arithmetic task's test problems (``restem_pipeline.data.arith`` rendered with ``prompts.template_for``)
in order: levels 1-5 mixed, 29-117 tokens. Models are the 3.3M-parameter Llama of the issue
(hidden 256, 4 layers, 4 heads, MLP 704, the task's 384-token tokenizer) built with
``restem_pipeline.generation.modeling``:

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

A real model, when its checkpoint is present: SmolLM2-135M-Instruct (``--smollm2`` or
``$RESTEM_SMOLLM2_PATH``, else ``/tmp/restem_data/named_models/smollm2-135m`` or ``<$RESTEM_DATA_ROOT
or ./data>/named_models/smollm2-135m``; skipped with a printed note otherwise). Prompts are GSM8K
test questions (``$RESTEM_EXTERNAL_DATA/gsm8k/test.jsonl`` or ``../shared/data``; restem's own GSM8K
exemplar questions and embedded problems where that file is missing), as a chat-template user turn
(~50-140 tokens) or as the 4-shot text prompt of ``prompts.TEMPLATES['gsm8k']`` (~310-400 tokens).
Rows: batch 1 greedy (4 chat prompts one at a time, 32 new tokens), batch 64 greedy (64 chat
prompts, 32 new tokens), the E-step shape (4 prompts x N = 8, temperature 0.7, top-k 40, 64 new
tokens, one batch) with each prompt kind, and the 4-shot E-step at a full 256-row batch (32 prompts
x 8; restem only: ``generate()`` would take most of an hour here). --quick runs the two E-step rows
only, 1 prompt x 8, 8 new tokens, against ``generate()``.
Baselines: ``generate()`` with torch's default threads and ``generate-1t`` (one thread: on a
shared machine one thread can beat two); greedy rows also run restem float32. Each once
(``--smollm2-reps``). Sequences run to ``<|im_end|>`` or ``max_new_tokens`` (no stop strings: both
samplers do the same work). Useful FLOP/s = (prompt tokens, each prompt counted once, + generated
tokens) x 2 x parameters / seconds, divided by the machine's bf16 matmul rate at the model's shapes,
measured in the same run in a fresh process before and after the SmolLM2 rows (the larger kept;
once with --quick): torch.mm of (tokens x 576) by the engine's weights (576x960 q/k/v, 576x576 o,
576x3072 gate/up, 1536x576 down, 576x49152 lm_head), best of 5, weighted by a token's matmuls, at
2,048 tokens (the headline rate) and at each row's decode batch, with torch's default thread count
and with 1 thread, the faster kept. The load average is printed at the start and the end.

    python benchmarks/bench_sampler.py [--quick] [--reps N] [--smollm2 PATH] [--smollm2-only]

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
    from restem_pipeline.data import arith
    from restem_pipeline.data.prompts import template_for

    problems = [p for p in arith.embedded_problem_set(0, 600, 200, 400) if p.split == "test"]
    return [template_for(p).render(p.prompt) for p in problems[:count]]


SMOLLM2_DEFAULT = Path("/tmp/restem_data/named_models/smollm2-135m")
GENERATE_1T = "generate-1t"  # generate() with torch limited to one thread (the faster choice on a busy machine)
MATMUL_TOKENS = 2048


def smollm2_path(explicit: str | None) -> tuple[Path | None, str]:
    """The SmolLM2 checkpoint to bench, or None and where it was looked for."""
    data_root = Path(os.environ.get("RESTEM_DATA_ROOT", "data"))
    candidates = [explicit, os.environ.get("RESTEM_SMOLLM2_PATH"), SMOLLM2_DEFAULT]
    candidates.append(str(data_root / "named_models" / "smollm2-135m"))
    for c in candidates:
        if c and (Path(c) / "config.json").is_file():
            return Path(c), ""
    looked = ", ".join(str(c) for c in candidates if c)
    return None, f"no SmolLM2 checkpoint (looked in {looked}; set RESTEM_SMOLLM2_PATH or --smollm2)"


def gsm8k_questions(count: int) -> list[str]:
    """The first ``count`` GSM8K test questions, or restem's own questions where the data set is missing."""
    from restem_pipeline.data.problems import external_data_root

    path = external_data_root() / "gsm8k" / "test.jsonl"
    if path.is_file():
        with path.open() as f:
            questions = [json.loads(line)["question"] for line, _ in zip(f, range(count), strict=False)]
    else:
        from restem_pipeline.data import arith
        from restem_pipeline.data.prompts import GSM8K_EXEMPLARS

        questions = [q for q, _ in GSM8K_EXEMPLARS]
        questions += [p.prompt for p in arith.embedded_problem_set(0, 600, 200, 400) if p.split == "test"]
    return (questions * (count // max(len(questions), 1) + 1))[:count]


def real_prompts(kind: str, count: int, model: str) -> list[str]:
    from restem_pipeline.data.prompts import TEMPLATES
    from restem_pipeline.generation.modeling import load_tokenizer

    questions = gsm8k_questions(count)
    if kind == "fewshot":
        return [TEMPLATES["gsm8k"].render(q) for q in questions]
    tok = load_tokenizer(model)
    return [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in questions
    ]


def parameters_from_config(model: Path) -> int:
    """Parameters of a Llama-style checkpoint (tied embeddings counted once), from its config.json."""
    cfg = json.loads((model / "config.json").read_text())
    h, inter, layers, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    d = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * d, cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * d
    per_layer = h * (q + 2 * kv) + q * h + 3 * h * inter + 2 * h
    return vocab * h * (1 if cfg.get("tie_word_embeddings") else 2) + layers * per_layer + h


def measure_matmul(model: Path, rows: list[int], reps: int = 5) -> dict:
    """torch.mm FLOP/s at the engine's weight shapes (bf16 and fp32; default and 1 thread), in this process."""
    import torch

    cfg = json.loads((model / "config.json").read_text())
    h, inter, vocab, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    d = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * d, cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * d
    shapes = {"qkv": (h, q + 2 * kv), "o": (q, h), "gate_up": (h, 2 * inter), "down": (inter, h), "lm_head": (h, vocab)}
    per_token = {k: (1 if k == "lm_head" else layers) * a * b for k, (a, b) in shapes.items()}  # weights a token uses
    most = torch.get_num_threads()
    g = torch.Generator().manual_seed(0)
    out: dict = {"default_threads": most, "rates": {}}
    for dtype_name, dtype in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        weights = {k: torch.randn(a, b, generator=g).to(dtype) for k, (a, b) in shapes.items()}
        for m in sorted(set(rows)):
            for threads in sorted({1, most}):
                torch.set_num_threads(threads)
                rates = {}
                for k, w in weights.items():
                    x = torch.randn(m, w.shape[0], generator=g).to(dtype)
                    torch.mm(x, w)  # warm-up: kernel selection, buffers
                    best = float("inf")
                    for _ in range(reps):
                        t = time.perf_counter()
                        torch.mm(x, w)
                        best = min(best, time.perf_counter() - t)
                    rates[k] = 2 * m * w.shape[0] * w.shape[1] / best
                weighted = sum(per_token.values()) / sum(per_token[k] / rates[k] for k in rates)
                out["rates"][f"{dtype_name}/{m}/{threads}"] = {
                    "weighted": weighted,
                    "per_shape_gflops": {k: round(r / 1e9, 1) for k, r in rates.items()},
                }
        torch.set_num_threads(most)
    return out


def build_models(root: Path, train_steps: int) -> dict:
    from restem_pipeline.data import arith
    from restem_pipeline.generation.modeling import TinyLlamaSpec, count_parameters, load_tokenizer, tiny_llama
    from restem_pipeline.stages import BaseModelConfig, build_base_model
    from restem_pipeline.training.finetune import TrainConfig, save_checkpoint

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
    import torch

    from restem_pipeline.generation.engine import CachedSampler
    from restem_pipeline.generation.sampling import SamplingParams, TransformersSampler

    kind = spec.get("prompt_kind", "arith")
    prompts = test_prompts(spec["prompts"]) if kind == "arith" else real_prompts(kind, spec["prompts"], spec["model"])
    batch = spec["batch"]
    if spec["variant"] == GENERATE_1T:
        torch.set_num_threads(1)
    if spec["variant"] in ("generate", GENERATE_1T):
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
    bos = [sampler.tokenizer.bos_token_id] if sampler.tokenizer.bos_token_id is not None else []
    prompt_tokens = sum(
        len(bos) + len(ids) for ids in sampler.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    )
    return {
        "seconds": seconds,
        "prompt_tokens": prompt_tokens,
        "threads": sampler.tuner.best if hasattr(sampler, "tuner") else torch.get_num_threads(),
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


def smollm2_settings(quick: bool) -> list[dict]:
    """Batch 1 and batch 64 greedy (chat), the E-step shape with chat and 4-shot prompts against
    ``generate()`` (default threads and 1 thread), and a restem-only E-step at a full 256-row batch.
    --quick: the two E-step rows only, 1 prompt x N = 8, 8 new tokens, ``generate()`` and ``auto``."""
    greedy = ("generate", GENERATE_1T, "restem-fp32", "restem-auto")
    sampled = ("generate", "restem-auto") if quick else ("generate", GENERATE_1T, "restem-auto")
    estep, new = (1, 8) if quick else (4, 64)
    rows = []
    for kind, name in (("chat", "chat"), ("fewshot", "4-shot")):
        rows.append(
            {
                "batch": 256,
                "prompts": estep,
                "n": 8,
                "new": new,
                "sampling": True,
                "prompt_kind": kind,
                "variants": sampled,
                "label": f"smollm2 {name}, E-step: {estep} x N=8, T=0.7 top-k 40",
            }
        )
    if quick:
        return rows
    scale = {**rows[-1], "prompts": 32, "variants": ("restem-auto",)}
    scale["label"] = "smollm2 4-shot, E-step: 32 x N=8, T=0.7 top-k 40 (restem only)"
    return [
        {
            "batch": 1,
            "prompts": 4,
            "new": 32,
            "prompt_kind": "chat",
            "variants": greedy,
            "label": "smollm2 chat, batch 1 greedy",
        },
        {
            "batch": 64,
            "prompts": 64,
            "new": 32,
            "prompt_kind": "chat",
            "variants": greedy,
            "label": "smollm2 chat, batch 64 greedy",
        },
        *rows,
        scale,
    ]


def print_rows(rows: list[dict], best: dict) -> list[dict]:
    """The table's rows for ``rows`` (best result per (row, variant)) and their JSON figures."""
    figures = []
    for k, row in enumerate(rows):
        variants = row.get("variants", VARIANTS)
        gen = best.get((k, "generate"))
        for variant in variants:
            r = best[k, variant]
            ratio = f"{r['tok_s'] / gen['tok_s']:>7.2f}" if gen else f"{'n/a':>7}"
            print(
                f"{row['label']:<62}{variant:<13}{r['dtype']:<10}{r['tok_s']:>8.0f}{ratio}"
                f"{r['peak_rss_mb']:>9.0f}{r['gen_rss_mb']:>9.0f}{r['finished']:>6}/{len(r['texts'])}"
            )
        same = auto_same = "n/a (sampled)"
        if not row.get("sampling"):
            fp32, auto = best[k, "restem-fp32"], best[k, "restem-auto"]
            total = len(gen["texts"])
            same = f"{sum(a == b for a, b in zip(gen['texts'], fp32['texts'], strict=True))}/{total}"
            auto_same = f"{sum(a == b for a, b in zip(fp32['texts'], auto['texts'], strict=True))}/{total}"
            print(f"{'':<62}restem fp32 == generate: {same}; auto == fp32: {auto_same}")
        figure = {
            "setting": row["label"],
            "tok_s": {v: round(best[k, v]["tok_s"]) for v in variants},
            "ratio_vs_generate": {},
            "peak_rss_mb": {v: round(best[k, v]["peak_rss_mb"]) for v in variants},
            "auto_dtype": best[k, "restem-auto"]["dtype"],
            "fp32_equal_generate": same,
            "auto_equal_fp32": auto_same,
        }
        if gen:
            figure["ratio_vs_generate"] = {
                v: round(best[k, v]["tok_s"] / gen["tok_s"], 2) for v in variants if v.startswith("restem")
            }
        if (k, GENERATE_1T) in best:
            one = best[k, GENERATE_1T]
            figure["ratio_vs_generate_1t"] = {
                v: round(best[k, v]["tok_s"] / one["tok_s"], 2) for v in variants if v.startswith("restem")
            }
        figures.append(figure)
    return figures


def run_rows(rows: list[dict], reps: int, model_of) -> dict:
    best: dict[tuple[int, str], dict] = {}
    for rep in range(reps):
        for k, row in enumerate(rows):
            for variant in row.get("variants", VARIANTS):
                res = run_child("--worker", json.dumps({**row, "model": model_of(row), "variant": variant}))
                print(
                    f"rep {rep + 1} {row['label']:<52} {variant:<12} {res['tok_s']:>8.0f} tok/s "
                    f"({res['seconds']:.1f} s, {res['threads']} thread(s))",
                    file=sys.stderr,
                )
                if (k, variant) not in best or res["tok_s"] > best[k, variant]["tok_s"]:
                    best[k, variant] = res
    return best


def matmul_reference(first: dict, second: dict) -> dict:
    """Per (dtype, tokens): the faster thread count's weighted rate, the larger of the two measurements."""
    out: dict = {}
    for key in first["rates"]:
        dtype, m, _ = key.split("/")
        rate = max(first["rates"][key]["weighted"], second["rates"][key]["weighted"])
        if rate > out.get(f"{dtype}/{m}", (0,))[0]:
            out[f"{dtype}/{m}"] = (rate, key.split("/")[2])
    return out


def smollm2_section(path: Path, args, load_start) -> dict:
    rows = smollm2_settings(args.quick)
    params = parameters_from_config(path)
    decode_rows = sorted({min(r["batch"], r["prompts"] * r.get("n", 1)) for r in rows})
    matmul_args = ["--matmul", str(path), json.dumps([MATMUL_TOKENS, *decode_rows]), "3" if args.quick else "5"]
    before = run_child(*matmul_args)
    best = run_rows(rows, args.smollm2_reps, lambda row: str(path))
    after = before if args.quick else run_child(*matmul_args)  # --quick: measured once
    ref = matmul_reference(before, after)
    peak16, peak32 = ref[f"bfloat16/{MATMUL_TOKENS}"][0], ref[f"float32/{MATMUL_TOKENS}"][0]
    print(
        f"\nSmolLM2-135M-Instruct ({path}): {params:,} parameters. Matmul at the model's shapes, GFLOP/s "
        f"(faster of {before['default_threads']} and 1 thread(s), larger of before/after):"
    )
    for key, (rate, threads) in sorted(ref.items(), key=lambda kv: (kv[0].split("/")[0], int(kv[0].split("/")[1]))):
        dtype, m = key.split("/")
        print(f"  {dtype:<9} {m:>5} tokens: {rate / 1e9:>7.0f} ({threads} thread(s))")
    print(
        f"\n{'setting':<62}{'variant':<13}{'dtype':<10}{'tok/s':>8}{'x gen':>7}{'peak MB':>9}{'+gen MB':>9}"
        f"{'finished':>11}"
    )
    figures = print_rows(rows, best)
    print(
        f"\n{'useful FLOP/s: (prompt tokens once + generated) x 2 x params / s':<62}{'variant':<13}{'prompt tok':>11}"
        f"{'GFLOP/s':>9}{'of bf16':>9}{'of bf16@rows':>13}{'threads':>8}"
    )
    for k, (row, fig) in enumerate(zip(rows, figures, strict=True)):
        rows_m = min(row["batch"], row["prompts"] * row.get("n", 1))
        at_rows = ref[f"bfloat16/{rows_m}"][0]
        fig["useful_gflops"], fig["fraction_of_bf16_matmul"], fig["fraction_of_bf16_matmul_at_rows"] = {}, {}, {}
        fig["prompt_tokens"] = best[k, "restem-auto"]["prompt_tokens"]
        for variant in row["variants"]:
            r = best[k, variant]
            useful = (r["prompt_tokens"] + r["tokens"]) * 2 * params / r["seconds"]
            fig["useful_gflops"][variant] = round(useful / 1e9, 1)
            fig["fraction_of_bf16_matmul"][variant] = round(useful / peak16, 3)
            fig["fraction_of_bf16_matmul_at_rows"][variant] = round(useful / at_rows, 3)
            print(
                f"{row['label']:<62}{variant:<13}{r['prompt_tokens']:>11}{useful / 1e9:>9.1f}{useful / peak16:>9.3f}"
                f"{useful / at_rows:>13.3f}{r['threads']:>8}"
            )
    estep = [f for f, r in zip(figures, rows, strict=True) if r.get("sampling")]
    return {
        "path": str(path),
        "parameters": params,
        "reps": args.smollm2_reps,
        "new_tokens": rows[0]["new"],
        "load_average_start": load_start,
        "matmul_gflops": {k: round(v[0] / 1e9, 1) for k, v in ref.items()},
        "matmul_threads": {k: int(v[1]) for k, v in ref.items()},
        "bf16_matmul_reference_gflops": round(peak16 / 1e9, 1),
        "fp32_matmul_reference_gflops": round(peak32 / 1e9, 1),
        "estep_ratio_vs_generate": {
            f["setting"]: f["ratio_vs_generate"]["restem-auto"] for f in estep if "generate" in f["tok_s"]
        },
        "estep_ratio_vs_generate_1t": {
            f["setting"]: f["ratio_vs_generate_1t"]["restem-auto"] for f in estep if "ratio_vs_generate_1t" in f
        },
        "estep_fraction_of_bf16_matmul": {f["setting"]: f["fraction_of_bf16_matmul"]["restem-auto"] for f in estep},
        "results": figures,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer prompts and tokens, 40 training steps, 1 repetition")
    ap.add_argument(
        "--reps", type=int, default=None, help="repetitions per measurement, best kept (default 2; quick 1)"
    )
    ap.add_argument("--smollm2", default=None, help="SmolLM2-135M checkpoint (default $RESTEM_SMOLLM2_PATH, ...)")
    ap.add_argument("--smollm2-reps", type=int, default=1, help="repetitions of each SmolLM2 measurement (default 1)")
    ap.add_argument("--smollm2-only", action="store_true", help="skip the tiny-model rows")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--build", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--matmul", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.build:
        print(json.dumps(build_models(Path(args.build[0]), int(args.build[1]))))
        return
    if args.matmul:
        print(json.dumps(measure_matmul(Path(args.matmul[0]), json.loads(args.matmul[1]), int(args.matmul[2]))))
        return
    load_start = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at start: {load_start}")
    reps = args.reps or (1 if args.quick else 2)
    t0 = time.perf_counter()
    rows = [] if args.smollm2_only else settings(args.quick)
    figures: list[dict] = []
    if rows:
        steps = 40 if args.quick else 80
        with tempfile.TemporaryDirectory() as tmp:  # this process never imports torch: children start small
            built = run_child("--build", tmp, str(steps))
            print(
                f"models: {built['parameters']:,} parameters; trained {steps} steps, loss "
                f"{built['first_loss']:.2f} -> {built['final_loss']:.2f}",
                file=sys.stderr,
            )
            best = run_rows(rows, reps, lambda row: f"{tmp}/{row['model']}")
        print(
            f"\n{'setting':<62}{'variant':<13}{'dtype':<10}{'tok/s':>8}{'x gen':>7}{'peak MB':>9}{'+gen MB':>9}"
            f"{'finished':>11}"
        )
        figures = print_rows(rows, best)
    path, why = smollm2_path(args.smollm2)
    if path is None:
        print(f"\nSmolLM2 rows skipped: {why}")
        smollm2: dict = {"skipped": why}
    else:
        smollm2 = smollm2_section(path, args, load_start)
    load_end = [round(x, 2) for x in os.getloadavg()]
    print(f"\nload average at end: {load_end}")
    summary = {
        "quick": args.quick,
        "reps": reps,
        "new_tokens": rows[0]["new"] if rows else None,
        "seconds": round(time.perf_counter() - t0),
        "load_average": {"start": load_start, "end": load_end},
        "results": figures,
        "smollm2": smollm2,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
