"""The Definitions root: every asset, check and resource of restem, composed in one place.

``RESTEM_ITERATIONS`` (default 3) sets how many EM iterations the graph unrolls; it is read when
Dagster loads the definitions, not at import; so is ``RESTEM_INIT_FROM`` (``base``, the default: every
M-step fine-tunes the base model, ReST-EM; ``previous``: iteration t fine-tunes checkpoint t-1, ReST),
which changes the checkpoints' dependencies in the graph. The ``distillation`` group (assets/distill.py) is in the
UI's definitions (``defs``) but opt-in elsewhere (``distill=True``; ``restem demo --distill``): its
teacher is a bigger model to pretrain, and tests and the demo run every asset they are given.
"""

import os

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.automation import build_automation
from assets.baselines import base_eval_report, sft_baseline, sft_eval_report
from assets.checks import build_distill_checks, build_iteration_checks
from assets.distill import distill_assets
from assets.ingest import base_model, problem_set
from assets.iteration import INIT_MODES, build_iteration
from assets.summary import build_summary
from resources import (
    ChecksResource,
    DistillResource,
    ExperimentResource,
    SamplerResource,
    StorageResource,
    TrainerResource,
)

DEFAULT_ITERATIONS = 3


def iterations_from_env() -> int:
    raw = os.environ.get("RESTEM_ITERATIONS", str(DEFAULT_ITERATIONS))
    if not raw.isdigit() or not 1 <= int(raw) <= 50:
        raise ValueError(f"RESTEM_ITERATIONS must be an integer in 1..50, got {raw!r}")
    return int(raw)


def init_from_env() -> str:
    raw = os.environ.get("RESTEM_INIT_FROM", "base")
    if raw not in INIT_MODES:
        raise ValueError(f"RESTEM_INIT_FROM must be one of {', '.join(INIT_MODES)}, got {raw!r}")
    return raw


def default_resources() -> dict:
    return {
        "storage": StorageResource(),
        "experiment": ExperimentResource(),
        "sampler": SamplerResource(),
        "trainer": TrainerResource(),
        "checks": ChecksResource(),
        "distill": DistillResource(),
        "duckdb": DuckDBResource(database=":memory:"),
    }


def all_assets(iterations: int, distill: bool = False, init_from: str | None = None) -> list:
    """Every asset; ``init_from`` (base | previous) defaults to ``RESTEM_INIT_FROM``."""
    mode = init_from or init_from_env()
    assets = [problem_set, base_model, base_eval_report, sft_baseline, sft_eval_report]
    for t in range(1, iterations + 1):
        assets += build_iteration(t, mode)
    if distill:
        assets += distill_assets()
    return [*assets, build_summary(iterations)]


def all_checks(iterations: int, distill: bool = False) -> list:
    checks = [c for t in range(1, iterations + 1) for c in build_iteration_checks(t)]
    return checks + (build_distill_checks() if distill else [])


def build_definitions(
    iterations: int | None = None, resources: dict | None = None, distill: bool = False, init_from: str | None = None
) -> dg.Definitions:
    n = iterations or iterations_from_env()
    mode = init_from or init_from_env()
    automation = build_automation(n)  # reads RESTEM_SCHEDULE_CRON and RESTEM_MIN_IMPROVEMENT
    return dg.Definitions(
        assets=all_assets(n, distill, mode),
        asset_checks=all_checks(n, distill),
        jobs=automation.jobs,
        sensors=automation.sensors,
        schedules=automation.schedules,
        resources={**default_resources(), **(resources or {})},
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(distill=True)
