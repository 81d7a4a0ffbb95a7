"""Experiments as data: one YAML file per experiment, read and checked before anything is built.

A file ``experiments/<name>.yaml`` declares one variant of the loop::

    name: rest               # optional, default the file's stem: the asset-key prefix, the storage
                             # folder and the ``experiment`` column of every table
    description: ReST (Gulcehre et al.): each M-step continues from the previous checkpoint
    iterations: 3            # EM iterations unrolled in the graph (1..50)
    init_from: previous      # what each M-step fine-tunes: base (ReST-EM) | previous (checkpoint t-1)
    policy: previous         # who samples in each E-step: previous (the model of iteration t-1, the
                             # base for t = 1) | teacher (a teacher model: distillation)
    train_fraction: 1.0      # a seeded fraction of the training problems, in (0, 1]
    transfer: [gsm8k]        # problem sets every checkpoint is also evaluated on (their test split)
    settings:                # resource fields this experiment changes (the RESTEM_SETTINGS format):
      experiment: {samples_per_problem: 24}   # ExperimentResource (N, cap, temperature, seed, ...)
      trainer: {learning_rate: 1.0e-4}        # TrainerResource (fine-tuning)
      distill: {teacher_model: embedded}      # DistillResource (the teacher, with policy: teacher)
                             # (the sampler, checks and storage are the deployment's: RESTEM_SETTINGS)

``load_experiments(folder)`` reads every ``*.yaml`` there, checks each against this schema (the
``settings`` fields are checked by the caller, which knows the resources: ``validate_settings``) and
returns them sorted by name; any error names the file and the field and nothing is returned. Not
covered: the Dagster graph an experiment becomes (``assets/experiment.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

EXPERIMENTS_ENV = "RESTEM_EXPERIMENTS"
DEFAULT_EXPERIMENT = "restem"
INIT_MODES = ("base", "previous")
POLICIES = ("previous", "teacher")
MAX_ITERATIONS = 50
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # an asset-key part, a Dagster group/job name, a folder
RESERVED = {"shared", "baselines", "summary", "problem_set", "base_model"}
_FIELDS = {"name", "description", "iterations", "init_from", "policy", "train_fraction", "transfer", "settings"}


class ExperimentError(ValueError):
    """A malformed experiment file: names the file and the field."""

    def __init__(self, path: str | Path, where: str, message: str):
        self.path, self.where = str(path), where
        super().__init__(f"{path}: {where}: {message}")


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str = ""
    iterations: int = 3
    init_from: str = "base"
    policy: str = "previous"
    train_fraction: float = 1.0
    transfer: tuple[str, ...] = ()
    settings: dict[str, dict] = field(default_factory=dict, compare=False, hash=False)
    source: str = ""  # the file it came from

    @property
    def continues(self) -> bool:
        """ReST: iteration t fine-tunes checkpoint t-1 (t > 1) instead of the base model."""
        return self.init_from == "previous"

    @property
    def distills(self) -> bool:
        return self.policy == "teacher"

    def overrides(self, resource: str) -> dict:
        return dict(self.settings.get(resource, {}))


def default_folder() -> Path:
    """``$RESTEM_EXPERIMENTS``, else the ``experiments/`` folder shipped beside the package."""
    raw = os.environ.get(EXPERIMENTS_ENV, "").strip()
    return Path(raw) if raw else Path(__file__).resolve().parents[1] / "experiments"


def parse_experiment(path: str | Path, raw: object) -> Experiment:
    """One experiment from a file's parsed YAML; ``ExperimentError`` names the file and field."""
    path = Path(path)
    if not isinstance(raw, dict):
        raise ExperimentError(path, "(top level)", f"expected a mapping of fields, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ExperimentError(path, unknown[0], f"no such field (fields: {', '.join(sorted(_FIELDS))})")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ExperimentError(path, "name", f"must be lower-case letters, digits and '_' (a-z first), got {name!r}")
    if name in RESERVED:
        raise ExperimentError(path, "name", f"{name!r} is reserved ({', '.join(sorted(RESERVED))})")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ExperimentError(path, "description", "must be text")
    iterations = raw.get("iterations", 3)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or not 1 <= iterations <= MAX_ITERATIONS:
        raise ExperimentError(path, "iterations", f"must be an integer in 1..{MAX_ITERATIONS}, got {iterations!r}")
    init_from = raw.get("init_from", "base")
    if init_from not in INIT_MODES:
        raise ExperimentError(path, "init_from", f"must be one of {', '.join(INIT_MODES)}, got {init_from!r}")
    policy = raw.get("policy", "previous")
    if policy not in POLICIES:
        raise ExperimentError(path, "policy", f"must be one of {', '.join(POLICIES)}, got {policy!r}")
    fraction = raw.get("train_fraction", 1.0)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise ExperimentError(path, "train_fraction", f"must be a number in (0, 1], got {fraction!r}")
    transfer = raw.get("transfer", []) or []
    if not isinstance(transfer, list) or not all(isinstance(t, str) and t for t in transfer):
        raise ExperimentError(path, "transfer", "must be a list of problem-set names")
    settings = raw.get("settings", {}) or {}
    if not isinstance(settings, dict):
        raise ExperimentError(path, "settings", f"expected a mapping of resource to fields, got {settings!r}")
    for resource, fields in settings.items():
        if not isinstance(fields, dict):
            raise ExperimentError(path, f"settings.{resource}", f"expected a mapping of field to value, got {fields!r}")
    if policy == "teacher" and init_from == "previous":
        raise ExperimentError(path, "init_from", "distillation (policy: teacher) trains the base model: use base")
    return Experiment(
        name=name,
        description=description,
        iterations=iterations,
        init_from=init_from,
        policy=policy,
        train_fraction=float(fraction),
        transfer=tuple(transfer),
        settings={k: dict(v) for k, v in settings.items()},
        source=str(path),
    )


def load_experiments(
    folder: str | Path | None = None, validate_settings: Callable[[Path, dict], object] | None = None
) -> list[Experiment]:
    """Every ``*.yaml`` / ``*.yml`` in ``folder`` (default ``default_folder()``), sorted by name.

    ``validate_settings(path, settings)`` checks each file's ``settings`` (raising ``ValueError`` that
    names the file and field). All files are read and checked before any is returned: one bad file is
    an error, not a partial list. Two files with one name are an error.
    """
    folder = Path(folder) if folder else default_folder()
    if not folder.is_dir():
        raise ExperimentError(folder, "(folder)", f"no experiments folder (set {EXPERIMENTS_ENV})")
    found: dict[str, Experiment] = {}
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ExperimentError(path, "(file)", f"cannot read it as YAML: {e}") from None
        exp = parse_experiment(path, raw)
        if validate_settings is not None:
            validate_settings(path, exp.settings)
        if exp.name in found:
            raise ExperimentError(path, "name", f"{exp.name!r} is also the name in {found[exp.name].source}")
        found[exp.name] = exp
    if not found:
        raise ExperimentError(folder, "(folder)", "no experiment files (*.yaml)")
    return [found[k] for k in sorted(found)]


def train_subset(problem_ids: list[str], fraction: float, seed: int) -> set[str]:
    """A seeded ``fraction`` of ``problem_ids`` (at least one), the same for the same ids and seed."""
    import random

    ids = sorted(set(problem_ids))
    if fraction >= 1.0:
        return set(ids)
    keep = max(1, round(len(ids) * fraction))
    return set(random.Random(f"train_fraction:{seed}").sample(ids, keep))
