"""M-step throughput on one device: restem's trainer against TRL's ``SFTTrainer`` with the same attention.

``bench_mstep(model_or_config, examples, steps, device, peak_tflops, candidates, tokenizer=...)`` trains
``steps`` optimizer steps from the same initial weights on the same batches, in the same order (restem's
own draw: ``step_batches``), once per candidate, and returns one dict per candidate: real tokens/s
(prompt included, padding not), the same after the first ``warmup_steps`` steps (``torch.compile`` and
kernel set-up happen there), achieved TFLOP/s and MFU against ``peak_tflops``, first and final loss
(mean per completion token of a step), peak CUDA memory and what ran. FLOPs: 6 x parameters x tokens
(the model-FLOPs convention of issue 22: 110M x 6 x 5.9k tokens/s = 3.9 TFLOP/s; tied embeddings
counted once) plus causal attention, 6 x layers x (heads x head dim) x the sum of squared example
lengths (forward QK^T and AV over the lower triangle, backward twice that).

Candidates (``CANDIDATES``):

- ``restem``: ``train_causal_lm`` with the device's default kernels (``kernels``: on CUDA the flex
  document mask, chunked cross-entropy, compiled decoder layers; on CPU varlen sdpa, chunked loss).
- ``restem_eager``: the same with ``compile="off"`` (does compiling pay?).
- ``restem_loop``: ``attention="varlen", loss="full", compile="off"``: the M-step as measured in issue
  22 (one sdpa call per example from a Python loop, full logits).
- ``trl``: TRL ``SFTTrainer`` with ``padding_free=True`` and ``completion_only_loss`` on the same batches
  (pre-tokenized rows, ``labels`` masking the prompt: the same loss tokens, asserted), TRL's own fused
  LM-head loss, with restem's attention for the device swapped in (``packed_attention``: flex on CUDA,
  varlen on CPU) and restem's compiled layers where ``restem`` compiles them; same AdamW (betas 0.9,
  0.95, no weight decay), schedule (``finetune.lr_at``), clipping at 1.0, bf16 autocast where restem
  uses it, no gradient accumulation (restem's micro-batch budget is set to hold a whole step).
- ``trl_hf_flex``: TRL padding-free with transformers' own ``flex_attention`` implementation (its
  packed-sequence mask from ``position_ids``), no restem piece at all: the library path. CUDA only.

Every candidate runs in this process after ``torch._dynamo.reset()`` (each pays its own compilation);
one that raises is reported with its error and the others still run. TRL is imported only for its
candidates (not installed: reported as skipped).
Not covered: several GPUs, evaluation, checkpoints, processes of their own per candidate (peak CPU
memory is not reported).
"""

from __future__ import annotations

import copy
import math
import random
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import torch

from restem_pipeline.training.batching import Example, shuffled_batches, target_count
from restem_pipeline.training.finetune import TrainConfig, lr_at
from restem_pipeline.training.kernels import FLEX_PAD_TO, compiled_layers, resolve
from restem_pipeline.training.loop import train_causal_lm
from restem_pipeline.training.micro_steps import autocast_dtype
from restem_pipeline.training.packed_attention import packed_attention

CANDIDATES = ("restem", "restem_eager", "restem_loop", "trl", "trl_hf_flex")
RESTEM_SETTINGS = {
    "restem": {},
    "restem_eager": {"compile": "off"},
    "restem_loop": {"attention": "varlen", "loss": "full", "compile": "off"},
}


def step_batches(examples: list[Example], batch_size: int, steps: int, seed: int = 0) -> list[list[int]]:
    """The example indices of each of restem's optimizer steps (one process: ``loop.OptimizerLoop``'s draw)."""
    usable = [i for i, ex in enumerate(examples) if target_count(ex)]
    rng = random.Random(seed)
    out: list[list[int]] = []
    batches: list[list[int]] = []
    while len(out) < steps:
        batches = batches or [[usable[j] for j in b] for b in shuffled_batches(len(usable), batch_size, rng)]
        out.append(batches.pop())
    return out


def model_flops(model, examples: list[Example], schedule: list[list[int]]) -> tuple[float, float]:
    """(6 x parameters x tokens, causal attention FLOPs) of training on ``schedule``'s steps."""
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())  # a tied embedding is one parameter
    lengths = [len(examples[i][0]) for b in schedule for i in b]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attention = 6 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * sum(n * n for n in lengths)
    return 6.0 * params * sum(lengths), float(attention)


