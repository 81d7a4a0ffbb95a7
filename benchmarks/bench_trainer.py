"""Training throughput: restem's trainer vs a plain Hugging Face ``transformers.Trainer`` with padding.

Same model (a 3.3M-parameter Llama, ``restem_pipeline.modeling.tiny_llama``, same initial weights), same
data (embedded arithmetic problems with worked solutions, levels 1-5 uniform, prompt tokens masked
out of the loss), same batch size (32 examples), same number of optimizer steps, same optimizer
(AdamW 0.9/0.95, peak lr 1e-3, 5% warm-up, cosine to 10%, clipping at 1.0). The baseline is the usual
recipe: ``Trainer`` + ``DataCollatorForSeq2Seq`` (right padding to the longest in the batch, labels
-100 on the prompt), random batches, fp32, ``use_cache=False``. restem runs packed or length-grouped
padded, in fp32 or with ``dtype="auto"`` (bf16 autocast where the CPU has native bf16).

tokens/s counts *real input tokens*: non-padding tokens fed to the model, prompt tokens included, over
the training loop's time (set-up excluded). Each variant runs in a fresh subprocess; its peak memory
is that process's max RSS (imports included: about 0.4-0.5 GB of it is torch and transformers). So that
speed is not bought with wrong training, each variant reports its final training loss (mean of the
last 10% of steps) and the loss of the trained model on the same 256 held-out examples (fp32, exact).

SmolLM2-135M rows (``--smollm2 PATH`` or ``RESTEM_SMOLLM2_PATH``: a Hugging Face checkpoint of
SmolLM2-135M-Instruct; skipped with a note when absent): the M-step at 135M parameters, full fine-tuning
in fp32, full fine-tuning under bf16 autocast, LoRA (r=16, alpha 32, attention and MLP projections,
merged after training) under bf16 autocast; all packed, batch 8, same examples in the same order. Data:
GSM8K training problems (``--gsm8k``, default ``../shared/data/gsm8k/train.jsonl``; a seeded sample of
64 for training and 16 held out), prompt = the tokenizer's chat template with the question as the user
turn and the generation prompt, target = the human solution + ``<|im_end|>`` (loss on it only), cut at
384 tokens. Peak lr 1e-4 for full fine-tuning and 1e-3 for LoRA (LoRA's usual ~10x), 1 warm-up step,
cosine to 10%. Held-out loss: the same 16 examples before and after training, fp32, exact. Achieved
FLOP/s uses the *model-FLOPs* convention, 6 x P x tokens/s with P the base model's 134.5M parameters
(tied embeddings counted once: the output projection's matmul), for LoRA too; LoRA's *hardware* FLOPs
are lower, (4 x P + 6 x P_adapters) x tokens/s, since backward through frozen weights computes input
gradients (2P) but no weight gradients (2P). Attention-score FLOPs are left out (under 5% at these
lengths). Both are divided by the machine's bf16 and fp32 matmul rate measured in the same run (fresh
subprocess, torch.mm at the model's shapes for 2,048 tokens, best of 5): the parameter-weighted rate
over the model's projections and its output layer.

On a shared machine ``--threads 1`` can be much faster than torch's default of one thread per core:
each parallel op waits for all its threads, and a thread that another job has descheduled stalls it
(2 cores, load average ~6: fp32 matmul 58 vs 114 GFLOP/s, a 1 MB fill 7.7 ms vs 0.03 ms).

    python benchmarks/bench_trainer.py [--quick] [--rows all|tiny|smollm2] [--smollm2 PATH] [--threads N]

Prints a table, then one JSON line with the figures (last line); the SmolLM2 rows go under "smollm2".
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

SPEC_KW = {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 688, "max_positions": 320}
BATCH_SIZE = 32
LR = 1e-3
VARIANTS = {
    "hf_trainer_fp32": {"kind": "hf"},
    "restem_padded_fp32": {"kind": "restem", "packing": False, "dtype": "float32"},
    "restem_packed_fp32": {"kind": "restem", "packing": True, "dtype": "float32"},
    "restem_packed_auto": {"kind": "restem", "packing": True, "dtype": "auto"},
}
BASELINE = "hf_trainer_fp32"

SMOLLM2_ENV = "RESTEM_SMOLLM2_PATH"
SMOLLM2_MAX_LENGTH = 384
SMOLLM2_BATCH = 8
SMOLLM2_LR = {"full": 1e-4, "lora": 1e-3}
SMOLLM2_VARIANTS = {
    "smollm2_full_fp32": {"finetune": "full", "dtype": "float32"},
    "smollm2_full_bf16": {"finetune": "full", "dtype": "bfloat16"},
    "smollm2_lora16_bf16": {"finetune": "lora", "dtype": "bfloat16", "lora_rank": 16, "lora_alpha": 32.0},
}
MATMUL_TOKENS = 2048


def prepare(workdir: Path, n_per_level: int, n_val: int) -> dict:
    """Tokenizer and tokenized examples, written once and read by every variant."""
    from restem_pipeline import arith
    from restem_pipeline.modeling import train_tokenizer
    from restem_pipeline.prompts import TEMPLATES
    from restem_pipeline.training import tokenize_pairs

    tpl = TEMPLATES["arith"]
    pool = arith.pretraining_pool(7, (n_per_level,) * 5)
    prompts = [tpl.render(q) for q, _ in pool]
    targets = [tpl.target(a) for _, a in pool]
    tok = train_tokenizer([p + t for p, t in zip(prompts, targets, strict=True)], 384)
    tok.save_pretrained(workdir / "tokenizer")
    examples = tokenize_pairs(tok, prompts, targets, SPEC_KW["max_positions"])
    val, train = examples[:n_val], examples[n_val:]
    (workdir / "data.json").write_text(json.dumps({"train": train, "val": val}))
    lengths = [len(ids) for ids, _ in train]
    return {"train": len(train), "val": len(val), "mean_len": sum(lengths) / len(lengths), "max_len": max(lengths)}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _hf_train(model, tok, train, steps: int) -> dict:
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    tok.padding_side = "right"
    rows = [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * p + ids[p:]} for ids, p in train]
    pad = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    real, computed = [], []

    def collate(features):
        batch = pad(features)
        real.append(int(batch["attention_mask"].sum()))
        computed.append(int(batch["input_ids"].numel()))
        return batch

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            self.t1 = time.perf_counter()

    clock = Clock()
    args = TrainingArguments(
        output_dir=str(Path(tempfile.mkdtemp()) / "hf"),
        per_device_train_batch_size=BATCH_SIZE,
        max_steps=steps,
        learning_rate=LR,
        warmup_steps=max(1, int(0.05 * steps)),
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1},
        adam_beta1=0.9,
        adam_beta2=0.95,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
        seed=0,
    )
    model.config.use_cache = False
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[clock])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    seconds = clock.t1 - clock.t0
    return {
        "tokens": sum(real[:steps]),
        "computed_tokens": sum(computed[:steps]),
        "seconds": seconds,
        "losses": losses,
        "dtype": "float32",
    }


def _restem_train(model, tok, train, steps: int, packing: bool, dtype: str) -> dict:
    from restem_pipeline.training import TrainConfig, train_causal_lm

    cfg = TrainConfig(
        max_steps=steps, batch_size=BATCH_SIZE, learning_rate=LR, warmup_ratio=0.05, packing=packing, dtype=dtype
    )
    stats = train_causal_lm(model, tok, train, cfg)
    return {
        "tokens": stats.tokens,
        "computed_tokens": stats.computed_tokens,
        "seconds": stats.seconds,
        "losses": stats.loss_history,
        "dtype": stats.dtype,
    }


def run_variant(name: str, workdir: Path, steps: int) -> dict:
    """Train one variant in this (fresh) process; return its figures."""
    import torch

    from restem_pipeline.modeling import TinyLlamaSpec, count_parameters, load_tokenizer, tiny_llama
    from restem_pipeline.training import TrainConfig, evaluate_loss

    v = VARIANTS[name]
    data = json.loads((workdir / "data.json").read_text())
    train = [(ids, p) for ids, p in data["train"]]
    val = [(ids, p) for ids, p in data["val"]]
    tok = load_tokenizer(workdir / "tokenizer")
    model = tiny_llama(TinyLlamaSpec(**SPEC_KW), tok, seed=0)
    rss_before = _rss_mb()
    if v["kind"] == "hf":
        out = _hf_train(model, tok, train, steps)
    else:
        out = _restem_train(model, tok, train, steps, v["packing"], v["dtype"])
    losses = out.pop("losses")
    tail = losses[-max(1, len(losses) // 10) :]
    exact = TrainConfig(packing=False, dtype="float32")
    return {
        **out,
        "variant": name,
        "parameters": count_parameters(model),
        "torch_threads": torch.get_num_threads(),
        "steps": len(losses),
        "tokens_per_s": out["tokens"] / out["seconds"],
        "padding_efficiency": out["tokens"] / out["computed_tokens"],
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "heldout_loss": evaluate_loss(model, val, exact, tok.pad_token_id),
        "rss_before_training_mb": rss_before,
        "max_rss_mb": _rss_mb(),
    }


def prepare_smollm2(workdir: Path, model_path: Path, gsm8k: Path, n_train: int, n_val: int) -> dict:
    """GSM8K examples in SmolLM2's chat format, tokenized once for every variant."""
    import random

    from restem_pipeline.modeling import load_tokenizer

    tok = load_tokenizer(model_path)
    rows = [json.loads(line) for line in gsm8k.read_text().splitlines() if line.strip()]
    rows = random.Random(0).sample(rows, n_train + n_val)
    examples, cut = [], 0
    for r in rows:
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": r["question"]}], tokenize=False, add_generation_prompt=True
        )
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]  # the template opens with <|im_start|>
        t_ids = tok(r["answer"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
        cut += len(p_ids) + len(t_ids) > SMOLLM2_MAX_LENGTH
        examples.append(((p_ids + t_ids)[:SMOLLM2_MAX_LENGTH], len(p_ids)))
    train, val = examples[:n_train], examples[n_train:]
    (workdir / "smollm2.json").write_text(json.dumps({"train": train, "val": val, "model": str(model_path)}))
    lengths = [len(ids) for ids, _ in train]
    return {
        "train": len(train),
        "val": len(val),
        "mean_len": sum(lengths) / len(lengths),
        "max_len": max(lengths),
        "cut_at_max_length": cut,
    }


def run_smollm2_variant(name: str, workdir: Path, steps: int) -> dict:
    """Train one SmolLM2 variant in this (fresh) process; return its figures."""
    import torch

    from restem_pipeline.modeling import count_parameters, load_model, load_tokenizer
    from restem_pipeline.training import TrainConfig, evaluate_loss, train_causal_lm

    v = SMOLLM2_VARIANTS[name]
    data = json.loads((workdir / "smollm2.json").read_text())
    train = [(ids, p) for ids, p in data["train"]]
    val = [(ids, p) for ids, p in data["val"]]
    tok = load_tokenizer(data["model"])
    model = load_model(data["model"])
    params = count_parameters(model)
    # fp32, padded, exact; small micro-batches so that scoring's logits (rows x 49,152) stay below training's peak
    exact = TrainConfig(packing=False, dtype="float32", max_length=SMOLLM2_MAX_LENGTH, max_tokens_per_micro_batch=1024)
    t0 = time.perf_counter()
    heldout_before = evaluate_loss(model, val, exact, tok.pad_token_id)
    eval_s = time.perf_counter() - t0
    rss_before = _rss_mb()
    cfg = TrainConfig(
        max_steps=steps,
        batch_size=SMOLLM2_BATCH,
        learning_rate=SMOLLM2_LR[v["finetune"]],
        warmup_ratio=0.1,
        max_length=SMOLLM2_MAX_LENGTH,
        dtype=v["dtype"],
        finetune=v["finetune"],
        lora_rank=v.get("lora_rank", 16),
        lora_alpha=v.get("lora_alpha", 32.0),
    )
    t0 = time.perf_counter()
    stats = train_causal_lm(model, tok, train, cfg)
    wall = time.perf_counter() - t0
    heldout_after = evaluate_loss(model, val, exact, tok.pad_token_id)
    assert count_parameters(model) == params, "the trained model is not the plain base architecture"
    adapters = stats.trainable_parameters if stats.finetune == "lora" else 0
    tps = stats.tokens_per_s
    return {
        "variant": name,
        "finetune": stats.finetune,
        "dtype": stats.dtype,
        "parameters": params,
        "trainable_parameters": stats.trainable_parameters,
        "torch_threads": torch.get_num_threads(),
        "steps": stats.steps,
        "tokens": stats.tokens,
        "target_tokens": stats.target_tokens,
        "computed_tokens": stats.computed_tokens,
        "seconds": stats.seconds,
        "wall_s_incl_setup_and_merge": wall,
        "eval_s_16_examples": eval_s,
        "tokens_per_s": tps,
        "s_per_step": stats.seconds / stats.steps,
        "model_flops_per_s": 6 * params * tps,
        "hardware_flops_per_s": (4 * params + 6 * adapters if stats.finetune == "lora" else 6 * params) * tps,
        "padding_efficiency": stats.tokens / stats.computed_tokens,
        "first_loss": stats.first_loss,
        "final_loss": stats.final_loss,
        "loss_history": [round(x, 4) for x in stats.loss_history],
        "heldout_loss_before": heldout_before,
        "heldout_loss_after": heldout_after,
        "rss_before_training_mb": rss_before,
        "max_rss_mb": _rss_mb(),
    }


def matmul_shapes(hidden: int, intermediate: int, kv_dim: int, vocab: int) -> dict[str, tuple[int, int, int]]:
    """(rows, inner, cols) of the model's weight matmuls for MATMUL_TOKENS tokens, and the weight counts."""
    t = MATMUL_TOKENS
    return {
        "q_o": (t, hidden, hidden),
        "k_v": (t, hidden, kv_dim),
        "gate_up": (t, hidden, intermediate),
        "down": (t, intermediate, hidden),
        "lm_head": (t, hidden, vocab),
    }


def measure_matmul(model_path: Path, reps: int) -> dict:
    """Best-of-``reps`` torch.mm FLOP/s in fp32 and bf16 at the model's shapes (run in a fresh process)."""
    import torch

    cfg = json.loads((model_path / "config.json").read_text())
    hidden, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv_dim = cfg["num_key_value_heads"] * cfg.get("head_dim", hidden // cfg["num_attention_heads"])
    layers = cfg["num_hidden_layers"]
    shapes = matmul_shapes(hidden, inter, kv_dim, vocab)
    # weights per token that each shape stands for: 2 each of q/o, k/v, gate/up per layer; 1 down; the output layer
    weight = {
        "q_o": 2 * layers * hidden * hidden,
        "k_v": 2 * layers * hidden * kv_dim,
        "gate_up": 2 * layers * hidden * inter,
        "down": layers * inter * hidden,
        "lm_head": hidden * vocab,
    }
    out: dict = {"tokens": MATMUL_TOKENS, "torch_threads": torch.get_num_threads(), "shapes": {}}
    g = torch.Generator().manual_seed(0)
    for dtype_name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        rates = {}
        for key, (m, k, n) in shapes.items():
            a = torch.randn(m, k, generator=g).to(dtype)
            b = torch.randn(k, n, generator=g).to(dtype)
            torch.mm(a, b)  # warm-up: kernel selection, buffers
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                torch.mm(a, b)
                best = min(best, time.perf_counter() - t0)
            rates[key] = 2 * m * k * n / best
        total = sum(weight.values())
        weighted = total / sum(weight[k] / rates[k] for k in rates)  # time-weighted: a token's matmuls
        out[dtype_name] = {"weighted_flops_per_s": weighted, "best_flops_per_s": max(rates.values())}
        out["shapes"][dtype_name] = {k: round(r / 1e9, 1) for k, r in rates.items()}
    out["shape_dims"] = {k: list(v) for k, v in shapes.items()}
    return out


def _child(workdir: Path, args: list[str], env: dict, threads: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--workdir", str(workdir), *args]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tiny_rows(args, env: dict) -> dict:
    """The 3.3M-parameter rows: restem's trainer vs transformers.Trainer (table printed, JSON figures)."""
    steps, rounds, per_level = (8, 1, 200) if args.quick else (50, 2, 800)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = prepare(workdir, per_level, 256)
        print(f"data: {data}; {steps} steps x batch {BATCH_SIZE}, {rounds} round(s)", file=sys.stderr)
        for r in range(rounds):  # rounds interleave the variants, so machine load hits them alike
            for name in VARIANTS:
                res = _child(workdir, ["--variant", name, "--steps", str(steps)], env, args.threads)
                results.setdefault(name, []).append(res)
                print(f"round {r + 1} {name}: {res['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
    best = {name: max(runs, key=lambda x: x["tokens_per_s"]) for name, runs in results.items()}
    base = best[BASELINE]["tokens_per_s"]
    print(
        f"\n{'variant':<22}{'dtype':>9}{'tokens/s':>10}{'ratio':>7}{'pad eff':>9}{'max RSS MB':>12}"
        f"{'final loss':>12}{'held-out loss':>15}"
    )
    for name, b in best.items():
        print(
            f"{name:<22}{b['dtype']:>9}{b['tokens_per_s']:>10.0f}{b['tokens_per_s'] / base:>7.2f}"
            f"{b['padding_efficiency']:>9.2f}{b['max_rss_mb']:>12.0f}{b['final_loss']:>12.3f}{b['heldout_loss']:>15.3f}"
        )
    return {
        "quick": args.quick,
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "rounds": rounds,
        "data": data,
        "parameters": best[BASELINE]["parameters"],
        "torch_threads": best[BASELINE]["torch_threads"],
        "tokens_per_s": {n: round(b["tokens_per_s"], 1) for n, b in best.items()},
        "tokens_per_s_all_rounds": {n: [round(x["tokens_per_s"], 1) for x in rs] for n, rs in results.items()},
        "ratio_vs_hf_trainer": {n: round(b["tokens_per_s"] / base, 3) for n, b in best.items()},
        "padding_efficiency": {n: round(b["padding_efficiency"], 3) for n, b in best.items()},
        "max_rss_mb": {n: round(b["max_rss_mb"], 1) for n, b in best.items()},
        "rss_before_training_mb": {n: round(b["rss_before_training_mb"], 1) for n, b in best.items()},
        "final_loss": {n: round(b["final_loss"], 4) for n, b in best.items()},
        "heldout_loss": {n: round(b["heldout_loss"], 4) for n, b in best.items()},
        "dtype": {n: b["dtype"] for n, b in best.items()},
    }


def smollm2_rows(args, env: dict) -> dict:
    """The SmolLM2-135M rows: full fp32, full bf16, LoRA bf16 (table printed, JSON figures)."""
    path = args.smollm2 or os.environ.get(SMOLLM2_ENV)
    gsm8k = args.gsm8k
    if not path or not (Path(path) / "config.json").is_file():
        print(f"\nnote: SmolLM2 rows skipped: no checkpoint (--smollm2 or {SMOLLM2_ENV}; got {path!r})")
        return {"skipped": f"no checkpoint at {path!r}"}
    if not gsm8k.is_file():
        print(f"\nnote: SmolLM2 rows skipped: no GSM8K training file at {gsm8k}")
        return {"skipped": f"no GSM8K file at {gsm8k}"}
    path = Path(path).resolve()
    steps, n_val, reps = (2, 8, 2) if args.quick else (args.smollm2_steps, 16, 5)
    n_train = 64 if not args.quick else 16
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = prepare_smollm2(workdir, path, gsm8k, n_train, n_val)
        print(f"smollm2 data: {data}; {steps} steps x batch {SMOLLM2_BATCH}", file=sys.stderr)
        matmul = _child(workdir, ["--matmul", str(path), "--reps", str(reps)], env, args.threads)
        print(f"matmul GFLOP/s: {matmul['shapes']}", file=sys.stderr)
        for r in range(args.smollm2_rounds):
            for name in SMOLLM2_VARIANTS:
                res = _child(workdir, ["--smollm2-variant", name, "--steps", str(steps)], env, args.threads)
                results.setdefault(name, []).append(res)
                print(f"round {r + 1} {name}: {res['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
    best = {name: max(runs, key=lambda x: x["tokens_per_s"]) for name, runs in results.items()}
    peak32, peak16 = matmul["float32"]["weighted_flops_per_s"], matmul["bfloat16"]["weighted_flops_per_s"]
    print(
        f"\nSmolLM2-135M ({best[next(iter(best))]['parameters'] / 1e6:.1f}M parameters), {steps} steps x batch "
        f"{SMOLLM2_BATCH}, {matmul['torch_threads']} torch thread(s); matmul at model shapes: "
        f"fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s"
    )
    print(
        f"{'variant':<21}{'trainable':>11}{'tokens/s':>10}{'s/step':>8}{'GFLOP/s':>9}{'/fp32 mm':>9}{'/bf16 mm':>9}"
        f"{'max RSS MB':>11}{'held-out before':>16}{'after':>8}{'final loss':>11}"
    )
    for name, b in best.items():
        f = b["model_flops_per_s"]
        print(
            f"{name:<21}{b['trainable_parameters'] / 1e6:>10.1f}M{b['tokens_per_s']:>10.0f}{b['s_per_step']:>8.1f}"
            f"{f / 1e9:>9.1f}{f / peak32:>9.1%}{f / peak16:>9.1%}{b['max_rss_mb']:>11.0f}"
            f"{b['heldout_loss_before']:>16.4f}{b['heldout_loss_after']:>8.4f}{b['final_loss']:>11.4f}"
        )
    lora = [b for b in best.values() if b["finetune"] == "lora"]
    for b in lora:
        h = b["hardware_flops_per_s"]
        print(
            f"{b['variant']}: hardware FLOP/s (4P + 6P_adapters) {h / 1e9:.1f} G = {h / peak32:.1%} of fp32 mm, "
            f"{h / peak16:.1%} of bf16 mm"
        )
    per = {k: {n: b[k] for n, b in best.items()} for k in ("finetune", "dtype", "trainable_parameters", "steps")}
    rounded = {
        k: {n: round(b[k], 4) for n, b in best.items()}
        for k in ("heldout_loss_before", "heldout_loss_after", "first_loss", "final_loss", "padding_efficiency")
    }
    return {
        "model": str(path),
        "parameters": best[next(iter(best))]["parameters"],
        "steps": steps,
        "batch_size": SMOLLM2_BATCH,
        "learning_rate": SMOLLM2_LR,
        "rounds": args.smollm2_rounds,
        "data": data,
        "torch_threads": best[next(iter(best))]["torch_threads"],
        "matmul_gflops": {
            "float32_weighted": round(peak32 / 1e9, 1),
            "bfloat16_weighted": round(peak16 / 1e9, 1),
            "float32_best": round(matmul["float32"]["best_flops_per_s"] / 1e9, 1),
            "bfloat16_best": round(matmul["bfloat16"]["best_flops_per_s"] / 1e9, 1),
            "per_shape": matmul["shapes"],
            "shape_dims": matmul["shape_dims"],
        },
        "flops_convention": "model: 6*P*tokens/s (P = base parameters, all variants); "
        "lora hardware: (4*P + 6*P_adapters)*tokens/s",
        "tokens_per_s": {n: round(b["tokens_per_s"], 1) for n, b in best.items()},
        "tokens_per_s_all_rounds": {n: [round(x["tokens_per_s"], 1) for x in rs] for n, rs in results.items()},
        "s_per_step": {n: round(b["s_per_step"], 2) for n, b in best.items()},
        "model_gflops_per_s": {n: round(b["model_flops_per_s"] / 1e9, 1) for n, b in best.items()},
        "hardware_gflops_per_s": {n: round(b["hardware_flops_per_s"] / 1e9, 1) for n, b in best.items()},
        "model_flops_vs_fp32_matmul": {n: round(b["model_flops_per_s"] / peak32, 3) for n, b in best.items()},
        "model_flops_vs_bf16_matmul": {n: round(b["model_flops_per_s"] / peak16, 3) for n, b in best.items()},
        "hardware_flops_vs_bf16_matmul": {n: round(b["hardware_flops_per_s"] / peak16, 3) for n, b in best.items()},
        "max_rss_mb": {n: round(b["max_rss_mb"], 1) for n, b in best.items()},
        "rss_before_training_mb": {n: round(b["rss_before_training_mb"], 1) for n, b in best.items()},
        "wall_s_incl_setup_and_merge": {n: round(b["wall_s_incl_setup_and_merge"], 1) for n, b in best.items()},
        "loss_history": {n: b["loss_history"] for n, b in best.items()},
        **per,
        **rounded,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few steps, one round: checks that it runs")
    ap.add_argument("--rows", choices=["all", "tiny", "smollm2"], default="all", help="which rows to run")
    ap.add_argument("--smollm2", help=f"SmolLM2-135M checkpoint directory (default: ${SMOLLM2_ENV})")
    ap.add_argument(
        "--gsm8k",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared/data/gsm8k/train.jsonl",
        help="GSM8K train.jsonl for the SmolLM2 rows",
    )
    ap.add_argument("--smollm2-steps", type=int, default=8, help="optimizer steps per SmolLM2 variant (full run)")
    ap.add_argument("--smollm2-rounds", type=int, default=1, help="rounds of the SmolLM2 variants, best kept")
    ap.add_argument("--threads", type=int, help="torch threads in every child (default: torch's own, one per core)")
    ap.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--smollm2-variant", choices=sorted(SMOLLM2_VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--matmul", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=5, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads and (args.variant or args.smollm2_variant or args.matmul):
        import torch

        torch.set_num_threads(args.threads)
    if args.variant:  # a child: one variant, one JSON line
        print(json.dumps(run_variant(args.variant, args.workdir, args.steps)))
        return
    if args.smollm2_variant:
        print(json.dumps(run_smollm2_variant(args.smollm2_variant, args.workdir, args.steps)))
        return
    if args.matmul:
        print(json.dumps(measure_matmul(args.matmul, args.reps)))
        return
    load_start = os.getloadavg()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)} ({os.cpu_count()} CPUs)")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out: dict = {"quick": args.quick, "rows": args.rows, "threads": args.threads}
    if args.rows in ("all", "tiny"):
        out.update(tiny_rows(args, env))
    if args.rows in ("all", "smollm2"):
        out["smollm2"] = smollm2_rows(args, env)
    load_end = os.getloadavg()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in load_end)}")
    out["load_average"] = {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in load_end]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
