"""The Definitions root: every experiment's graph, the baselines, checks, automation and resources.

Experiments are data: each ``*.yaml`` in ``experiments/`` (or the folder ``$RESTEM_EXPERIMENTS``
names) becomes its own graph under its own asset-key prefix (``assets/experiment.py``), side by side in
one Definitions; a new file shows up in the UI on reload, and a malformed one is an error naming the
file and the field, with nothing loaded. ``RESTEM_SETTINGS`` names a YAML file of resource settings
(``experiment:``, ``trainer:``...) that replace the defaults, for a deployment whose code location and
runs must agree (deploy/docker passes it to both); an experiment's own ``settings`` apply on top.
"""

import os
from pathlib import Path

import dagster as dg
import pydantic
import yaml
from dagster_duckdb import DuckDBResource

from assets.automation import build_automation
from assets.baselines import base_eval_report, sft_baseline, sft_eval_report
from assets.checks import build_experiment_checks
from assets.experiment import build_experiment
from assets.ingest import base_model, problem_set
from assets.paper import build_paper_report, paper_experiments, paper_job
from assets.summary import build_summary
from resources import (
    ChecksResource,
    DistillResource,
    ExperimentResource,
    SamplerResource,
    StorageResource,
    TrainerResource,
)
from restem_pipeline.experiments import Experiment, ExperimentError, load_experiments

SETTINGS_ENV = "RESTEM_SETTINGS"
SETTABLE = {
    "storage": StorageResource,
    "experiment": ExperimentResource,
    "sampler": SamplerResource,
    "trainer": TrainerResource,
    "checks": ChecksResource,
    "distill": DistillResource,
}


# what an experiment may not change: the shared assets (problem set, base model, baselines) read them
SHARED_FIELDS = {
    "experiment": {
        "base_model", "data_seed", "base_data_seed", "test_ids_file", "prompt_style", "few_shot", "arith_train",
        "arith_validation", "arith_test", "max_train_problems", "max_eval_problems", "sft_epochs",
        "sft_learning_rate", "pretrain_steps", "pretrain_batch_size", "pretrain_pool_scale",
    },
    "storage": {"data_root"},
}  # fmt: skip


def check_settings(path: str | Path, raw: object, what: str = "") -> dict:
    """Resources from ``{resource: {field: value}}``; an unknown resource or field, or a bad value, raises
    ``ValueError`` naming the file and the field, and nothing is built half-way."""
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of resource name to settings, got {type(raw).__name__}")
    out = {}
    pre = f"{what}." if what else ""
    for name, fields in raw.items():
        if name not in SETTABLE:
            raise ValueError(f"{path}: {pre}{name}: unknown resource {name!r} (known: {', '.join(SETTABLE)})")
        if not isinstance(fields, dict):
            got = type(fields).__name__
            raise ValueError(f"{path}: {pre}{name}: expected a mapping of field to value, got {got}")
        cls = SETTABLE[name]
        unknown = sorted(set(fields) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"{path}: {pre}{name}.{unknown[0]}: no such field of {cls.__name__}")
        try:
            out[name] = cls(**fields)
        except pydantic.ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or "?"
            raise ValueError(f"{path}: {pre}{name}.{where}: {err['msg']}") from None
    return out


def settings_from_file(path: str | Path) -> dict:
    """Resources from a ``RESTEM_SETTINGS`` YAML file of ``{resource: {field: value}}``."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the settings: {e}") from None
    return check_settings(path, raw)


EXPERIMENT_SETTABLE = ("experiment", "trainer", "distill")  # the sampler, checks, storage: deployment-wide


def check_experiment_settings(path: Path, settings: dict) -> None:
    """An experiment's ``settings``: real resource fields with valid values, none of the shared ones."""
    for name in settings:
        if name in SETTABLE and name not in EXPERIMENT_SETTABLE:
            raise ExperimentError(
                path, f"settings.{name}", f"is set for the deployment (RESTEM_SETTINGS), not per experiment "
                f"(an experiment sets {', '.join(EXPERIMENT_SETTABLE)})",
            )  # fmt: skip
    check_settings(path, settings, "settings")
    for name, fields in settings.items():
        shared = sorted(set(fields) & SHARED_FIELDS.get(name, set()))
        if shared:
            raise ExperimentError(
                path, f"settings.{name}.{shared[0]}", "is shared by every experiment (set it in RESTEM_SETTINGS)"
            )


def experiments_from(folder: str | Path | None = None) -> list[Experiment]:
    """Every experiment file of ``folder`` (default ``$RESTEM_EXPERIMENTS`` or ``experiments/``), checked."""
    return load_experiments(folder, check_experiment_settings)


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


def all_assets(experiments: list[Experiment]) -> list:
    """The shared assets (problem set, base model, baselines) and every experiment's graph and summary."""
    assets = [problem_set, base_model, base_eval_report, sft_baseline, sft_eval_report]
    for exp in experiments:
        assets += [*build_experiment(exp), build_summary(exp)]
    return assets


def all_checks(experiments: list[Experiment]) -> list:
    return [c for exp in experiments for c in build_experiment_checks(exp)]


def build_definitions(experiments: list[Experiment] | None = None, resources: dict | None = None) -> dg.Definitions:
    """The whole graph of ``experiments`` (default: the experiment files, ``experiments_from()``)."""
    exps = experiments if experiments is not None else experiments_from()
    automation = build_automation(exps)  # reads RESTEM_SCHEDULE_CRON and RESTEM_MIN_IMPROVEMENT
    study = [build_paper_report(exps)] if paper_experiments(exps) else []  # the paper's comparison set
    return dg.Definitions(
        assets=[*all_assets(exps), *study],
        asset_checks=all_checks(exps),
        jobs=[*automation.jobs, *([paper_job(exps)] if study else [])],
        sensors=automation.sensors,
        schedules=automation.schedules,
        resources={**default_resources(), **(resources or {})},
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
