"""Tiny Definitions for tests that run Dagster in another process (daemon, webserver, browser).

Loaded by Dagster from ``tests/tiny_workspace.yaml``. When Dagster loads it, it reads
``RESTEM_TINY_BASE`` (a saved tiny base model, built by the ``tiny_base`` fixture) and
``RESTEM_DATA_ROOT`` (the test's data root); the settings are the end-to-end test's: seconds, not quality.
Optional ``RESTEM_TINY_SAMPLES_PER_PROBLEM`` and ``RESTEM_TINY_SHARD_SIZE`` override N and the E-step
shard size (the resume test makes several shards that way).
Not covered: anything a user would deploy; see assets/definitions.py for that.
"""

import os

import dagster as dg

from assets.definitions import build_definitions
from resources import ExperimentResource, StorageResource, TrainerResource
from restem_pipeline.experiments import Experiment

ENV_SETTINGS = {"RESTEM_TINY_SAMPLES_PER_PROBLEM": "samples_per_problem", "RESTEM_TINY_SHARD_SIZE": "shard_size"}


def _env_overrides() -> dict:
    out = {}
    for env, field in ENV_SETTINGS.items():
        if env in os.environ:
            if not os.environ[env].isdigit():
                raise ValueError(f"{env} must be a positive integer, got {os.environ[env]!r}")
            out[field] = int(os.environ[env])
    return out


def tiny_resources() -> dict:
    settings = {"samples_per_problem": 4, **_env_overrides()}
    return {
        "storage": StorageResource(data_root=os.environ["RESTEM_DATA_ROOT"]),
        "experiment": ExperimentResource(
            base_model=os.environ["RESTEM_TINY_BASE"],
            max_per_problem=2,
            max_new_tokens=40,
            eval_k=2,
            eval_train_subset=8,
            seed=0,
            **settings,
        ),
        "trainer": TrainerResource(max_steps=12, batch_size=8, learning_rate=2e-3),
    }


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions([Experiment("restem", iterations=2)], resources=tiny_resources())
