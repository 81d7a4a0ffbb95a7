"""The optimizer loop of ``training.train_causal_lm``: schedule, global batches, shards, train state.

One ``OptimizerLoop`` runs AdamW over the trainable parameters for the configured number of steps:
it draws each epoch's batches (``batch_size`` x processes examples: the *global* batch, in the same
order whatever the number of processes), hands this rank's shard to ``micro_steps.StepRunner``,
clips the global gradient norm, steps, records statistics, validates every ``eval_every`` steps and
saves a ``train_state.TrainState`` every ``checkpoint_every_steps``; on start it continues from a
compatible saved state. Under DDP/FSDP (``distributed``) the loss is normalised by the global batch's
target tokens (every rank knows the whole batch, so the count needs no communication) and the reported
loss is the all-reduced global mean.
Not covered: configuration checks, LoRA and gradient checkpointing set-up (``training``), launching
processes (``distributed``, ``train_worker``).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time

import torch

from restem_pipeline.batching import length_grouped_batches, shuffled_batches, target_count
from restem_pipeline.distributed import Parallel
from restem_pipeline.micro_steps import StepRunner
from restem_pipeline.training import TrainConfig, TrainStats, _layout, evaluate_loss, lr_at


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
        with _layout(model, cfg) as varlen:
            sync = par.step_sync(self.usable[0])
            stepper = StepRunner(self.train_model, examples, cfg.step_layout(), self.pad_id, varlen, sync)
            stats = TrainStats(
                dtype="bfloat16" if stepper.amp is not None else "float32",
                packing=cfg.packing,
                varlen_attention=varlen,
                skipped_examples=len(examples) - len(self.usable),
                finetune=cfg.finetune,
                trainable_parameters=sum(p.numel() for p in self.trainable),  # FSDP: DTensors, global sizes
                strategy=par.strategy,
                processes=par.world,
            )

            def validate(step: int) -> None:
                loss = evaluate_loss(model, validation, cfg, self.pad_id)  # every rank: FSDP gathers per layer
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