def _fresh_model(model_or_config, device: torch.device, seed: int):
    from transformers import AutoModelForCausalLM, PretrainedConfig

    if isinstance(model_or_config, PretrainedConfig):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(model_or_config)
        if model.config._attn_implementation not in ("sdpa", "eager"):
            model.config._attn_implementation = "sdpa"
    else:
        model = copy.deepcopy(model_or_config)
    return model.to(device)


def _ids_only(model_or_config) -> SimpleNamespace:
    """What restem's trainer reads of a tokenizer (pad and EOS ids), from the model's config."""
    cfg = getattr(model_or_config, "config", model_or_config)
    eos = cfg.eos_token_id[0] if isinstance(cfg.eos_token_id, list) else cfg.eos_token_id
    return SimpleNamespace(pad_token_id=cfg.pad_token_id, eos_token_id=eos if eos is not None else 0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _restem(model, tokenizer, examples, schedule, settings: dict, common: dict, device) -> dict:
    cfg = TrainConfig(**common, **settings)
    ends: list[float] = []

    def progress(*_) -> None:
        _sync(device)
        ends.append(time.perf_counter())

    _sync(device)
    t0 = time.perf_counter()
    stats = train_causal_lm(model, tokenizer, examples, cfg, progress=progress)
    expected = sum(target_count(examples[i]) for b in schedule for i in b)
    assert stats.target_tokens == expected, f"restem trained {stats.target_tokens} loss tokens, the steps {expected}"
    return {"t0": t0, "ends": ends, "losses": stats.loss_history, "kernels": stats.kernels}


def _trl(model, tokenizer, examples, schedule, common: dict, device, attention: str | None, compile_: bool) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    if any(len(b) != len(schedule[0]) for b in schedule):
        raise ValueError("TRL's sequential batches need every step to hold the same number of examples")
    rows = []
    for b in schedule:
        for i in b:
            ids, p = examples[i]
            rows.append({"input_ids": ids, "labels": [-100] * p + ids[p:]})
    steps, lr = len(schedule), common["learning_rate"]
    warmup = max(1, int(common["warmup_ratio"] * steps))
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.95), weight_decay=0.0
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, steps, lr, warmup) / lr)
    flex = attention in ("flex", "flex_dense", "flex_attention")
    bf16 = autocast_dtype(common["dtype"], device) is not None
    # TRL turns checkpointing on by default; transformers 5.25 renamed the flag (5.17 has the old name only)
    names = SFTConfig.__dataclass_fields__
    no_checkpointing = {k: False for k in ("activation_checkpointing", "gradient_checkpointing") if k in names}
    if "activation_checkpointing" in names:
        no_checkpointing.pop("gradient_checkpointing", None)
    args = SFTConfig(
        output_dir=str(Path(tempfile.mkdtemp(prefix="restem-bench-")) / "trl"),
        max_steps=steps, learning_rate=lr, max_grad_norm=1.0, gradient_accumulation_steps=1,
        **no_checkpointing, logging_steps=1, save_strategy="no", report_to=[],
        use_cpu=device.type == "cpu", bf16=bf16, dataloader_num_workers=0, disable_tqdm=True, seed=common["seed"],
        per_device_train_batch_size=len(schedule[0]), train_sampling_strategy="sequential",
        padding_free=True, max_length=None, completion_only_loss=True, shuffle_dataset=False,
        pad_to_multiple_of=FLEX_PAD_TO if flex else None,
    )  # fmt: skip
    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            _sync(device)
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            _sync(device)
            ends.append(time.perf_counter())

    clock = Clock()
    model.config.use_cache = False
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        callbacks=[clock], optimizers=(opt, sched),
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # its per-step dicts on stdout
    first = trainer.data_collator([trainer.train_dataset[k] for k in range(len(schedule[0]))])
    got = int((first["labels"][:, 1:] != -100).sum())
    want = sum(target_count(examples[i]) for i in schedule[0])
    assert got == want, f"TRL's first batch has {got} loss tokens, restem's first step {want}"
    swap = packed_attention(model, attention) if attention in ("varlen", "flex", "flex_dense") else nullcontext(True)
    with swap as on, compiled_layers(model) if compile_ else nullcontext():
        if not on:
            raise ValueError(f"attention {attention!r} does not apply to this model")
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    kernels = f"attention={attention} loss=trl_fused compile={'on' if compile_ else 'off'}"
    return {"t0": clock.t0, "ends": ends, "losses": losses, "kernels": kernels}


