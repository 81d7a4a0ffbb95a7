"""The M-step on several processes: DDP and FSDP2 under a real ``torchrun`` (gloo, CPU) match one process.

2 processes x ``batch_size`` b train on the same global batches, in the same order, as 1 process x 2b
(the single-process trainer, in this process); the loss is normalised by the global batch's target
tokens, so per-rank shards of unequal token counts (and an empty shard: the data end on a batch of
one example) change nothing but the order of float sums. Asserted: the loss and validation-loss
trajectories agree within a relative 1e-5 per step in fp32 (measured: about 1e-7), both checkpoints
load with ``AutoModelForCausalLM.from_pretrained`` with the same keys and shapes, weights within
1e-5 absolute (measured: about 6e-7). The one process takes the loss in chunks over the output layer
(``chunked_loss``, the default); DDP takes it from the full logits and FSDP2 in chunks too (the output
layer's weight used outside the module's forward, unsharded), so the same numbers also show that the
chunked loss and its gradient are exact under both. A real tiny Llama and BPE tokenizer; nothing is mocked.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import torch
from transformers import AutoModelForCausalLM

from restem_pipeline.data import arith
from restem_pipeline.data.prompts import TEMPLATES
from restem_pipeline.experiments import Experiment
from restem_pipeline.generation.modeling import TinyLlamaSpec, tiny_llama, train_tokenizer
from restem_pipeline.training.batching import rank_shards
from restem_pipeline.training.finetune import TrainConfig, tokenize_pairs
from restem_pipeline.training.state import state_dir_for
from restem_pipeline.training.worker import MStepJob, run_job

TPL = TEMPLATES["arith"]
SPEC = TinyLlamaSpec(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_positions=256)
REL = 1e-5  # per-step relative tolerance on the loss (fp32)
ATOL = 1e-5  # on every weight of the final checkpoint
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved tiny Llama + tokenizer, 25 training and 6 validation examples of varied lengths."""
    pool = arith.pretraining_pool(3, (12, 8, 5, 3, 3))
    prompts = [TPL.render(q) for q, _ in pool]
    targets = [TPL.target(a) for _, a in pool]
    tok = train_tokenizer([p + t for p, t in zip(prompts, targets, strict=True)], 320)
    examples = tokenize_pairs(tok, prompts, targets, 256)
    init = tmp_path_factory.mktemp("mstep") / "init"
    tiny_llama(SPEC, tok, seed=1).save_pretrained(init)
    tok.save_pretrained(init)
    return init, examples[:25], examples[25:]


def _config(batch_size: int, checkpointing: bool = False, loss: str = "auto") -> TrainConfig:
    # 25 examples, global batch 8: batches of 8, 8, 8, 1 (one rank's shard empty), then a new epoch
    return TrainConfig(
        max_steps=6, batch_size=batch_size, learning_rate=2e-3, dtype="float32", seed=0, grad_accum_steps=2,
        eval_every=3, gradient_checkpointing=checkpointing, loss=loss,
    )  # fmt: skip


@pytest.fixture(scope="module")
def one_process(tiny, tmp_path_factory):
    init, train, val = tiny
    out = tmp_path_factory.mktemp("single") / "ckpt"
    stats = run_job(MStepJob(str(init), str(out), _config(8), train, val))
    return out, stats


