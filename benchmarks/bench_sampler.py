"""Sampling throughput: restem's ``CachedSampler`` vs transformers ``generate()``, each in float32 and bfloat16.

Same models, same prompts, same settings, side by side in one run; every (row, variant) in a fresh
subprocess (load, a short warm-up, the timed ``generate``). Variants:

- ``generate-fp32`` / ``generate-bf16``: ``TransformersSampler`` (transformers ``generate()``: left-padded
  batches, KV cache on) with the model loaded in float32 / in bfloat16 (``load_model(dtype=...)``: weights,
  activations and KV cache in bf16; transformers casts the next-token logits to float32 before choosing).
  The model is cast, not autocast, because that is what restem's engine does in bf16 (``engine_llama``
  keeps bf16 copies of the weights, bf16 activations and KV cache, and float32 for the sampling
  distribution), so the two bf16 variants compute in the same precision.
- ``generate-fp32-1t`` / ``generate-bf16-1t``: the same with torch limited to one thread.
- ``restem-fp32``: ``CachedSampler(dtype="float32")``.
- ``restem-auto``: ``CachedSampler(dtype="auto")``, the default: bf16 where the CPU has native bf16 and the
  batch is at least 4 (below that bf16 matrix-vector products lose to float32 on CPU), else float32; the
  dtype it chose is printed in every row.

Like for like: every ratio names its baseline's precision. ``x gen fp32`` is a restem variant's tokens/s
over ``generate()`` in float32, ``x gen bf16`` over ``generate()`` in bfloat16, each ``generate()`` at the
faster of its two thread counts (torch's default and one thread: restem's ``ThreadTuner`` picks between
these per step, so ``generate()`` gets the better of the two as well). ``restem-fp32`` over ``gen fp32``
isolates the engine (same precision, bit-identical greedy output); ``restem-auto`` over ``gen bf16`` is
the engine at the precision it runs in; ``restem-auto`` over ``gen fp32`` mixes the engine with the
precision change (what the old version of this bench reported as its only ratio). ``--threads N`` pins
every variant to N torch threads instead, restem's ``ThreadTuner`` included (``CachedSampler(threads=N)``),
and drops the ``-1t`` variants: the strictest like for like on a shared machine.

Toy rows: prompts are the embedded arithmetic task's test problems (``restem_pipeline.data.arith``
rendered with ``prompts.template_for``) in order: levels 1-5 mixed, 29-117 tokens. Model: the 3.3M-parameter
Llama of the issue (hidden 256, 4 layers, 4 heads, MLP 704, the task's 384-token tokenizer) built with
``restem_pipeline.generation.modeling``: ``toy-3.3M random`` (random init, seed 0; it never emits EOS, so
every sequence runs all its new tokens: pure decode throughput) and ``toy-3.3M trained`` (the same
architecture pretrained briefly on the task, ``build_base_model``, 80 steps; 40 with --quick; sequences end
at EOS after 18-60 tokens, so dropping finished rows matters). Greedy, 64 new tokens (32 with --quick), at
batch 1 (8 prompts one after another; 2 with --quick), 64 and 256 (that many prompts, one batch), plus an
E-step-shaped row: the trained model, 64 prompts x N=8 samples (16 with --quick), temperature 0.7, top-k 40,
batch 256. Figures are tokens/s of generated tokens (EOS not counted).

A real model, when its checkpoint is present: SmolLM2-135M-Instruct (``--smollm2`` or
``$RESTEM_SMOLLM2_PATH``, else ``/tmp/restem_data/named_models/smollm2-135m`` or ``<$RESTEM_DATA_ROOT
or ./data>/named_models/smollm2-135m``, as ``named_models.ensure_checkpoint`` converts it; skipped with a
printed note otherwise). Prompts are GSM8K test questions (``$RESTEM_EXTERNAL_DATA/gsm8k/test.jsonl`` or
``../shared/data``; restem's own GSM8K exemplar questions and embedded problems where that file is
missing), as a chat-template user turn (~50-140 tokens) or as the 4-shot text prompt of
``prompts.TEMPLATES['gsm8k']`` (~310-400 tokens). Rows: batch 1 greedy (4 chat prompts one at a time,
32 new tokens), batch 64 greedy (64 chat prompts, 32 new tokens), the E-step shape (4 prompts x N = 8,
temperature 0.7, top-k 40, 64 new tokens, one batch) with each prompt kind, and the 4-shot E-step at a
full 256-row batch (32 prompts x 8; restem only: ``generate()`` would take most of an hour here). Each
once (``--smollm2-reps``). --quick runs the two E-step rows only, 1 prompt x 8, 8 new tokens. Sequences
run to ``<|im_end|>`` or ``max_new_tokens`` (no stop strings: both samplers do the same work).

Matmul fraction (SmolLM2 rows). The FLOPs counted are the weight matrix products restem's engine performs
to produce the row's tokens:

    FLOPs = 2 * W_layers * (P + G) + 2 * W_head * (R + G)

with W_layers = layers x (h (q + 2 kv) + q h + 3 h i), the per-token weights of the decoder layers' q/k/v,
o, gate, up and down projections (SmolLM2: 30 x 3.54M = 106.2M); W_head = vocab x h, the lm_head (tied to
the embedding: 49,152 x 576 = 28.3M); P = prompt tokens, each distinct prompt once, BOS included (the
engine prefills a prompt once for its N samples); R = distinct prompts (the engine applies the lm_head to
the last prompt position only); G = generated tokens, EOS not counted (each is fed back through every
layer and the lm_head; this is exact for a sequence that ends at EOS, whose logits come from its last
token's pass, and one position too many for a sequence cut at ``max_new_tokens``, whose last token is
never fed back). The embedding lookup, norms, RoPE and activations are not matrix products and are not
counted. **Attention's own products (Q K^T and softmax x V over the KV cache) are not counted** either;
their estimate, 4 x layers x q_dim x (query, key) pairs (causal prefill once per prompt, each generated
token over its whole context), is printed beside them (``attn GFLOP``). The same numerator is used for
every variant, so a variant that computes more (``generate()`` prefills every sample's copy of a prompt,
pads, and keeps finished rows in the batch) gets no credit for it. restem's own count of what it ran
(prefill positions including bucket padding, decode row-steps including rows not yet dropped) is in the
JSON as ``engine_performed_gflop``.

The reference is the time those same FLOPs take as plain ``torch.mm`` at the engine's weight shapes
(576x960 q/k/v, 576x576 o, 576x3072 gate/up, 1536x576 down, 576x49152 lm_head): sum over shapes of
FLOPs_shape / rate_shape, with each shape's rate measured in a fresh process before and after the SmolLM2
rows (the larger kept; once with --quick), best of 5, at 2,048 rows (the headline) and at the row's decode
batch, with torch's default thread count and with 1 thread (the faster total kept; with ``--threads N``
at N threads only). The fraction is that
time over the measured seconds, i.e. useful FLOP/s over the row's FLOP-weighted matmul rate, in bf16
(``of bf16``) and in fp32 (``of fp32``).

Peak RSS is each process's ``VmHWM`` (the high-water mark of its own image); "+gen MB" is the peak minus
the RSS just before the timed call. Toy measurements are repeated (``--reps``, best kept): this 2-core
machine is shared and noisy, and noise only ever slows a run down. Greedy rows check restem fp32 ==
``generate()`` fp32 (expected: every completion) and count auto == restem fp32, ``generate()`` bf16 ==
``generate()`` fp32 and restem auto == ``generate()`` bf16 (two bf16 implementations round differently);
sampled rows use different random streams, so only their rates compare. The load average is printed at
the start and the end. Not measured: GPU, vLLM, a compiled ``generate()`` (``torch.compile``, static cache).

    python benchmarks/bench_sampler.py [--quick] [--reps N] [--threads N] [--smollm2 PATH] [--smollm2-only]

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
# variant: (sampler, dtype asked for, torch threads: None = torch's default)
VARIANT_SPECS = {
    "generate-fp32": ("generate", "float32", None),
    "generate-fp32-1t": ("generate", "float32", 1),
    "generate-bf16": ("generate", "bfloat16", None),
    "generate-bf16-1t": ("generate", "bfloat16", 1),
    "restem-fp32": ("restem", "float32", None),
    "restem-auto": ("restem", "auto", None),
}
VARIANTS = tuple(VARIANT_SPECS)
RESTEM = ("restem-fp32", "restem-auto")
BASELINES = {"fp32": ("generate-fp32", "generate-fp32-1t"), "bf16": ("generate-bf16", "generate-bf16-1t")}
SMOLLM2_DEFAULT = Path("/tmp/restem_data/named_models/smollm2-135m")
MATMUL_TOKENS = 2048
TOY = "toy-3.3M"
SMOLLM2 = "smollm2-135m"


def test_prompts(count: int) -> list[str]:
    from restem_pipeline.data import arith
    from restem_pipeline.data.prompts import template_for

    problems = [p for p in arith.embedded_problem_set(0, 600, 200, 400) if p.split == "test"]
    return [template_for(p).render(p.prompt) for p in problems[:count]]


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


# ------------------------------------------------------------------------------------------ FLOPs


def model_dims(model: Path) -> dict:
    cfg = json.loads((model / "config.json").read_text())
    h = cfg["hidden_size"]
    d = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    return {
        "h": h,
        "inter": cfg["intermediate_size"],
        "layers": cfg["num_hidden_layers"],
        "vocab": cfg["vocab_size"],
        "q": cfg["num_attention_heads"] * d,
        "kv": cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * d,
        "tied": bool(cfg.get("tie_word_embeddings")),
    }


def weight_shapes(dims: dict) -> dict[str, tuple[int, int]]:
    """The engine's weight matrices, (in, out): q/k/v fused, o, gate/up fused, down, lm_head."""
    h, q, kv, i = dims["h"], dims["q"], dims["kv"], dims["inter"]
    return {"qkv": (h, q + 2 * kv), "o": (q, h), "gate_up": (h, 2 * i), "down": (i, h), "lm_head": (h, dims["vocab"])}


