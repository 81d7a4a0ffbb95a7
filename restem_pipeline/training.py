"""Supervised fine-tuning of a causal LM on (prompt, completion) pairs, loss on completion tokens.

Used for all three trainings in restem: pretraining the embedded base model on worked problems,
the SFT baseline on human solutions, and every ReST-EM M-step (always starting from the base).
Batches group examples of similar length to cut padding; AdamW with linear warm-up and cosine
decay; gradient clipping; fixed seed. Checkpoints are saved with ``save_pretrained``.
Not covered: multi-GPU, sequence packing, resumable training (see README, "Scaling out").
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 2.0
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    max_length: int = 320
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs <= 0 and not self.max_steps:
            raise ValueError(f"epochs must be > 0 (got {self.epochs}) unless max_steps is set")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass
class TrainStats:
    steps: int = 0
    examples: int = 0
    tokens: int = 0
    loss_history: list[float] = field(default_factory=list)

    @property
    def first_loss(self) -> float:
        return self.loss_history[0] if self.loss_history else float("nan")

    @property
    def final_loss(self) -> float:
        tail = self.loss_history[-max(1, len(self.loss_history) // 10) :]
        return sum(tail) / len(tail) if tail else float("nan")


def tokenize_pairs(
    tokenizer, prompts: list[str], completions: list[str], max_length: int
) -> list[tuple[list[int], int]]:
    """(input_ids, prompt_length) per pair: BOS + prompt + completion + EOS, truncated at max_length."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    out = []
    for p, c in zip(p_ids, c_ids, strict=True):
        ids = (bos + p + c + [tokenizer.eos_token_id])[:max_length]
        out.append((ids, len(bos) + len(p)))
    return out


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of indices whose lengths are close (sorted within chunks of 50 batches)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lengths.__getitem__)
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(examples):  # right padding for training
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_causal_lm(
    model,
    tokenizer,
    examples: list[tuple[list[int], int]],
    cfg: TrainConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainStats:
    """Train ``model`` in place; ``progress(step, total_steps, loss)`` is called every step."""
    if not examples:
        raise ValueError("no training examples: the training set is empty")
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    lengths = [len(ids) for ids, _ in examples]
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    warmup = max(1, int(cfg.warmup_ratio * total))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
        betas=(0.9, 0.95),
    )
    model.train()
    stats = TrainStats()
    batches: list[list[int]] = []
    pad_id = tokenizer.pad_token_id
    device = next(model.parameters()).device
    for step in range(total):
        if not batches:
            batches = length_grouped_batches(lengths, cfg.batch_size, rng)
        batch = collate([examples[i] for i in batches.pop()], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, cfg.learning_rate, warmup)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        stats.steps += 1
        stats.examples += batch["input_ids"].shape[0]
        stats.tokens += int(batch["attention_mask"].sum())
        stats.loss_history.append(float(loss.detach()))
        if progress:
            progress(step + 1, total, stats.loss_history[-1])
    model.eval()
    return stats


def save_checkpoint(model, tokenizer, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