def _weights(path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def test_rank_shards_are_disjoint_token_balanced_and_deterministic():
    examples = [([0] * n, 1) for n in (50, 10, 40, 30, 20, 5, 45)]
    batch = [6, 0, 3, 1, 5, 2, 4]
    shards = rank_shards(examples, batch, 3)
    assert sorted(i for s in shards for i in s) == sorted(batch)  # disjoint, and all of it
    # longest first, each to the lightest: 50 | 45 | 40, then 30 -> rank 2, 20 -> 1, 10 -> 0, 5 -> 0
    assert shards == [[0, 1, 5], [6, 4], [3, 2]]  # each in the batch's order
    assert [sum(len(examples[i][0]) for i in s) for s in shards] == [65, 65, 70]
    assert rank_shards(examples, [2], 2) == [[2], []]  # fewer examples than ranks: an empty shard


@pytest.mark.slow
@pytest.mark.parametrize("strategy,loss", [("ddp", "full"), ("fsdp", "chunked")])
def test_two_processes_match_one_process_with_the_global_batch(tiny, one_process, tmp_path, strategy, loss):
    """FSDP also recomputes activations (gradient checkpointing), which must not change the numbers."""
    init, train, val = tiny
    ref_out, ref = one_process
    out = tmp_path / strategy
    lines: list[str] = []
    progress: list[tuple[int, int, float]] = []
    cfg = _config(4, strategy == "fsdp", loss)
    stats = run_job(
        MStepJob(str(init), str(out), cfg, train, val, strategy=strategy, processes=2),
        log=lines.append,
        progress=lambda step, total, loss: progress.append((step, total, loss)),
    )
    assert ref.kernels == "attention=varlen loss=chunked compile=off"
    assert stats.kernels == f"attention=varlen loss={loss} compile=off"
    assert (stats.strategy, stats.processes, stats.steps) == (strategy, 2, 6)
    assert [p[:2] for p in progress] == [(s, 6) for s in range(1, 7)]  # streamed from the subprocess
    assert [p[2] for p in progress] == stats.loss_history
    assert any("torchrun" in line for line in lines)
    assert len(stats.loss_history) == len(ref.loss_history) == 6
    for a, b in zip(stats.loss_history, ref.loss_history, strict=True):
        assert math.isclose(a, b, rel_tol=REL), (stats.loss_history, ref.loss_history)
    assert [s for s, _ in stats.val_loss_history] == [s for s, _ in ref.val_loss_history] == [3, 6]
    for (_, a), (_, b) in zip(stats.val_loss_history, ref.val_loss_history, strict=True):
        assert math.isclose(a, b, rel_tol=REL)
    # the same examples and tokens, counted over both ranks (padding micro-batches not counted)
    assert (stats.examples, stats.target_tokens, stats.tokens) == (ref.examples, ref.target_tokens, ref.tokens)
    assert stats.examples == 8 + 8 + 8 + 1 + 8 + 8
    assert stats.trainable_parameters == ref.trainable_parameters  # FSDP: counted whole, not per shard
    mine, theirs = _weights(out), _weights(ref_out)
    assert {k: v.shape for k, v in mine.items()} == {k: v.shape for k, v in theirs.items()}
    assert max(float((mine[k] - theirs[k]).abs().max()) for k in mine) < ATOL
    assert max(float((mine[k] - _weights(init)[k]).abs().max()) for k in mine) > 1e-3  # it did train
    assert AutoModelForCausalLM.from_pretrained(out).config.architectures == ["LlamaForCausalLM"]
    assert not state_dir_for(out).exists()


@pytest.mark.slow
def test_checkpoint_asset_trains_under_torchrun_with_a_train_state(tmp_path, tiny_problems):
    """The Dagster path: iter_1/checkpoint with strategy='ddp', 2 processes, against strategy='single'.

    The base is a randomly initialised tiny Llama (the M-step does not need a pretrained one).
    """
    from assets.definitions import build_definitions
    from resources import ExperimentResource, StorageResource, TrainerResource
    from restem_pipeline.stages import human_solution_rows, problems_frame
    from restem_pipeline.storage import tables as storage

    tiny_base = tmp_path / "base"
    tok = train_tokenizer([p.prompt + " " + (p.solution or "") for p in tiny_problems], 320)
    tiny_llama(SPEC, tok, seed=1).save_pretrained(tiny_base)
    tok.save_pretrained(tiny_base)
    common = {"max_steps": 4, "learning_rate": 2e-3, "dtype": "float32", "validation_fraction": 0.2}
    outputs = {}
    for name, trainer in {
        "single": TrainerResource(batch_size=8, **common),
        "ddp": TrainerResource(batch_size=4, strategy="ddp", processes=2, checkpoint_every_steps=2, **common),
    }.items():
        defs = build_definitions(
            [Experiment("restem", iterations=1)],
            resources={
                "storage": StorageResource(data_root=str(tmp_path / name)),
                "experiment": ExperimentResource(base_model=str(tiny_base), seed=0),
                "trainer": trainer,
            },
        )
        root = storage.DataRoot(tmp_path / name)
        root.write_table(problems_frame(tiny_problems), "problems", "tiny", "ingest")
        root.of("restem").write_table(human_solution_rows(tiny_problems), "training_set", "tiny", "iter_1")
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("problem_set", ["tiny"])
        job = defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            instance=instance, partition_key="tiny", asset_selection=[dg.AssetKey(["restem", "iter_1", "checkpoint"])]
        )
        assert result.success
        (event,) = result.get_asset_materialization_events()
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
        outputs[name] = (root.of("restem").model_dir("tiny", "iter_1"), meta, logs)
    (single, single_meta, _), (ddp, ddp_meta, ddp_logs) = outputs["single"], outputs["ddp"]
    assert (ddp_meta["strategy"], ddp_meta["processes"], ddp_meta["steps"]) == ("ddp", 2, 4)
    assert (single_meta["strategy"], single_meta["processes"]) == ("single", 1)
    assert ddp_meta["resumed_from_step"] == 0
    assert any("fine-tuning iter_1: 4/4" in m for m in ddp_logs)  # progress streamed into the run's log
    assert any("torchrun" in m for m in ddp_logs)
    assert math.isclose(ddp_meta["final_loss"], single_meta["final_loss"], rel_tol=REL)
    assert math.isclose(ddp_meta["val_loss"], single_meta["val_loss"], rel_tol=REL)
    a, b = _weights(ddp), _weights(single)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < ATOL
    assert not state_dir_for(ddp).exists()  # removed once the checkpoint was saved