def parameters_from_config(model: Path) -> int:
    """Parameters of a Llama-style checkpoint (tied embeddings counted once), from its config.json."""
    d = model_dims(model)
    per_layer = d["h"] * (d["q"] + 2 * d["kv"]) + d["q"] * d["h"] + 3 * d["h"] * d["inter"] + 2 * d["h"]
    return d["vocab"] * d["h"] * (1 if d["tied"] else 2) + d["layers"] * per_layer + d["h"]


def flops_by_shape(dims: dict, layer_positions: int, head_positions: int) -> dict[str, float]:
    """2 x weights x positions per weight shape: layer shapes x ``layer_positions``, lm_head x ``head_positions``."""
    return {
        k: 2.0 * a * b * (head_positions if k == "lm_head" else dims["layers"] * layer_positions)
        for k, (a, b) in weight_shapes(dims).items()
    }


def useful_positions(r: dict) -> tuple[int, int]:
    """(positions through every layer, positions through the lm_head) of the formula: (P + G, R + G)."""
    return r["prompt_tokens"] + r["tokens"], len(r["prompt_lengths"]) + r["tokens"]


def attention_flops(dims: dict, r: dict) -> float:
    """QK^T and softmax x V: 4 x layers x q_dim per (query, key) pair; causal prefill once per prompt,
    each generated token over its whole context (the formula's G convention)."""
    pairs = 0
    for length, gens in zip(r["prompt_lengths"], r["completion_tokens"], strict=True):
        pairs += length * (length + 1) // 2
        pairs += sum(g * length + g * (g + 1) // 2 for g in gens)
    return 4.0 * dims["layers"] * dims["q"] * pairs


def measure_matmul(model: Path, rows: list[int], reps: int = 5) -> dict:
    """torch.mm FLOP/s per weight shape (bf16 and fp32; default and 1 thread), in this process."""
    import torch

    shapes = weight_shapes(model_dims(model))
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
                out["rates"][f"{dtype_name}/{m}/{threads}"] = rates
        torch.set_num_threads(most)
    return out


def matmul_reference(first: dict, second: dict) -> dict[str, dict[str, dict[str, float]]]:
    """{'dtype/rows': {threads: {shape: FLOP/s}}}, each rate the larger of the two measurements."""
    out: dict = {}
    for key, rates in first["rates"].items():
        dtype, m, threads = key.split("/")
        other = second["rates"][key]
        out.setdefault(f"{dtype}/{m}", {})[threads] = {k: max(v, other[k]) for k, v in rates.items()}
    return out


def ideal_seconds(ref: dict[str, dict[str, float]], flops: dict[str, float]) -> tuple[float, str]:
    """(seconds, threads): the time ``flops`` take as torch.mm at the faster thread count's measured rates."""
    return min((sum(f / rates[k] for k, f in flops.items()), threads) for threads, rates in ref.items())


# ----------------------------------------------------------------------------------------- worker


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
    from restem_pipeline.generation.modeling import prompt_input_ids
    from restem_pipeline.generation.sampling import SamplingParams, TransformersSampler

    kind = spec.get("prompt_kind", "arith")
    prompts = test_prompts(spec["prompts"]) if kind == "arith" else real_prompts(kind, spec["prompts"], spec["model"])
    batch = spec["batch"]
    backend, dtype, threads = VARIANT_SPECS[spec["variant"]]
    pinned = spec.get("threads")  # --threads N: every variant on N threads, restem's ThreadTuner pinned too
    if threads or pinned:
        torch.set_num_threads(pinned or threads)
    if backend == "generate":
        sampler = TransformersSampler(spec["model"], dtype=dtype, batch_size=batch)
        dtype = str(next(sampler.model.parameters()).dtype).removeprefix("torch.")
    else:
        sampler = CachedSampler(spec["model"], dtype=dtype, batch_size=batch, threads=pinned)
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
    engine = getattr(sampler, "stats", None)
    return {
        "seconds": seconds,
        "prompt_lengths": [len(ids) for ids in prompt_input_ids(sampler.tokenizer, prompts)],
        "prompt_tokens": sum(len(ids) for ids in prompt_input_ids(sampler.tokenizer, prompts)),
        "completion_tokens": [[c.num_tokens for c in row] for row in out],
        "threads": sampler.tuner.best if hasattr(sampler, "tuner") else torch.get_num_threads(),
        "tokens": sum(c.num_tokens for row in out for c in row),
        "tok_s": sum(c.num_tokens for row in out for c in row) / seconds,
        "dtype": dtype,
        "peak_rss_mb": peak,
        "gen_rss_mb": peak - before,
        "finished": sum(c.finished for row in out for c in row),
        "texts": [c.text for row in out for c in row],
        "engine_stats": dict(engine) if engine else None,
    }


def run_child(*args: str) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------- rows


def settings(quick: bool) -> list[dict]:
    new = 32 if quick else 64
    rows = []
    for m in ("random", "trained"):
        for b in (1, 64, 256):
            prompts = (2 if quick else 8) if b == 1 else b
            shape = f"batch 1 greedy ({prompts} prompts one at a time)" if b == 1 else f"batch {b} greedy"
            rows.append(
                {
                    "model": m,
                    "model_label": f"{TOY} {m}",
                    "batch": b,
                    "prompts": prompts,
                    "new": new,
                    "shape": f"{shape}, {new} new",
                }
            )
    count = 16 if quick else 64
    rows.append(
        {
            "model": "trained",
            "model_label": f"{TOY} trained",
            "batch": 256,
            "prompts": count,
            "n": 8,
            "new": new,
            "sampling": True,
            "shape": f"E-step {count} x N=8, T=0.7 top-k 40, batch 256, {new} new",
        }
    )
    for row in rows:
        row["label"] = f"{row['model_label']}, {row['shape']}"
    return rows


def smollm2_settings(quick: bool) -> list[dict]:
    """Batch 1 and batch 64 greedy (chat), the E-step shape with chat and 4-shot prompts (every variant), and
    a restem-only E-step at a full 256-row batch. --quick: the two E-step rows only, 1 prompt x N = 8, 8 new
    tokens, fewer variants."""
    sampled = ("generate-fp32", "generate-bf16", "restem-fp32", "restem-auto") if quick else VARIANTS
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
                "model_label": f"{SMOLLM2} {name}",
                "shape": f"E-step {estep} x N=8, T=0.7 top-k 40, {new} new",
            }
        )
    if not quick:
        scale = {**rows[-1], "prompts": 32, "variants": ("restem-auto",)}
        scale["shape"] = f"E-step 32 x N=8, T=0.7 top-k 40, {new} new (restem only)"
        greedy = [
            {
                "batch": b,
                "prompts": 4 if b == 1 else 64,
                "new": 32,
                "prompt_kind": "chat",
                "variants": VARIANTS,
                "model_label": f"{SMOLLM2} chat",
                "shape": ("batch 1 greedy (4 prompts one at a time)" if b == 1 else "batch 64 greedy") + ", 32 new",
            }
            for b in (1, 64)
        ]
        rows = [*greedy, *rows, scale]
    for row in rows:
        row["label"] = f"{row['model_label']}, {row['shape']}"
    return rows


