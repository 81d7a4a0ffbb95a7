"""``train_causal_lm`` and its optimizer loop: schedule, global batches, shards, train state.

``train_causal_lm`` checks the examples, sets up LoRA adapters and gradient checkpointing, and runs one
``OptimizerLoop``: AdamW over the trainable parameters for the configured number of steps. It draws
each epoch's batches (``batch_size`` x processes examples: the *global* batch, in the same order
whatever the number of processes), hands this rank's shard to ``micro_steps.StepRunner``, clips the
global gradient norm, steps, records statistics, validates every ``eval_every`` steps and saves a
``state.TrainState`` every ``checkpoint_every_steps``; on start it continues from a compatible saved
state. Under DDP/FSDP (``distributed``) the loss is normalised by the global batch's target tokens
(every rank knows the whole batch, so the count needs no communication) and the reported loss is the
all-reduced global mean.
Not covered: the configuration and its checks (``finetune``), launching processes (``distributed``,
``worker``).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch

from restem_pipeline.training.batching import Example, length_grouped_batches, shuffled_batches, target_count
from restem_pipeline.training.distributed import Parallel
from restem_pipeline.training.finetune import TrainConfig, TrainStats, _layout, evaluate_loss, lr_at
from restem_pipeline.training.lora import lora_adapters
from restem_pipeline.training.micro_steps import StepRunner
from restem_pipeline.training.state import TrainState


class OptimizerLoop:
    """The optimizer loop over the parameters that require grad (all of them, or the LoRA adapters)."""

    def __init__(self, model, tokenizer, examples, usable, cfg: TrainConfig, par: Parallel, state):
        self.model, self.examples, self.usable, self.cfg, self.par, self.state = (
            model, examples, usable, cfg, par, state,
        )  # fmt: skip
        self.rng = random.Random(cfg.seed)
        torch.manual_seed(cfg.seed)
        steps_per_epoch = math.ceil(len(usable) / (cfg.batch_size * par.world))
        self.total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
        self.warmup = max(1, int(cfg.warmup_ratio * self.total))
        self.train_model = par.wrap(model)  # FSDP: shards ``model`` in place, so the optimizer comes after
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in self.trainable if p.ndim >= 2]
        no_decay = [p for p in self.trainable if p.ndim < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.learning_rate,
            betas=(0.9, 0.95),
        )
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.lengths = [len(examples[i][0]) for i in usable]

    def epoch_batches(self) -> list[list[int]]:
        size = self.cfg.batch_size * self.par.world  # the global batch
        if self.cfg.packing:
            order = shuffled_batches(len(self.usable), size, self.rng)
        else:
            order = length_grouped_batches(self.lengths, size, self.rng)
        return [[self.usable[j] for j in b] for b in order]

    def _restore(self, stats: TrainStats, stepper: StepRunner) -> tuple[int, list[list[int]], dict[str, int]]:
        """Continue from a compatible train state: (first step, rest of the epoch's batches, counters)."""
        resumed = self.state.load(self.model, self.opt, self.par) if self.state else None
        if resumed is None:
            return 0, [], {}
        self.rng.setstate(resumed.python_rng)
        saved = resumed.stats
        stats.loss_history = list(saved["loss_history"])
        stats.val_loss_history = [(int(s), float(v)) for s, v in saved["val_loss_history"]]
        for name in ("steps", "examples", "target_tokens", "seconds"):
            setattr(stats, name, saved[name])
        stats.resumed_from_step = resumed.step
        stepper.budget, stepper.oom_splits = resumed.rank["budget"], resumed.rank["oom_splits"]
        return resumed.step, resumed.batches, dict(resumed.rank["totals"])

    def _save(self, done: int, batches, stats: TrainStats, totals: dict[str, int], stepper: StepRunner) -> None:
        rank = {"totals": totals, "budget": stepper.budget, "oom_splits": stepper.oom_splits}
        record = {**dataclasses.asdict(stats), "val_loss_history": [list(v) for v in stats.val_loss_history]}
        self.state.save(done, self.total, self.model, self.opt, self.rng, batches, record, rank, self.par)

    def run(self, progress, validation, on_validation) -> TrainStats:
        cfg, par, model, examples = self.cfg, self.par, self.model, self.examples
        with _layout(model, cfg, par.device) as kernels:
            sync = par.step_sync(self.usable[0])
            varlen = kernels.attention != "model"
            stepper = StepRunner(self.train_model, examples, cfg.step_layout(), self.pad_id, varlen, sync, kernels)
            stats = TrainStats(
                dtype="bfloat16" if stepper.amp is not None else "float32",
                packing=cfg.packing,
                varlen_attention=varlen,
                kernels=kernels.describe(),
                skipped_examples=len(examples) - len(self.usable),
                finetune=cfg.finetune,
                trainable_parameters=sum(p.numel() for p in self.trainable),  # FSDP: DTensors, global sizes
                strategy=par.strategy,
                processes=par.world,
            )

            def validate(step: int) -> None:
                loss = evaluate_loss(model, validation, cfg, self.pad_id, kernels)  # every rank: FSDP gathers per layer
                stats.val_loss_history.append((step, loss))
                if on_validation:
                    on_validation(step, loss)

            start, batches, totals = self._restore(stats, stepper)
            self.train_model.train()
            t0 = time.perf_counter()
            for step in range(start, self.total):
                batches = batches or self.epoch_batches()
                batch = batches.pop()
                for group in self.opt.param_groups:
                    group["lr"] = lr_at(step, self.total, cfg.learning_rate, self.warmup, cfg.lr_schedule)
                n_targets = sum(target_count(examples[i]) for i in batch)
                if par.world == 1:
                    loss = stepper.step(batch, totals)
                else:  # DDP and FSDP average gradients over ranks: normalise by global tokens / world
                    part = stepper.step(par.shard(examples, batch), totals, n_targets / par.world)
                    loss = par.all_sum([part])[0] / par.world
                par.clip_grad_norm(self.trainable, cfg.max_grad_norm)
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                stats.steps += 1
                stats.examples += len(batch)
                stats.target_tokens += n_targets
                stats.loss_history.append(loss)
                if progress:
                    progress(step + 1, self.total, loss)
                done = step + 1
                if validation and cfg.eval_every and done % cfg.eval_every == 0 and done < self.total:
                    stats.seconds += time.perf_counter() - t0
                    validate(done)
                    t0 = time.perf_counter()
                if self.state is not None and self.state.due(done, self.total):
                    stats.seconds += time.perf_counter() - t0
                    self._save(done, batches, stats, totals, stepper)
                    t0 = time.perf_counter()
            stats.seconds += time.perf_counter() - t0
            if validation:
                validate(self.total)
        keys = ("tokens", "computed_tokens", "micro_batches")
        summed = par.all_sum([float(totals.get(k, 0)) for k in keys] + [float(stepper.oom_splits)])
        stats.tokens, stats.computed_tokens, stats.micro_batches, stats.oom_splits = (int(v) for v in summed)
        stats.peak_memory_mb = max(par.gather(peak_memory_mb(par.device)))
        return stats


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the peak memory allocated on ``device``; CPU: this process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _checkpointing(model, on: bool) -> None:
    """Activation (gradient) checkpointing of every decoder layer, non-reentrant; transformers 5 or 4 names."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def train_causal_lm(
    model,
    tokenizer,
    examples: list[Example],
    cfg: TrainConfig,
    progress: Callable[[int, int, float], None] | None = None,
    validation: list[Example] | None = None,
    on_validation: Callable[[int, float], None] | None = None,
    parallel: Parallel | None = None,
    state: TrainState | None = None,
) -> TrainStats:
    """Train ``model`` in place; ``progress(step, total_steps, loss)`` is called every step.

    With ``validation`` examples, their loss is computed every ``cfg.eval_every`` steps and after the
    last step, recorded in ``val_loss_history`` as (step, loss) and passed to ``on_validation``.
    ``parallel``: this process's rank of a DDP/FSDP run (``distributed``; default one process); under
    FSDP ``model`` is left sharded (``parallel.model_state`` gathers it). ``state``: the train state
    to save periodically and resume from.
    """
    if not examples:
        raise ValueError("no training examples: the training set is empty")
    longest = max(len(ids) for ids, _ in examples)
    if longest > cfg.max_tokens_per_micro_batch:
        raise ValueError(
            f"an example has {longest} tokens, more than max_tokens_per_micro_batch "
            f"({cfg.max_tokens_per_micro_batch}): raise max_tokens_per_micro_batch or lower max_length"
        )
    usable = [i for i, ex in enumerate(examples) if target_count(ex)]
    if not usable:
        raise ValueError(f"none of the {len(examples)} examples has a completion token left after truncation")
    adapters = (
        lora_adapters(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
        if cfg.finetune == "lora"
        else nullcontext()
    )
    par = parallel or Parallel(next(model.parameters()).device)
    if cfg.finetune == "lora" and par.strategy != "single":
        raise ValueError("finetune='lora' runs in one process (strategy='single'); DDP/FSDP train every weight")
    if cfg.gradient_checkpointing:
        _checkpointing(model, True)
    torch.manual_seed(cfg.seed)  # lora: the adapters' initialisation is seeded too
    try:
        with adapters:  # lora: adapters added here, merged into the weights on leaving
            loop = OptimizerLoop(model, tokenizer, examples, usable, cfg, par, state)
            stats = loop.run(progress, validation, on_validation)
    finally:
        if cfg.gradient_checkpointing:
            _checkpointing(model, False)
    model.eval()
    return stats
