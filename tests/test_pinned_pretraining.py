"""The embedded base is the same model whatever the machine: pinned pretraining (restem_pipeline/pretrain.py).

Each run pretrains a small embedded base in a child process and hashes its weights (sha256 over every
tensor's bytes, in name order). Pinned: the same hash at 1 and 2 threads and on an emulated AVX2-only
machine (MKL and oneDNN limited to AVX2: what a machine without AVX-512 runs). Not covered: ARM, CUDA.
"""

import hashlib
from pathlib import Path

import pytest
from safetensors.torch import load_file

from restem_pipeline.generation.modeling import TinyLlamaSpec
from restem_pipeline.pretrain import build_base_model_pinned
from restem_pipeline.stages import BaseModelConfig
from restem_pipeline.training.finetune import TrainConfig

pytestmark = pytest.mark.slow

CFG = BaseModelConfig(
    spec=TinyLlamaSpec(),
    pretrain=TrainConfig(max_steps=25, batch_size=64, learning_rate=3e-3, seed=0, packing=False, dtype="float32"),
    pool_per_level=(300, 300, 150, 80, 80),
    seed=0,
)
AVX2_ONLY_MACHINE = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _weights_hash(path: Path) -> str:
    w = load_file(path / "model.safetensors")
    return hashlib.sha256(b"".join(w[k].contiguous().numpy().tobytes() for k in sorted(w))).hexdigest()


def test_pinned_pretraining_is_the_same_model_at_any_thread_count_and_instruction_set(tmp_path):
    seen, steps = {}, []
    for name, threads, env in [("2 threads", 2, None), ("1 thread", 1, None), ("AVX2-only", 2, AVX2_ONLY_MACHINE)]:
        out = tmp_path / name.replace(" ", "_")
        stats = build_base_model_pinned(out, set(), CFG, lambda *a: steps.append(a), threads=threads, extra_env=env)
        assert stats["steps"] == 25 and stats["final_loss"] < stats["first_loss"]
        assert f"{threads} thread" in stats["pinned_kernels"]
        seen[name] = _weights_hash(out)
    assert len(set(seen.values())) == 1, seen
    assert len(steps) == 3 * 25 and steps[-1][:2] == (25, 25)  # the child's progress reached the caller


def test_a_failing_child_raises_with_its_output(tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    small = BaseModelConfig(spec=TinyLlamaSpec(), pretrain=TrainConfig(max_steps=1, batch_size=8), pool_per_level=(40,))
    with pytest.raises(RuntimeError, match=r"(?s)pinned pretraining .* failed \(exit 1\).*a_file"):
        build_base_model_pinned(tmp_path / "a_file" / "m", set(), small)
