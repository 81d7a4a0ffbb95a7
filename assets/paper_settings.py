"""``restem experiment paper --settings FILE``: a planned run's settings, written down (and committed) first.

A settings file (``experiments/paper/<name>.yaml``) holds one run of the paper's comparison set: ``name``
(its folder under ``paper/``), ``label`` (``exploratory`` or ``confirmatory``), ``model``, ``problem_set``,
``seeds``, ``experiments`` and ``iterations`` (optional: the preset's), ``set`` (the ``--set`` items as a
mapping: ``base_model``, ``base_data_seed``, ``trainer.learning_rate``...), ``why`` (free text: what was
chosen on validation and where that is recorded) and, for a real data set, ``holdout`` (a held-out slice of
its test split: ``restem_pipeline/data/holdout.py``). ``load_paper_settings`` checks every field; an error
names the file and the field. A **confirmatory** file (and its slice) must be tracked by git and unmodified
(``committed_version``: the commit that last changed it, recorded in the report); a confirmatory run needs
at least 3 seeds, none of them the base's data seed, models that are on this machine (a model reused by
path, not a hub id whose revision can move), and for a real data set a held-out slice.

Not covered: running the seeds and the report's provenance (``assets/paper_run.py``, ``assets/paper.py``).
"""

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pydantic
import yaml

from restem_pipeline.data.holdout import Earlier, HoldoutSpec

LABELS = ("exploratory", "confirmatory")
REQUIRED = ("name", "label", "model", "problem_set", "seeds", "why")
OPTIONAL = ("experiments", "iterations", "set", "holdout")
HOLDOUT_FIELDS = ("set", "split", "seed", "size", "file", "earlier")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")
EMBEDDED_SETS = ("arith", "arith_ood", "code")  # drawn by seed here: fresh seeds are fresh problems
# what run_paper sets per seed, or the held-out slice sets: not a --set item of a settings file
RUN_OWNED = {"seed": "list the seeds in seeds", "data_seed": "each seed draws with its own (data_seed = seed)",
             "test_ids_file": "name the held-out slice under holdout"}  # fmt: skip


class SettingsError(ValueError):
    """A settings file that cannot run: the message names the file and the field."""


@dataclass(frozen=True)
class PaperSettings:
    path: Path
    name: str
    label: str
    model: str
    problem_set: str
    seeds: list[int]
    why: str
    experiments: list[str] | None = None
    iterations: int | None = None
    set: dict[str, object] = field(default_factory=dict)
    holdout: HoldoutSpec | None = None
    holdout_file: Path | None = None

    def set_items(self) -> list[str]:
        """``set`` as ``--set KEY=VALUE`` items (values as JSON), for ``assets/cli.py``'s ``apply_settings``."""
        return [f"{key}={json.dumps(value)}" for key, value in self.set.items()]


