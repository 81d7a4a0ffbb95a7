"""Data-parallel training on torch.distributed: the rank-side strategies and the ``torchrun`` launcher.

``make_parallel(strategy, device)`` returns what the trainer's loop (``training``) asks of its
processes: ``Parallel`` (one process, no collectives: the single-process trainer, unchanged) or
``DataParallel`` for ``ddp`` (``DistributedDataParallel``: the whole model on every rank, gradients
all-reduced on each step's last backward) and ``fsdp`` (FSDP2, ``fully_shard`` on every decoder layer
and on the root: parameters, gradients and optimizer state sharded, all-gathered per forward). The
process group is ``gloo`` on CPU and ``nccl`` on CUDA, set up from torchrun's environment; the code is
the same either way. Each rank trains on a disjoint, token-balanced shard of every global batch
(``batching.rank_shards``); the loss is normalised by the *global* batch's target tokens, so the
gradient is the one a single process would compute on the whole batch. Full (unsharded) state dicts
are gathered on rank 0 for the Hugging Face checkpoint and the resumable train state.

``torchrun_command`` and ``stream_process`` start torchrun as a subprocess and forward its output line
by line: lines starting with ``@restem `` are JSON events (progress, validation), the rest is log text.
The command is ``python -m restem_pipeline.training.distributed ARGS``: ``torch.distributed.run.main(ARGS)``
after asking Linux to kill it when its parent dies (``die_with_parent``); the workers ask the same of
the torchrun agent. torchrun starts each worker in a session of its own, so without this a killed
launcher would leave its ranks training on, and writing the same checkpoint as the re-run.
Not covered: several nodes, tensor/pipeline parallelism, LoRA under DDP/FSDP, bf16 parameters in
FSDP (its ``MixedPrecisionPolicy``: the trainer's autocast is used instead, as on one process).
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from restem_pipeline.training.batching import Example, rank_shards
from restem_pipeline.training.micro_steps import StepSync

STRATEGIES = ("single", "ddp", "fsdp")
EVENT_PREFIX = "@restem "
REPO_ROOT = Path(__file__).resolve().parents[2]


class Parallel:
    """One process and no collectives: what the single-process trainer does."""

    strategy = "single"
    rank = 0
    world = 1

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model):
        """The module the training forwards go through (``model`` itself here)."""
        return model

    def step_sync(self, filler: int) -> StepSync | None:
        return None

    def shard(self, examples: list[Example], batch: list[int]) -> list[int]:
        return batch

    def all_sum(self, values: list[float]) -> list[float]:
        return values

    def gather(self, obj) -> list:
        """``obj`` of every rank, in rank order."""
        return [obj]

    def barrier(self) -> None:
        pass

    def clip_grad_norm(self, params: list[torch.nn.Parameter], max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    def model_state(self, model) -> dict | None:
        """The full state dict on rank 0 (None elsewhere)."""
        return model.state_dict()

    def train_state(self, model, opt) -> tuple[dict, dict] | None:
        """Full model and optimizer state dicts on rank 0 (None elsewhere)."""
        return model.state_dict(), opt.state_dict()

    def load_train_state(self, model, opt, model_sd: dict, optim_sd: dict) -> None:
        model.load_state_dict(model_sd)
        opt.load_state_dict(optim_sd)

    def close(self) -> None:
        pass


class DataParallel(Parallel):
    """One rank of a ``ddp`` or ``fsdp`` run started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK set)."""

    def __init__(self, strategy: str, device: str | torch.device = "cpu"):
        if strategy not in ("ddp", "fsdp"):
            raise ValueError(f"strategy must be 'ddp' or 'fsdp' for a distributed run, got {strategy!r}")
        if "WORLD_SIZE" not in os.environ:
            raise RuntimeError(f"strategy={strategy!r} runs under torchrun (python -m torch.distributed.run)")
        self.strategy = strategy
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.device(device).type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(f"device {device!r} asked for, but CUDA is not available")
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
            backend = "nccl"
        else:
            self.device = torch.device("cpu")
            backend = "gloo"
            if sys.platform.startswith("linux") and os.environ.get("MASTER_ADDR") == "127.0.0.1":
                # gloo picks its interface from the host name otherwise (same unreachable-address trap)
                os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        if not dist.is_initialized():
            dist.init_process_group(backend, device_id=self.device if backend == "nccl" else None)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self._ddp = None

    def wrap(self, model):
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            # buffers (rotary frequencies) are constant: no broadcast in every forward
            ids = [self.device.index] if self.device.type == "cuda" else None
            params = inspect.signature(DistributedDataParallel.__init__).parameters
            quiet = (
                {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
            )
            self._ddp = DistributedDataParallel(model, device_ids=ids, **quiet)
            return self._ddp
        from torch.distributed.fsdp import fully_shard

        blocks = set(getattr(model, "_no_split_modules", None) or ())
        for module in model.modules():
            if type(module).__name__ in blocks:
                fully_shard(module)
        fully_shard(model)  # embeddings, final norm, (tied) head
        return model

    def step_sync(self, filler: int) -> StepSync:
        return StepSync(self._agree, self._no_sync, filler)

    def _agree(self, n: int) -> int:
        t = torch.tensor([n], dtype=torch.long, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def _no_sync(self, last: bool):
        # DDP: all-reduce once, on the step's last backward. FSDP2 reduce-scatters every backward
        # (gradients stay sharded between micro-batches; every rank runs the same number of them).
        if self.strategy == "ddp" and not last and self._ddp is not None:
            return self._ddp.no_sync()
        return nullcontext()

    def shard(self, examples: list[Example], batch: list[int]) -> list[int]:
        return rank_shards(examples, batch, self.world)[self.rank]

    def all_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj) -> list:
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        dist.barrier()

    def clip_grad_norm(self, params: list[torch.nn.Parameter], max_norm: float) -> None:
        """``clip_grad_norm_`` over the global gradient (FSDP: the norm of the sharded DTensors, reduced)."""
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, 2.0)
        if hasattr(norm, "full_tensor"):  # a DTensor with a partial placement: sum over the shards
            norm = norm.full_tensor()
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)

    def _options(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=True)

    def model_state(self, model) -> dict | None:
        if self.strategy == "ddp":
            return model.state_dict() if self.is_main else None
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        sd = get_model_state_dict(model, options=self._options())  # a collective: every rank calls it
        return sd if self.is_main else None

    def train_state(self, model, opt) -> tuple[dict, dict] | None:
        if self.strategy == "ddp":
            return (model.state_dict(), opt.state_dict()) if self.is_main else None
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(model, opt, options=self._options())
        return (model_sd, optim_sd) if self.is_main else None

    def load_train_state(self, model, opt, model_sd: dict, optim_sd: dict) -> None:
        if self.strategy == "ddp":
            super().load_train_state(model, opt, model_sd, optim_sd)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(
            model, opt, model_state_dict=model_sd, optim_state_dict=optim_sd,
            options=StateDictOptions(full_state_dict=True),
        )  # fmt: skip

    def close(self) -> None:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def make_parallel(strategy: str, device: str = "cpu") -> Parallel:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy == "single":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("strategy='single' runs one process: use 'ddp' or 'fsdp' with several")
        return Parallel(device)
    return DataParallel(strategy, device)


def emit(event: str, **fields) -> None:
    """Print one event line for the launching process (rank 0 only calls it)."""
    print(EVENT_PREFIX + json.dumps({"event": event, **fields}), flush=True)


def die_with_parent() -> None:
    """Linux: have this process SIGKILLed when its parent exits (``PR_SET_PDEATHSIG``); elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent was gone before the request
        os._exit(1)


