"""Resumable M-step: a run killed with SIGKILL and run again ends where an uninterrupted run ends.

A real training process (``python -m restem_pipeline.training.worker``, or torchrun for FSDP) saves its
train state every few steps; the test waits until the state is past step k, kills the process (its
whole process group for torchrun) with SIGKILL, runs the same job again to completion and compares
with an uninterrupted run. Tolerances asserted: one process in fp32 on CPU, **bitwise** equal weights
and loss history; FSDP on 2 processes against one process with the global batch, the equivalence
tolerances of ``test_distributed`` (loss relative 1e-5 per step, weights 1e-5 absolute). A real tiny
Llama and BPE tokenizer; nothing is mocked.
"""

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from restem_pipeline.data import arith
from restem_pipeline.data.prompts import TEMPLATES
from restem_pipeline.generation.modeling import TinyLlamaSpec, tiny_llama, train_tokenizer
from restem_pipeline.training.distributed import REPO_ROOT, torchrun_command
from restem_pipeline.training.finetune import TrainConfig, tokenize_pairs
from restem_pipeline.training.state import state_dir_for
from restem_pipeline.training.worker import MODULE, MStepJob, run_job, stats_from_json

TPL = TEMPLATES["arith"]
SPEC = TinyLlamaSpec(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_positions=256)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pool = arith.pretraining_pool(5, (12, 8, 5, 3, 3))
    prompts = [TPL.render(q) for q, _ in pool]
    targets = [TPL.target(a) for _, a in pool]
    tok = train_tokenizer([p + t for p, t in zip(prompts, targets, strict=True)], 320)
    examples = tokenize_pairs(tok, prompts, targets, 256)
    init = tmp_path_factory.mktemp("resume") / "init"
    tiny_llama(SPEC, tok, seed=1).save_pretrained(init)
    tok.save_pretrained(init)
    return init, examples[:25], examples[25:]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One intra-op thread here and in the subprocesses: the same kernels on both sides of a comparison,
    and no spinning threads on a busy machine (a tiny model's steps take 20 ms, not 300)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(before)


def _weights(path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def _state_step(out) -> int:
    try:
        return json.loads((state_dir_for(out) / "meta.json").read_text())["step"]
    except (OSError, ValueError):
        return 0


def _kill_past(cmd: list[str], out, step: int, timeout: float = 300) -> int:
    """Start ``cmd`` in its own process group, SIGKILL the group once the train state is past ``step``."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while (reached := _state_step(out)) < step:
            if proc.poll() is not None:
                raise AssertionError(f"finished before step {step} was saved: {proc.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, "no train state in time"
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished
    assert not out.exists()  # no final checkpoint yet
    return reached


class Crash(Exception):
    pass


def _crash_at(step: int):
    def progress(done: int, total: int, loss: float) -> None:
        if done == step:
            raise Crash(f"crashed after step {done}")

    return progress


@pytest.mark.slow
def test_killed_process_resumes_to_bitwise_equal_weights(tiny, tmp_path):
    init, train, val = tiny
    cfg = TrainConfig(max_steps=150, batch_size=4, learning_rate=2e-3, dtype="float32", seed=0, eval_every=40)
    reference = run_job(MStepJob(str(init), str(tmp_path / "reference"), cfg, train, val))
    out = tmp_path / "resumed"
    job = MStepJob(str(init), str(out), cfg, train, val, checkpoint_every_steps=5)
    (tmp_path / "job.json").write_text(json.dumps(job.to_json()))
    cmd = [sys.executable, "-m", MODULE, str(tmp_path / "job.json"), "--stats", str(tmp_path / "stats.json")]
    reached = _kill_past(cmd, out, 10)
    assert 10 <= reached < 150
    done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from the train state at {state_dir_for(out)}" in done.stdout
    stats = stats_from_json(json.loads((tmp_path / "stats.json").read_text()))
    assert stats.resumed_from_step >= reached  # the kill may land after a later save
    assert stats.loss_history == reference.loss_history  # bitwise, every step (restored + continued)
    assert stats.val_loss_history == reference.val_loss_history
    assert (stats.steps, stats.examples, stats.tokens) == (150, reference.examples, reference.tokens)
    mine, theirs = _weights(out), _weights(tmp_path / "reference")
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert not state_dir_for(out).exists()  # removed after the final checkpoint
    assert not list(tmp_path.glob(".resumed.train_state*"))


def test_only_a_compatible_train_state_is_resumed(tiny, tmp_path):
    init, train, _ = tiny
    cfg = TrainConfig(max_steps=8, batch_size=4, learning_rate=2e-3, dtype="float32", seed=0)
    out = tmp_path / "ckpt"
    job = MStepJob(str(init), str(out), cfg, train, checkpoint_every_steps=2)
    with pytest.raises(Crash):
        run_job(job, progress=_crash_at(5))
    assert _state_step(out) == 4 and not out.exists()
    # the same state seen by jobs with another learning rate, or other data: not used
    for name, other_cfg, data in [
        ("lr", dataclasses.replace(cfg, learning_rate=1e-3), train),
        ("data", cfg, train[1:]),
    ]:
        other = MStepJob(str(init), str(tmp_path / name), other_cfg, data, checkpoint_every_steps=2)
        shutil.copytree(state_dir_for(out), state_dir_for(tmp_path / name))
        logs: list[str] = []
        assert run_job(other, log=logs.append).resumed_from_step == 0
        assert any("ignoring the train state" in line for line in logs)
        assert not state_dir_for(tmp_path / name).exists()
    # the same job resumes at step 4 and ends where a run never interrupted ends
    resumed = run_job(job)
    assert resumed.resumed_from_step == 4 and resumed.steps == 8
    fresh = run_job(MStepJob(str(init), str(tmp_path / "fresh"), cfg, train))
    assert resumed.loss_history == fresh.loss_history
    mine, theirs = _weights(out), _weights(tmp_path / "fresh")
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert not state_dir_for(out).exists()


@pytest.mark.slow
def test_killed_fsdp_run_resumes_under_torchrun(tiny, tmp_path):
    init, train, _ = tiny
    steps = 40

    def cfg(batch_size: int) -> TrainConfig:
        return TrainConfig(max_steps=steps, batch_size=batch_size, learning_rate=2e-3, dtype="float32", seed=0)

    reference = run_job(MStepJob(str(init), str(tmp_path / "reference"), cfg(8), train))
    out = tmp_path / "fsdp"
    job = MStepJob(str(init), str(out), cfg(4), train, strategy="fsdp", processes=2, checkpoint_every_steps=4)
    (tmp_path / "job.json").write_text(json.dumps(job.to_json()))
    reached = _kill_past(torchrun_command(2, MODULE, str(tmp_path / "job.json")), out, 8)
    assert 8 <= reached < steps
    logs: list[str] = []
    stats = run_job(job, log=logs.append)
    assert any("resuming from the train state" in line for line in logs)
    assert stats.resumed_from_step >= reached and stats.steps == steps
    for a, b in zip(stats.loss_history, reference.loss_history, strict=True):
        assert math.isclose(a, b, rel_tol=1e-5), (stats.loss_history, reference.loss_history)
    mine, theirs = _weights(out), _weights(tmp_path / "reference")
    assert max(float((mine[k] - theirs[k]).abs().max()) for k in theirs) < 1e-5
    assert not state_dir_for(out).exists()