def load_paper_settings(path: str | Path) -> PaperSettings:
    """The settings file at ``path``, every field checked (``SettingsError`` naming the file and the field)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SettingsError(f"{path}: cannot read the settings: {err}") from None
    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: expected a mapping of field to value, got {type(raw).__name__}")
    for key in raw:
        if key not in REQUIRED + OPTIONAL:
            raise SettingsError(f"{path}: {key}: unknown field (fields: {', '.join(REQUIRED + OPTIONAL)})")
    for key in REQUIRED:
        if raw.get(key) is None:
            raise SettingsError(f"{path}: {key}: missing")

    def text(key: str) -> str:
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            raise SettingsError(f"{path}: {key}: expected a non-empty string, got {value!r:.60}")
        return value.strip()

    name, label, model, problem_set, why = (text(k) for k in ("name", "label", "model", "problem_set", "why"))
    if not NAME.fullmatch(name) or name.startswith("seed_"):
        raise SettingsError(f"{path}: name: {name!r} is not a folder name (letters, digits, '_', '.', '-'; not seed_*)")
    if label not in LABELS:
        raise SettingsError(f"{path}: label: expected one of {', '.join(LABELS)}, got {label!r}")
    seeds = _int_list(path, "seeds", raw["seeds"])
    if label == "confirmatory" and len(seeds) < 3:
        raise SettingsError(f"{path}: seeds: a confirmatory run needs at least 3 seeds, got {len(seeds)}")
    experiments = None
    if raw.get("experiments") is not None:
        experiments = _experiments(path, raw["experiments"])
    iterations = raw.get("iterations")
    if iterations is not None and (not _is_int(iterations) or iterations < 1):
        raise SettingsError(
            f"{path}: iterations: expected an integer >= 1 (or null: the experiments'), got {iterations!r}"
        )
    items = _set_items(path, raw.get("set") or {})
    base_seed = items.get("base_data_seed")
    if label == "confirmatory" and base_seed is not None and base_seed in seeds:
        raise SettingsError(
            f"{path}: seeds: {base_seed} is set.base_data_seed, whose problems earlier runs scored: "
            "a confirmatory run draws fresh ones"
        )
    holdout, holdout_file = None, None
    if raw.get("holdout") is not None:
        holdout, holdout_file = _holdout(path, raw["holdout"], problem_set)
        if label != "confirmatory":
            raise SettingsError(f"{path}: holdout: a held-out slice is scored once, by a confirmatory run")
    elif label == "confirmatory" and problem_set not in EMBEDDED_SETS:
        raise SettingsError(
            f"{path}: holdout: a confirmatory run on a real data set ({problem_set}) scores a held-out slice "
            "no earlier run touched: name one (restem_pipeline/data/holdout.py)"
        )
    return PaperSettings(path, name, label, model, problem_set, seeds, why, experiments, iterations, items,
                         holdout, holdout_file)  # fmt: skip


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_list(path: Path, key: str, value: object) -> list[int]:
    if not isinstance(value, list) or not value:
        raise SettingsError(f"{path}: {key}: expected a non-empty list of integers, got {value!r:.60}")
    for i, v in enumerate(value):
        if not _is_int(v) or v < 0:
            raise SettingsError(f"{path}: {key}[{i}]: expected an integer >= 0, got {v!r:.60}")
    if len(set(value)) != len(value):
        raise SettingsError(f"{path}: {key}: {value} lists a seed twice")
    return list(value)


def _experiments(path: Path, value: object) -> list[str]:
    from assets.definitions import experiments_from

    known = {e.name for e in experiments_from()}
    if not isinstance(value, list) or not value:
        raise SettingsError(f"{path}: experiments: expected a non-empty list of experiment names, got {value!r:.60}")
    for i, name in enumerate(value):
        if name not in known:
            raise SettingsError(f"{path}: experiments[{i}]: no experiment {name!r} (files: {', '.join(sorted(known))})")
    return list(value)


def _set_items(path: Path, raw: object) -> dict[str, object]:
    """``set``: each key a resource field (``FIELD`` or ``experiment.FIELD``, ``trainer.FIELD``,
    ``distill.FIELD``), the values valid together, checked by the resources' own validation."""
    from resources import DistillResource, ExperimentResource, TrainerResource

    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: set: expected a mapping of setting to value, got {type(raw).__name__}")
    classes = {"experiment": ExperimentResource, "trainer": TrainerResource, "distill": DistillResource}
    groups: dict[str, dict[str, object]] = {}
    for key, value in raw.items():
        target, _, name = str(key).rpartition(".")
        target = target or "experiment"
        if target not in classes:
            raise SettingsError(f"{path}: set.{key}: expected FIELD, trainer.FIELD or distill.FIELD")
        if name not in classes[target].model_fields:
            raise SettingsError(f"{path}: set.{key}: no such field of {classes[target].__name__}")
        if target == "experiment" and name in RUN_OWNED:
            raise SettingsError(f"{path}: set.{key}: set by the run, not here: {RUN_OWNED[name]}")
        groups.setdefault(target, {})[name] = value
    for target, fields in groups.items():
        try:
            classes[target](**fields)
        except pydantic.ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or next(iter(fields))
            prefix = "" if target == "experiment" else f"{target}."
            raise SettingsError(f"{path}: set.{prefix}{where}: {err['msg']}") from None
    return {str(k).removeprefix("experiment."): v for k, v in raw.items()}


