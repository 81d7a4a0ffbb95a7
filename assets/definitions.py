"""The Definitions root: every asset, check and resource of restem, composed in one place.

``RESTEM_ITERATIONS`` (default 3) sets how many EM iterations the graph unrolls; it is read when
Dagster loads the definitions, not at import; so is ``RESTEM_INIT_FROM`` (``base``, the default: every
M-step fine-tunes the base model, ReST-EM; ``previous``: iteration t fine-tunes checkpoint t-1, ReST),
which changes the checkpoints' dependencies in the graph. ``RESTEM_SETTINGS`` names a YAML file of
resource settings (``experiment:``, ``trainer:``...) that replace the defaults, for a deployment whose
code location and runs must agree (deploy/docker passes it to both). The ``distillation`` group
(assets/distill.py) is in the
UI's definitions (``defs``) but opt-in elsewhere (``distill=True``; ``restem demo --distill``): its
teacher is a bigger model to pretrain, and tests and the demo run every asset they are given.
"""

import os
from pathlib import Path

import dagster as dg
import pydantic
import yaml
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


SETTINGS_ENV = "RESTEM_SETTINGS"
SETTABLE = {
    "storage": StorageResource,
    "experiment": ExperimentResource,
    "sampler": SamplerResource,
    "trainer": TrainerResource,
    "checks": ChecksResource,
    "distill": DistillResource,
}


def settings_from_file(path: str | Path) -> dict:
    """Resources from a YAML file of ``{resource: {field: value}}`` (e.g. ``experiment: {samples_per_problem:
    4}``); an unknown resource or field, or a bad value, raises ``ValueError`` naming the file and field,
    and nothing is built half-way."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the settings: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of resource name to settings, got {type(raw).__name__}")
    out = {}
    for name, fields in raw.items():
        if name not in SETTABLE:
            raise ValueError(f"{path}: unknown resource {name!r} (known: {', '.join(SETTABLE)})")
        if not isinstance(fields, dict):
            raise ValueError(f"{path}: {name}: expected a mapping of field to value, got {type(fields).__name__}")
        cls = SETTABLE[name]
        unknown = sorted(set(fields) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"{path}: {name}.{unknown[0]}: no such field of {cls.__name__}")
        try:
            out[name] = cls(**fields)
        except pydantic.ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or "?"
            raise ValueError(f"{path}: {name}.{where}: {err['msg']}") from None
    return out


def default_resources() -> dict:
    """Every resource with its defaults, overridden by the file ``$RESTEM_SETTINGS`` names (if set)."""
    resources = {
        "storage": StorageResource(),
        "experiment": ExperimentResource(),
        "sampler": SamplerResource(),
        "trainer": TrainerResource(),
        "checks": ChecksResource(),
        "distill": DistillResource(),
        "duckdb": DuckDBResource(database=":memory:"),
    }
    if os.environ.get(SETTINGS_ENV):
        resources.update(settings_from_file(os.environ[SETTINGS_ENV]))
    return resources


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