def variants_of(row: dict, pinned: int | None) -> tuple[str, ...]:
    """The row's variants; with every variant pinned to one thread count the ``-1t`` ones are redundant."""
    return tuple(v for v in row.get("variants", VARIANTS) if not (pinned and v.endswith("-1t")))


def run_rows(rows: list[dict], reps: int, model_of, pinned: int | None) -> dict:
    best: dict[tuple[int, str], dict] = {}
    for rep in range(reps):
        for k, row in enumerate(rows):
            for variant in variants_of(row, pinned):
                spec = {**row, "model": model_of(row), "variant": variant, "threads": pinned}
                res = run_child("--worker", json.dumps(spec))
                print(
                    f"rep {rep + 1} {row['label']:<78} {variant:<17} {res['tok_s']:>8.0f} tok/s "
                    f"({res['seconds']:.1f} s, {res['threads']} thread(s))",
                    file=sys.stderr,
                )
                if (k, variant) not in best or res["tok_s"] > best[k, variant]["tok_s"]:
                    best[k, variant] = res
    return best


def baseline(best: dict, k: int, precision: str) -> tuple[str, dict] | None:
    """The faster ``generate()`` variant of ``precision`` measured in row ``k`` (its name and result)."""
    have = [(v, best[k, v]) for v in BASELINES[precision] if (k, v) in best]
    return max(have, key=lambda vr: vr[1]["tok_s"]) if have else None