def _holdout(path: Path, raw: object, problem_set: str) -> tuple[HoldoutSpec, Path]:
    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: holdout: expected a mapping ({', '.join(HOLDOUT_FIELDS)})")
    for key in raw:
        if key not in HOLDOUT_FIELDS:
            raise SettingsError(f"{path}: holdout.{key}: unknown field (fields: {', '.join(HOLDOUT_FIELDS)})")
    for key in HOLDOUT_FIELDS[:5]:
        if raw.get(key) is None:
            raise SettingsError(f"{path}: holdout.{key}: missing")
    if raw["set"] != problem_set:
        raise SettingsError(f"{path}: holdout.set: {raw['set']!r} is not the run's problem_set {problem_set!r}")
    if raw["split"] != "test":
        raise SettingsError(f"{path}: holdout.split: the held-out slice replaces the test split, got {raw['split']!r}")
    for key in ("seed", "size"):
        if not _is_int(raw[key]) or raw[key] < (1 if key == "size" else 0):
            raise SettingsError(f"{path}: holdout.{key}: expected an integer >= {int(key == 'size')}, got {raw[key]!r}")
    if not isinstance(raw["file"], str) or not raw["file"].strip():
        raise SettingsError(f"{path}: holdout.file: expected the slice's path, got {raw['file']!r}")
    earlier = []
    for i, e in enumerate(raw.get("earlier") or []):
        where = f"{path}: holdout.earlier[{i}]"
        if not isinstance(e, dict) or set(e) - {"kind", "seed", "size", "run"}:
            raise SettingsError(f"{where}: expected a mapping of kind, seed, size, run")
        try:
            earlier.append(Earlier(str(e.get("kind")), _int_field(where, e, "size"), _int_field(where, e, "seed"),
                                   str(e.get("run", ""))))  # fmt: skip
        except ValueError as err:
            raise SettingsError(f"{where}: {err}") from None
    spec = HoldoutSpec(problem_set, "test", raw["seed"], raw["size"], tuple(earlier))
    file = Path(raw["file"])
    return spec, file if file.is_absolute() else _repo_root(path) / file


def _int_field(where: str, raw: dict, key: str) -> int:
    value = raw.get(key, 0)
    if not _is_int(value):
        raise SettingsError(f"{where}.{key}: expected an integer, got {value!r}")
    return value


def _repo_root(path: Path) -> Path:
    """The git work tree holding ``path`` (the folder of ``path`` outside one): relative paths start there."""
    try:
        return Path(_git(path.resolve().parent, "rev-parse", "--show-toplevel"))
    except SettingsError:
        return path.resolve().parent


