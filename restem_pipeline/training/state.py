"""Resumable training: a periodic train state beside the output checkpoint, and when to trust it.

``TrainState`` writes, every ``every`` optimizer steps, a directory ``<out>.train_state/`` next to the
output checkpoint ``<out>`` (one per stage, so iterations of a problem set never share one), atomically
(``atomic.write_dir``: a kill leaves the previous state whole). It holds everything the loop needs to
continue as if never stopped:

- ``meta.json``: format, config hash, step reached, total steps;
- ``model.pt``, ``optimizer.pt``: full (unsharded) state dicts, gathered on rank 0 under FSDP;
- ``progress.pt``: the batch order's RNG state and the rest of the current epoch's batches (the data
  position), the statistics so far (loss and validation history, examples, time), and per rank the
  torch CPU/CUDA RNG states, token counters and micro-batch budget.

On start, a state whose ``config_hash`` equals this run's is loaded and training continues at the
step after it; any other state is ignored (and replaced by the first save). The hash covers what
decides the trajectory: every ``TrainConfig`` field, the training and validation examples' token
ids, the initial checkpoint (each file's name, size and mtime: a rebuilt base model changes it), the
strategy and the number of processes. Not in it: the device and ``checkpoint_every_steps``. After
the final checkpoint is saved, ``clear`` removes the state.
Not covered: resuming with a different number of processes or strategy (a new run starts), states
on a filesystem the ranks do not share.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from restem_pipeline.storage.atomic import write_dir
from restem_pipeline.training.batching import Example

FORMAT = 1
SUFFIX = ".train_state"


def state_dir_for(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    return out.parent / f"{out.name}{SUFFIX}"


def _digest_examples(h, examples: list[Example] | None) -> None:
    for ids, prompt_len in examples or []:
        h.update(json.dumps([prompt_len, ids], separators=(",", ":")).encode())
        h.update(b"\n")
    h.update(b"|")


def checkpoint_fingerprint(path: str | Path) -> list:
    """(name, size, mtime_ns) of each file of a local checkpoint directory; the name alone otherwise."""
    p = Path(path)
    if not p.is_dir():
        return [str(path)]
    files = sorted(f for f in p.rglob("*") if f.is_file())
    return [str(p.resolve())] + [[str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def config_hash(
    cfg,
    examples: list[Example],
    validation: list[Example] | None,
    init_from: str | Path,
    strategy: str,
    processes: int,
) -> str:
    h = hashlib.sha256()
    fields = dataclasses.asdict(cfg)
    fields["lora_targets"] = list(fields["lora_targets"])
    head = {"format": FORMAT, "config": fields, "init": checkpoint_fingerprint(init_from)}
    head |= {"strategy": strategy, "processes": processes}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    _digest_examples(h, examples)
    _digest_examples(h, validation)
    return h.hexdigest()


@dataclass
class Resumed:
    """What the loop continues from."""

    step: int
    python_rng: tuple
    batches: list[list[int]]
    stats: dict
    rank: dict  # this rank's: torch_rng, cuda_rng, totals, budget, oom_splits


def _rng_state(device: torch.device) -> dict:
    state = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


class TrainState:
    """The train state of one output checkpoint; ``every`` = 0 never saves (but ``clear`` still clears)."""

    def __init__(self, out_dir: str | Path, every: int, config_hash: str, log=print):
        if every < 0:
            raise ValueError(f"checkpoint_every_steps must be >= 0, got {every}")
        self.dir, self.every, self.hash, self.log = state_dir_for(out_dir), every, config_hash, log

    def due(self, step: int, total: int) -> bool:
        return bool(self.every) and step % self.every == 0 and step < total

    def save(self, step: int, total: int, model, opt, rng: random.Random, batches, stats, rank: dict, par) -> None:
        """Write the state after ``step`` steps; every rank calls it (FSDP gathers; rank 0 writes)."""
        ranks = par.gather({**rank, **_rng_state(par.device)})
        states = par.train_state(model, opt)
        if par.is_main:
            model_sd, optim_sd = states
            meta = {"format": FORMAT, "config_hash": self.hash, "step": step, "total": total}
            progress = {"python_rng": rng.getstate(), "batches": batches, "stats": stats, "ranks": ranks}

            def write(tmp: Path) -> None:
                torch.save(model_sd, tmp / "model.pt")
                torch.save(optim_sd, tmp / "optimizer.pt")
                torch.save(progress, tmp / "progress.pt")
                (tmp / "meta.json").write_text(json.dumps(meta))

            write_dir(self.dir, write)
        par.barrier()

    def meta(self) -> dict | None:
        olds = sorted(self.dir.parent.glob(f".{self.dir.name}.old-*"))
        if olds and not self.dir.exists():  # killed between write_dir's two renames: the old state is whole
            with contextlib.suppress(OSError):  # another rank put it back first
                os.replace(olds[-1], self.dir)
        try:
            return json.loads((self.dir / "meta.json").read_text())
        except (OSError, ValueError):
            return None

    def load(self, model, opt, par) -> Resumed | None:
        """Restore model, optimizer and RNGs from a compatible state; None when there is none."""
        meta = self.meta()
        if meta is None:
            return None
        if meta.get("format") != FORMAT or meta.get("config_hash") != self.hash:
            if par.is_main:
                self.log(f"ignoring the train state at {self.dir}: made by another configuration or data")
            return None
        model_sd = torch.load(self.dir / "model.pt", map_location="cpu", weights_only=True)
        optim_sd = torch.load(self.dir / "optimizer.pt", map_location="cpu", weights_only=True)
        progress = torch.load(self.dir / "progress.pt", weights_only=True)
        par.load_train_state(model, opt, model_sd, optim_sd)
        rank = progress["ranks"][par.rank]
        torch.set_rng_state(rank["torch_rng"])
        if "cuda_rng" in rank and par.device.type == "cuda":
            torch.cuda.set_rng_state(rank["cuda_rng"], par.device)
        rng = progress["python_rng"]
        python_rng = (rng[0], tuple(rng[1]), rng[2])
        if par.is_main:
            self.log(f"resuming from the train state at {self.dir}: step {meta['step']} of {meta['total']}")
        return Resumed(meta["step"], python_rng, [list(b) for b in progress["batches"]], progress["stats"], rank)

    def clear(self) -> None:
        """Remove the state (and what an interrupted ``write_dir`` of it left beside it)."""
        for path in [self.dir, *self.dir.parent.glob(f".{self.dir.name}.*")]:
            shutil.rmtree(path, ignore_errors=True)