def torchrun_command(processes: int, module: str, *args: str) -> list[str]:
    """torchrun on this machine (a free rendezvous port) running ``-m module`` on ``processes`` ranks.

    The ranks meet on the loopback address: left to itself, torchrun publishes ``socket.getfqdn()`` as
    MASTER_ADDR, which on some hosts (containers, CI machines) names an address the ranks cannot reach,
    and they wait there until the rendezvous times out.
    """
    return [
        sys.executable, "-m", "restem_pipeline.training.distributed", "--standalone", "--local-addr=127.0.0.1",
        f"--nproc-per-node={processes}", "-m", module, *args,
    ]  # fmt: skip


def stream_process(
    cmd: list[str], on_line: Callable[[str], None], on_event: Callable[[dict], None], env: dict | None = None
) -> None:
    """Run ``cmd``, passing each output line (stdout and stderr) to ``on_line`` or, for events, ``on_event``.

    Raises ``RuntimeError`` with the last lines of output when it exits non-zero; the process is
    terminated (then killed) if the caller is interrupted while it runs.
    """
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    # unbuffered, so lines arrive as they are printed; no progress bars (transformers' loading bars)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "PYTHONPATH": path, **(env or {})}
    tail: deque[str] = deque(maxlen=30)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            if line.startswith(EVENT_PREFIX):
                on_event(json.loads(line[len(EVENT_PREFIX) :]))
            else:
                tail.append(line)
                on_line(line)
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited with status {rc}; its last output:\n" + "\n".join(tail))


if __name__ == "__main__":  # torchrun, tied to the process that started it
    die_with_parent()
    from torch.distributed.run import main

    main(sys.argv[1:])