def _git(where: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SettingsError(f"git {' '.join(args)}: {err}") from None
    if out.returncode:
        raise SettingsError(f"git {' '.join(args)}: {out.stderr.strip() or out.returncode}")
    return out.stdout.strip()


def committed_version(path: str | Path) -> dict[str, str]:
    """``{"file": path in the repository, "commit": the commit that last changed it}`` for a file git tracks,
    unmodified; else ``SettingsError`` naming the file (a confirmatory run's settings are fixed before it runs)."""
    path = Path(path).resolve()
    try:
        top = Path(_git(path.parent, "rev-parse", "--show-toplevel"))
    except SettingsError:
        raise SettingsError(f"{path}: not in a git repository: a confirmatory file must be committed first") from None
    rel = path.relative_to(top).as_posix()
    tracked = subprocess.run(["git", "-C", str(top), "ls-files", "--error-unmatch", "--", rel], capture_output=True)
    if tracked.returncode:
        raise SettingsError(f"{rel}: not committed (git does not track it): commit it before a confirmatory run")
    status = _git(top, "status", "--porcelain", "--", rel)
    log = subprocess.run(["git", "-C", str(top), "log", "-1", "--format=%H", "--", rel], capture_output=True, text=True)
    commit = log.stdout.strip() if log.returncode == 0 else ""  # a repository without commits has no log
    if status or not commit:
        state = f"git status: {status!r}" if status else "never committed"
        raise SettingsError(f"{rel}: changed since its last commit ({state}): commit it before a confirmatory run")
    return {"file": rel, "commit": commit}


def code_version(path: str | Path) -> str | None:
    """The checkout's HEAD commit (recorded beside the settings), or None outside git."""
    where = Path(path).resolve()
    try:
        return _git(where if where.is_dir() else where.parent, "rev-parse", "HEAD")
    except SettingsError:
        return None


def provenance_of(settings: PaperSettings | None) -> dict:
    """What ``paper_run.json`` records: the label, the settings file and its commit, the code's commit.

    A confirmatory file must be committed and unmodified (``SettingsError`` otherwise), and so must its
    held-out slice, which must be the slice its recipe draws; the models it reuses must be on this machine.
    """
    if settings is None:
        return {
            "label": "exploratory",
            "settings_file": None,
            "settings_commit": None,
            "code_commit": code_version("."),
        }
    out = {"label": settings.label, "name": settings.name, "why": settings.why, "seeds": settings.seeds}
    if settings.label == "confirmatory":
        version = committed_version(settings.path)
        _models_here(settings)
        if settings.holdout is not None and settings.holdout_file is not None:
            check_holdout(settings)
            out["holdout"] = {**committed_version(settings.holdout_file), "size": settings.holdout.size}
    else:
        try:
            version = committed_version(settings.path)
        except SettingsError:
            version = {"file": str(settings.path), "commit": None}
    out |= {"settings_file": version["file"], "settings_commit": version["commit"]}
    return {**out, "code_commit": code_version(settings.path)}


def _models_here(settings: PaperSettings) -> None:
    """A confirmatory run's given models (a reused base or teacher) are local folders: a hub id can move."""
    from restem_pipeline.generation import named_models

    given = {"model": settings.model, "set.base_model": settings.set.get("base_model")}
    given["set.distill.teacher_model"] = settings.set.get("distill.teacher_model")
    for where, value in given.items():
        if value in (None, "embedded") or named_models.is_named(str(value)):
            continue
        if not Path(str(value)).is_dir():
            raise SettingsError(
                f"{settings.path}: {where}: no model folder at {value} (a confirmatory run reuses models built "
                "here, by path from where it runs; a hub id's revision can move)"
            )


def _split_problems(spec: HoldoutSpec) -> list:
    from restem_pipeline.data.problems import load_builtin

    return load_builtin(spec.problem_set, seed=0).problems  # a real set's test split is its file: any seed


def write_holdout(settings: PaperSettings) -> tuple[Path, int, int]:
    """Write the settings' held-out slice (its ``holdout.file``); returns (path, slice size, ids excluded).

    An existing file is left as it is when it holds the same slice, and refused when it holds another."""
    if settings.holdout is None or settings.holdout_file is None:
        raise SettingsError(f"{settings.path}: holdout: missing (nothing to write)")
    from restem_pipeline.data.holdout import holdout_ids, holdout_text

    problems = _split_problems(settings.holdout)
    ids, taken = holdout_ids(problems, settings.holdout)
    total = sum(p.split == settings.holdout.split for p in problems)
    made_by = f"restem experiment paper --settings {settings.path.name} --write-holdout"
    path = settings.holdout_file
    if path.exists():
        from restem_pipeline.data.holdout import read_holdout

        if read_holdout(path)[1] != ids:
            raise SettingsError(f"{path}: holds another slice than {settings.path} draws: remove it to write this one")
        return path, len(ids), len(taken)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(holdout_text(settings.holdout, ids, taken, total, made_by))
    return path, len(ids), len(taken)


def check_holdout(settings: PaperSettings) -> None:
    """The committed slice is the one its recipe draws (same set, split and ids), else ``SettingsError``."""
    from restem_pipeline.data.holdout import holdout_ids, read_holdout

    if settings.holdout is None or settings.holdout_file is None:
        raise SettingsError(f"{settings.path}: holdout: missing (no slice to check)")
    if not settings.holdout_file.exists():
        raise SettingsError(
            f"{settings.path}: holdout.file: no slice at {settings.holdout_file}: write it "
            f"(restem experiment paper --settings {settings.path} --write-holdout) and commit it"
        )
    header, ids = read_holdout(settings.holdout_file)
    want, _ = holdout_ids(_split_problems(settings.holdout), settings.holdout)
    if (header["set"], header["split"], ids) != (settings.holdout.problem_set, settings.holdout.split, want):
        raise SettingsError(f"{settings.holdout_file}: not the slice {settings.path}'s holdout draws")
