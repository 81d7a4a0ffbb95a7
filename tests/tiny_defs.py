"""Tiny Definitions for tests that run Dagster in another process (daemon, webserver, browser), and the tiny
settings every end-to-end test shares.

Loaded by Dagster from ``tests/tiny_workspace.yaml``. When Dagster loads it, it reads
``RESTEM_TINY_BASE`` (a saved tiny base model: the ``memorized_base`` fixture for runs that must get
past ``training_set_not_empty``) and ``RESTEM_DATA_ROOT`` (the test's data root); the settings are the
end-to-end test's: seconds, not quality. Optional ``RESTEM_TINY_SAMPLES_PER_PROBLEM`` and
``RESTEM_TINY_SHARD_SIZE`` override N and the E-step shard size (the resume test makes several shards
that way). ``RESTEM_TEST_SEED`` (default 0) is the experiments' ``seed`` here and the fixtures'
pretraining seed in ``conftest.py``: set it to rerun the suite on other draws (it reaches the Dagster
processes the tests start through their environment).
Not covered: anything a user would deploy; see assets/definitions.py for that.
"""

import os

import dagster as dg

from assets.definitions import build_definitions
from resources import ExperimentResource, StorageResource, TrainerResource
from restem_pipeline.experiments import Experiment

ENV_SETTINGS = {"RESTEM_TINY_SAMPLES_PER_PROBLEM": "samples_per_problem", "RESTEM_TINY_SHARD_SIZE": "shard_size"}


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """An integer setting from the environment: ``default`` when unset or blank, else at least ``minimum``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {raw!r}")
    return int(raw)


TEST_SEED = env_int("RESTEM_TEST_SEED", 0)
# The end-to-end runs' settings (tests/test_e2e_dagster.py, the daemon, browser and automation tests):
# N samples per problem, the cap, the completion length and the M-step. conftest.py's ``memorized_base``
# proves its guarantee for exactly these.
TINY_EXPERIMENT = {"samples_per_problem": 4, "max_per_problem": 2, "max_new_tokens": 40, "eval_k": 2}
TINY_TRAINER = {"max_steps": 12, "batch_size": 8, "learning_rate": 2e-3}


def _env_overrides() -> dict:
    return {field: env_int(env, 1, minimum=1) for env, field in ENV_SETTINGS.items() if os.environ.get(env, "").strip()}


def tiny_resources() -> dict:
    settings = {**TINY_EXPERIMENT, **_env_overrides()}
    return {
        "storage": StorageResource(data_root=os.environ["RESTEM_DATA_ROOT"]),
        "experiment": ExperimentResource(
            base_model=os.environ["RESTEM_TINY_BASE"], eval_train_subset=8, seed=TEST_SEED, **settings
        ),
        "trainer": TrainerResource(**TINY_TRAINER),
    }


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions([Experiment("restem", iterations=2)], resources=tiny_resources())