def equal(a: dict, b: dict) -> str:
    return f"{sum(x == y for x, y in zip(a['texts'], b['texts'], strict=True))}/{len(a['texts'])}"


def print_rows(rows: list[dict], best: dict, pinned: int | None) -> list[dict]:
    """The throughput table for ``rows`` (best result per (row, variant)) and their JSON figures."""
    print(
        f"\n{'model, shape':<80}{'variant':<18}{'dtype':<10}{'thr':>4}{'tok/s':>8}{'x gen fp32':>11}"
        f"{'x gen bf16':>11}{'peak MB':>9}{'+gen MB':>9}{'finished':>11}"
    )
    figures = []
    for k, row in enumerate(rows):
        variants = variants_of(row, pinned)
        bases = {p: baseline(best, k, p) for p in BASELINES}
        for variant in variants:
            r = best[k, variant]
            cells = []
            for p in BASELINES:
                base = bases[p]
                ok = variant in RESTEM and base is not None
                cells.append(f"{r['tok_s'] / base[1]['tok_s']:>11.2f}" if ok else f"{'-':>11}")
            print(
                f"{row['label']:<80}{variant:<18}{r['dtype']:<10}{r['threads']:>4}{r['tok_s']:>8.0f}{''.join(cells)}"
                f"{r['peak_rss_mb']:>9.0f}{r['gen_rss_mb']:>9.0f}{r['finished']:>6}/{len(r['texts'])}"
            )
        checks = {}
        if not row.get("sampling"):
            pairs = {
                "restem_fp32_eq_generate_fp32": ("restem-fp32", "generate-fp32"),
                "restem_auto_eq_restem_fp32": ("restem-auto", "restem-fp32"),
                "generate_bf16_eq_generate_fp32": ("generate-bf16", "generate-fp32"),
                "restem_auto_eq_generate_bf16": ("restem-auto", "generate-bf16"),
            }
            checks = {n: equal(best[k, a], best[k, b]) for n, (a, b) in pairs.items() if {a, b} <= set(variants)}
            print(f"{'':<80}equal greedy completions: " + ", ".join(f"{n} {v}" for n, v in checks.items()))
        figure = {
            "model": row["model_label"],
            "shape": row["shape"],
            "setting": row["label"],
            "tok_s": {v: round(best[k, v]["tok_s"]) for v in variants},
            "dtype": {v: best[k, v]["dtype"] for v in variants},
            "threads": {v: best[k, v]["threads"] for v in variants},
            "peak_rss_mb": {v: round(best[k, v]["peak_rss_mb"]) for v in variants},
            "equal_greedy": checks or "n/a (sampled)",
        }
        for p, base in bases.items():
            if base is not None:
                figure[f"generate_{p}_baseline"] = base[0]
                figure[f"ratio_vs_generate_{p}"] = {
                    v: round(best[k, v]["tok_s"] / base[1]["tok_s"], 2) for v in variants if v in RESTEM
                }
        figures.append(figure)
    threads = (
        f"every variant on {pinned} torch thread(s), restem's ThreadTuner pinned"
        if pinned
        else "generate() at the faster of its thread counts (default, 1t); thr: restem's ThreadTuner's last choice"
    )
    print(f"x gen fp32 / x gen bf16: tokens/s over generate()'s in that precision; {threads}")
    return figures


