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

    python benchmarks/bench_trainer.py [--quick]

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few steps, one round: checks that it runs")
    ap.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:  # a child: one variant, one JSON line
        print(json.dumps(run_variant(args.variant, args.workdir, args.steps)))
        return
    steps, rounds, per_level = (8, 1, 200) if args.quick else (50, 2, 800)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = prepare(workdir, per_level, 256)
        print(f"data: {data}; {steps} steps x batch {BATCH_SIZE}, {rounds} round(s)", file=sys.stderr)
        for r in range(rounds):  # rounds interleave the variants, so machine load hits them alike
            for name in VARIANTS:
                cmd = [sys.executable, __file__, "--variant", name, "--workdir", str(workdir), "--steps", str(steps)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                if proc.returncode != 0:
                    raise RuntimeError(f"variant {name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
                res = json.loads(proc.stdout.strip().splitlines()[-1])
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
    print(
        json.dumps(
            {
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
        )
    )


if __name__ == "__main__":
    main()
