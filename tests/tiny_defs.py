"""Tiny Definitions for tests that run Dagster in another process (daemon, webserver, browser).

Loaded by Dagster from ``tests/tiny_workspace.yaml``. When Dagster loads it, it reads
``RESTEM_TINY_BASE`` (a saved tiny base model, built by the ``tiny_base`` fixture) and
``RESTEM_DATA_ROOT`` (the test's data root); the settings are the end-to-end test's: seconds, not quality.
Not covered: anything a user would deploy; see assets/definitions.py for that.
"""

import os

import dagster as dg

from assets.definitions import build_definitions
from resources import ExperimentResource, StorageResource, TrainerResource


def tiny_resources() -> dict:
    return {
        "storage": StorageResource(data_root=os.environ["RESTEM_DATA_ROOT"]),
        "experiment": ExperimentResource(
            base_model=os.environ["RESTEM_TINY_BASE"],
            samples_per_problem=4,
            max_per_problem=2,
            max_new_tokens=40,
            eval_k=2,
            eval_train_subset=8,
            seed=0,
        ),
        "trainer": TrainerResource(max_steps=12, batch_size=8, learning_rate=2e-3),
    }


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(iterations=2, resources=tiny_resources())
