"""The Definitions root: every asset, check and resource of restem, composed in one place.

``RESTEM_ITERATIONS`` (default 3) sets how many EM iterations the graph unrolls; it is read when
Dagster loads the definitions, not at import.
"""

import os

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.baselines import base_eval_report, sft_baseline, sft_eval_report
from assets.checks import build_iteration_checks
from assets.ingest import base_model, problem_set
from assets.iteration import build_iteration
from resources import ExperimentResource, SamplerResource, StorageResource, TrainerResource

DEFAULT_ITERATIONS = 3


def iterations_from_env() -> int:
    raw = os.environ.get("RESTEM_ITERATIONS", str(DEFAULT_ITERATIONS))
    if not raw.isdigit() or not 1 <= int(raw) <= 50:
        raise ValueError(f"RESTEM_ITERATIONS must be an integer in 1..50, got {raw!r}")
    return int(raw)


def default_resources() -> dict:
    return {
        "storage": StorageResource(),
        "experiment": ExperimentResource(),
        "sampler": SamplerResource(),
        "trainer": TrainerResource(),
        "duckdb": DuckDBResource(database=":memory:"),
    }


def all_assets(iterations: int) -> list:
    assets = [problem_set, base_model, base_eval_report, sft_baseline, sft_eval_report]
    for t in range(1, iterations + 1):
        assets += build_iteration(t)
    return assets


def all_checks(iterations: int) -> list:
    return [c for t in range(1, iterations + 1) for c in build_iteration_checks(t)]


def build_definitions(iterations: int | None = None, resources: dict | None = None) -> dg.Definitions:
    n = iterations or iterations_from_env()
    return dg.Definitions(
        assets=all_assets(n), asset_checks=all_checks(n), resources={**default_resources(), **(resources or {})}
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