def test_trainer_resource_strategy_settings():
    from resources import TrainerResource

    res = TrainerResource(strategy="fsdp", processes=4, gradient_checkpointing=True, checkpoint_every_steps=50)
    assert res.uses_worker and res.train_config(seed=0).gradient_checkpointing is True
    assert not TrainerResource().uses_worker and TrainerResource().train_config(seed=0).gradient_checkpointing is False
    assert TrainerResource(checkpoint_every_steps=10).uses_worker  # one process, resumable: a worker job
    for bad, match in [
        ({"processes": 2}, "processes=2 needs strategy 'ddp' or 'fsdp'"),
        ({"processes": 0}, "processes must be >= 1, got 0"),
        ({"checkpoint_every_steps": -1}, "checkpoint_every_steps must be >= 0, got -1"),
        ({"strategy": "ddp", "finetune": "lora"}, "finetune='lora' runs with strategy='single', not 'ddp'"),
        ({"strategy": "tp"}, "strategy"),
    ]:
        with pytest.raises(Exception, match=match):
            TrainerResource(**bad)


def _script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_mstep_check.py"), *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_gpu_check_imports_no_dagster_or_polars_and_exits_with_a_message_without_cuda():
    """One interpreter with dagster, polars and duckdb made unimportable and no GPU visible."""
    code = (
        "import sys, runpy; sys.modules.update(dagster=None, polars=None, duckdb=None); "
        "sys.argv = ['gpu_mstep_check.py']; runpy.run_path('scripts/gpu_mstep_check.py', run_name='__main__')"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env)
    assert done.returncode == 2, done.stderr[-2000:]  # sys.exit(2), not an ImportError (status 1)
    assert "CUDA is not available" in done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "ok": False,
        "error": "CUDA is not available: this check trains on GPUs with NCCL (use --cpu-smoke for gloo on CPU)",
    }


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_every_strategy_on_gloo(tmp_path):
    done = _script("--cpu-smoke", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ok"] is True and report["processes"] == 2
    rows = {r["strategy"]: r for r in report["results"]}
    assert set(rows) == {"single", "ddp", "fsdp"}
    assert [rows[s]["processes"] for s in ("single", "ddp", "fsdp")] == [1, 2, 2]
    for r in rows.values():
        assert r["steps"] == 2 and r["tokens"] == rows["single"]["tokens"] and r["tokens_per_s"] > 0
        assert math.isclose(r["final_loss"], rows["single"]["final_loss"], rel_tol=REL)
    assert rows["ddp"]["max_weight_diff_vs_single"] < ATOL and rows["fsdp"]["max_weight_diff_vs_single"] < ATOL
    assert "tiny        fsdp" in done.stdout  # the table