def smollm2_section(path: Path, args, load_start) -> dict:
    rows = smollm2_settings(args.quick)
    params, dims = parameters_from_config(path), model_dims(path)
    decode_rows = sorted({min(r["batch"], r["prompts"] * r.get("n", 1)) for r in rows})
    matmul_args = ["--matmul", str(path), json.dumps([MATMUL_TOKENS, *decode_rows]), "3" if args.quick else "5"]
    before = run_child(*matmul_args)
    best = run_rows(rows, args.smollm2_reps, lambda row: str(path), args.threads)
    after = before if args.quick else run_child(*matmul_args)  # --quick: measured once
    ref = matmul_reference(before, after)
    if args.threads:  # the reference runs on the threads the variants had
        ref = {key: {t: r for t, r in by_t.items() if int(t) == args.threads} or by_t for key, by_t in ref.items()}
    w_layers = sum(a * b for k, (a, b) in weight_shapes(dims).items() if k != "lm_head") * dims["layers"]
    w_head = dims["h"] * dims["vocab"]
    print(
        f"\nSmolLM2-135M-Instruct ({path}): {params:,} parameters; W_layers {w_layers:,}, W_head {w_head:,}. "
        f"torch.mm GFLOP/s at the engine's weight shapes (larger of before/after; default = "
        f"{before['default_threads']} threads):"
    )
    shapes = list(weight_shapes(dims))
    print(f"  {'dtype':<9}{'rows':>6}{'threads':>8}" + "".join(f"{s:>9}" for s in shapes))
    for key in sorted(ref, key=lambda s: (s.split("/")[0], int(s.split("/")[1]))):
        for threads, rates in sorted(ref[key].items()):
            dtype, m = key.split("/")
            print(f"  {dtype:<9}{m:>6}{threads:>8}" + "".join(f"{rates[s] / 1e9:>9.0f}" for s in shapes))
    figures = print_rows(rows, best, args.threads)
    print(
        f"\n{'useful FLOPs = 2 W_layers (P + G) + 2 W_head (R + G)':<80}{'variant':<18}{'P':>6}{'R':>4}{'G':>6}"
        f"{'GFLOP':>8}{'attn GFLOP':>11}{'GFLOP/s':>9}{'of bf16':>8}{'@rows':>7}{'of fp32':>8}"
    )
    for k, (row, fig) in enumerate(zip(rows, figures, strict=True)):
        rows_m = min(row["batch"], row["prompts"] * row.get("n", 1))
        for key in ("useful_gflop", "attention_gflop", "useful_gflops", "engine_performed_gflop"):
            fig[key] = {}
        for key in ("fraction_of_bf16_matmul", "fraction_of_bf16_matmul_at_rows", "fraction_of_fp32_matmul"):
            fig[key] = {}
        auto = best[k, "restem-auto"]
        fig["prompt_tokens"], fig["prompts"] = auto["prompt_tokens"], len(auto["prompt_lengths"])
        fig["matmul_rows"] = rows_m
        for variant in variants_of(row, args.threads):
            r = best[k, variant]
            layer_pos, head_pos = useful_positions(r)
            flops = flops_by_shape(dims, layer_pos, head_pos)
            total = sum(flops.values())
            attn = attention_flops(dims, r)
            frac16 = ideal_seconds(ref[f"bfloat16/{MATMUL_TOKENS}"], flops)[0] / r["seconds"]
            frac16_rows = ideal_seconds(ref[f"bfloat16/{rows_m}"], flops)[0] / r["seconds"]
            frac32 = ideal_seconds(ref[f"float32/{MATMUL_TOKENS}"], flops)[0] / r["seconds"]
            fig["useful_gflop"][variant] = round(total / 1e9, 2)
            fig["attention_gflop"][variant] = round(attn / 1e9, 2)
            fig["useful_gflops"][variant] = round(total / r["seconds"] / 1e9, 1)
            fig["fraction_of_bf16_matmul"][variant] = round(frac16, 3)
            fig["fraction_of_bf16_matmul_at_rows"][variant] = round(frac16_rows, 3)
            fig["fraction_of_fp32_matmul"][variant] = round(frac32, 3)
            if r.get("engine_stats"):
                s = r["engine_stats"]
                # prefill positions (bucket padding included) and decode row-steps (rows not yet dropped included)
                done = flops_by_shape(
                    dims, s["prefill_tokens"] + s["decode_row_steps"], len(r["prompt_lengths"]) + s["decode_row_steps"]
                )
                fig["engine_performed_gflop"][variant] = round(sum(done.values()) / 1e9, 2)
            print(
                f"{row['label']:<80}{variant:<18}{r['prompt_tokens']:>6}{len(r['prompt_lengths']):>4}{r['tokens']:>6}"
                f"{total / 1e9:>8.1f}{attn / 1e9:>11.1f}{total / r['seconds'] / 1e9:>9.1f}{frac16:>8.3f}"
                f"{frac16_rows:>7.3f}{frac32:>8.3f}"
            )
    print(
        "P: prompt tokens, each distinct prompt once (BOS included); R: distinct prompts (lm_head on the last "
        "prompt position only); G: generated tokens (EOS not counted). W_layers: q/k/v/o/gate/up/down weights of "
        "all layers; W_head: the lm_head. Attention's QK^T and softmax x V are NOT in GFLOP (estimate: attn GFLOP). "
        "Same numerator for every variant. of bf16 / of fp32: the time these FLOPs take as torch.mm at the "
        f"engine's weight shapes ({MATMUL_TOKENS} rows; @rows: at the row's decode batch, bf16), over the measured "
        "time."
    )
    estep = [(f, r) for f, r in zip(figures, rows, strict=True) if r.get("sampling")]
    return {
        "path": str(path),
        "model": SMOLLM2,
        "parameters": params,
        "w_layers": w_layers,
        "w_head": w_head,
        "flops_formula": "2*W_layers*(P+G) + 2*W_head*(R+G); attention products not counted",
        "reps": args.smollm2_reps,
        "load_average_start": load_start,
        "matmul_gflops": {
            key: {t: {s: round(v / 1e9, 1) for s, v in rates.items()} for t, rates in by_t.items()}
            for key, by_t in ref.items()
        },
        "estep_restem_auto_ratio": {
            f["setting"]: {
                p: f[f"ratio_vs_generate_{p}"]["restem-auto"] for p in BASELINES if f"ratio_vs_generate_{p}" in f
            }
            for f, _ in estep
        },
        "estep_restem_fp32_ratio_vs_generate_fp32": {
            f["setting"]: f["ratio_vs_generate_fp32"]["restem-fp32"]
            for f, _ in estep
            if "restem-fp32" in f.get("ratio_vs_generate_fp32", {})
        },
        "estep_fraction_of_bf16_matmul": {f["setting"]: f["fraction_of_bf16_matmul"]["restem-auto"] for f, _ in estep},
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
    ap.add_argument("--smollm2-only", action="store_true", help="skip the toy-model rows")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="pin every variant (restem's ThreadTuner too) to N torch threads; default: generate() at torch's "
        "default and at 1 thread (the faster kept), restem tuned",
    )
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
    toy: dict = {}
    if rows:
        steps = 40 if args.quick else 80
        with tempfile.TemporaryDirectory() as tmp:  # this process never imports torch: children start small
            built = run_child("--build", tmp, str(steps))
            print(
                f"models: {built['parameters']:,} parameters; trained {steps} steps, loss "
                f"{built['first_loss']:.2f} -> {built['final_loss']:.2f}",
                file=sys.stderr,
            )
            best = run_rows(rows, reps, lambda row: f"{tmp}/{row['model']}", args.threads)
        print(f"\n{TOY}: {built['parameters']:,} parameters (hidden 256, 4 layers, MLP 704, vocabulary 384)")
        figures = print_rows(rows, best, args.threads)
        toy = {
            "model": TOY,
            "parameters": built["parameters"],
            "trained_loss": [round(built["first_loss"], 3), round(built["final_loss"], 3)],
        }
    path, why = smollm2_path(args.smollm2)
    if path is None:
        print(f"\nSmolLM2 rows skipped: {why}")
        smollm2: dict = {"skipped": why}
    else:
        smollm2 = smollm2_section(path, args, load_start)
    load_end = [round(x, 2) for x in os.getloadavg()]
    print(f"\nload average at end: {load_end}")
    ratios = {
        f["setting"]: {
            v: {p: f[f"ratio_vs_generate_{p}"][v] for p in BASELINES if v in f.get(f"ratio_vs_generate_{p}", {})}
            for v in RESTEM
            if v in f["tok_s"]
        }
        for f in [*figures, *smollm2.get("results", [])]
    }
    summary = {
        "quick": args.quick,
        "reps": reps,
        "threads": f"pinned {args.threads}" if args.threads else "generate best of default/1, restem tuned",
        "new_tokens": rows[0]["new"] if rows else None,
        "seconds": round(time.perf_counter() - t0),
        "load_average": {"start": load_start, "end": load_end},
        "ratios": ratios,
        "toy": toy,
        "results": figures,
        "smollm2": smollm2,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