def _summary(name: str, run: dict, step_tokens: list[int], flops: tuple[float, float], peak: float, warm: int) -> dict:
    ends, t0 = run["ends"], run["t0"]
    seconds = ends[-1] - t0
    warm = min(warm, len(ends) - 1)
    steady_s = ends[-1] - (ends[warm - 1] if warm > 0 else t0)
    steady_tokens = sum(step_tokens[warm:])
    frac = steady_tokens / sum(step_tokens)  # FLOPs scale with tokens (attention: close enough for a share)
    achieved = (flops[0] + flops[1]) * frac / steady_s
    losses = run["losses"]
    return {
        "candidate": name,
        "kernels": run["kernels"],
        "steps": len(ends),
        "tokens": sum(step_tokens),
        "seconds": round(seconds, 3),
        "tokens_per_s": round(sum(step_tokens) / seconds, 1),
        "steady_tokens_per_s": round(steady_tokens / steady_s, 1),
        "achieved_tflops": float(f"{achieved / 1e12:.4g}"),
        "mfu": float(f"{achieved / (peak * 1e12):.4g}") if peak else None,
        "attention_flop_share": round(flops[1] / (flops[0] + flops[1]), 4),
        "first_loss": losses[0] if losses else math.nan,
        "final_loss": losses[-1] if losses else math.nan,
        "losses": losses,
    }


def bench_mstep(
    model_or_config,
    examples: list[Example],
    steps: int,
    device: str | torch.device,
    peak_tflops: float,
    candidates: tuple[str, ...] | list[str] = ("restem", "trl"),
    tokenizer=None,
    batch_size: int = 64,
    learning_rate: float = 3e-4,
    warmup_ratio: float = 0.1,
    warmup_steps: int = 2,
    dtype: str = "auto",
    seed: int = 0,
    warm_up: bool = True,
) -> list[dict]:
    """Train each candidate ``steps`` steps on the same batches; one result dict per candidate (see module doc).

    ``model_or_config``: a transformers causal LM (deep-copied per candidate) or its config (a model
    initialised with ``seed`` per candidate). ``tokenizer``: the model's (TRL's candidates need one;
    restem only reads its pad and EOS ids, from the config without one). ``peak_tflops``: the
    device's dense bf16 (or fp32) peak, for MFU (0: not computed).
    ``warm_up``: first one untimed eager step (CUDA context, cuBLAS and allocator set-up, CPU kernel
    caches), so that the first candidate does not pay the process's start-up for the others.
    """
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown:
        raise ValueError(f"unknown candidates {unknown}; choose from {', '.join(CANDIDATES)}")
    device = torch.device(device)
    ids_only = tokenizer or _ids_only(model_or_config)
    schedule = step_batches(examples, batch_size, steps, seed)
    tokens_per_step = [sum(len(examples[i][0]) for i in b) for b in schedule]
    longest = max(len(ids) for ids, _ in examples)
    budget = -(-max(max(tokens_per_step), longest) // FLEX_PAD_TO) * FLEX_PAD_TO  # one micro-batch per step
    common = {
        "max_steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "warmup_ratio": warmup_ratio,
        "seed": seed, "dtype": dtype, "max_length": longest, "max_tokens_per_micro_batch": budget,
    }  # fmt: skip
    defaults = resolve(TrainConfig(**common), device)
    if warm_up:
        cfg = TrainConfig(**{**common, "max_steps": 1}, compile="off")
        train_causal_lm(_fresh_model(model_or_config, device, seed), ids_only, examples, cfg)
    results = []
    for name in candidates:
        torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        row: dict = {"candidate": name, "device": str(device)}
        try:
            model = _fresh_model(model_or_config, device, seed)
            flops = model_flops(model, examples, schedule)
            if name in RESTEM_SETTINGS:
                run = _restem(model, ids_only, examples, schedule, RESTEM_SETTINGS[name], common, device)
            elif name == "trl_hf_flex" and device.type != "cuda":
                row["skipped"] = "transformers' flex_attention trains on CUDA only (no FlexAttention backward on CPU)"
            elif tokenizer is None:
                row["skipped"] = "TRL's candidates need the model's tokenizer"
            else:
                try:
                    import trl  # noqa: F401
                except ImportError as err:
                    row["skipped"] = f"TRL is not importable: {err}"
                if "skipped" not in row:
                    if name == "trl_hf_flex":
                        model.config._attn_implementation = "flex_attention"
                        attention = "flex_attention"
                    else:
                        attention = defaults.attention
                    run = _trl(model, tokenizer, examples, schedule, common, device, attention, defaults.compile)
            if "skipped" not in row:
                row |= _summary(name, run, tokens_per_step, flops, peak_tflops, warmup_steps)
                if device.type == "cuda":
                    row["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        except Exception as err:  # report it and go on with the next candidate
            row["error"] = f"{type(err).__name__}: {err}"[-2000:]
        results.append(row)
    return results
