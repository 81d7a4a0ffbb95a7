"""Shared fixtures: a tiny base model built once per session, and paths to the real data sets."""

from pathlib import Path

import pytest

from restem_pipeline import arith
from restem_pipeline.modeling import TinyLlamaSpec
from restem_pipeline.stages import BaseModelConfig, build_base_model
from restem_pipeline.training import TrainConfig

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
