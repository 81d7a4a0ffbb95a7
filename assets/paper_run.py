"""``restem experiment paper``: the paper's comparison set once per seed through Dagster, then one report.

``run_paper`` runs the seeds one after another (``run_demo``, one data root a seed), each drawing its own
problems (``data_seed = s``) while later seeds share the first seed's embedded base (or a given one), the
base's data seed (``base_data_seed``) keeping its pretraining pool and its seed's problems out of their
draws; it refuses a shared base or teacher whose pool a draw would not skip. It reuses a seed whose reports
are all stored (resumption is by seed: a half-done seed runs its assets again, reusing committed E-step
shards and saved train states), records the run's label and settings in ``paper_run.json``, then
materializes ``paper/report`` over every seed. ``paper_settings`` holds the command's defaults per model.
This module sits above the Definitions (it runs them); ``assets/paper.py`` defines the report asset and
the job.

Not covered: the report's statistics (``restem_pipeline/evaluation/paper.py``), the asset (``assets/paper.py``),
settings files and their git check (``assets/paper_settings.py``).
"""

import dataclasses
import json
from pathlib import Path

import dagster as dg
import polars as pl

from assets.common import REUSE_EVALUATIONS
from assets.demo import demo_settings, ensure_instance, run_demo
from assets.experiment import TEACHER_STAGE
from assets.ingest import EMBEDDED_SETS, subset
from assets.paper import (
    PAPER_RUN,
    RECORDS_WRITTEN,
    SEED_RECORD,
    build_paper_report,
    data_of,
    expected_reports,
    seed_record_from,
)
from resources import ExperimentResource, StorageResource
from restem_pipeline.data.problems import load_builtin
from restem_pipeline.evaluation import paper
from restem_pipeline.experiments import Experiment
from restem_pipeline.storage.tables import SHARED, DataRoot, write_text_atomic


def run_paper(
    problem_set: str,
    experiments: list[Experiment],
    seeds: list[int],
    paper_root: Path,
    overrides: dict,
    trainer: dict | None = None,
    distill: dict | None = None,
    reuse_base: bool = True,
    show_progress: bool = True,
    run_missing: bool = True,
    provenance: dict | None = None,
) -> dict:
    """Run ``experiments`` once per seed (data root ``paper_root/seed_<s>``), then the report over all seeds.

    Seed s draws its own problems (``data_seed = s``). With ``reuse_base`` (the embedded model) later seeds
    take the first seed's base model and teacher as given models, so one pretrained base serves every seed,
    as one pretrained PaLM 2 served the paper, and ``base_data_seed`` (the first seed, or the one given with
    ``--set base_model=PATH``) keeps that base's pretraining pool and its seed's problems out of their draws.
    A seed whose reports are all stored is not run again; with ``run_missing`` off (``--report-only``) a
    seed that is not complete is left out of the report instead of run. ``provenance`` (label, settings
    file and commit: ``paper_settings.py``) is written to ``paper_root/paper_run.json`` on the first call
    and must match on every later one, so a run keeps its label and settings across sessions.
    """
    exps = [e for e in experiments if e.name in paper.PAPER_EXPERIMENTS]
    first = DataRoot(paper_root / f"seed_{seeds[0]}")
    roots = {seed: DataRoot(paper_root / f"seed_{seed}") for seed in seeds}
    complete = {s for s, root in roots.items() if all(p.exists() for p in expected_reports(root, problem_set, exps))}
    if run_missing and complete != set(seeds):
        _check_shared_base(problem_set, exps, seeds, overrides, distill or {}, reuse_base)
    claim_paper_root(paper_root, provenance or {"label": "exploratory"}, write=run_missing)
    runs, settings, done = {}, {}, []
    for seed in seeds:
        root = roots[seed]
        settings = {**overrides, "seed": seed, "data_seed": seed}
        teacher = dict(distill or {})
        if reuse_base and seed != seeds[0]:
            # the first seed's models, unless given ones (--set base_model=PATH) serve every seed already
            if overrides.get("base_model", "embedded") == "embedded":
                settings["base_model"] = str(first.model_dir(problem_set, "base"))
                settings["base_data_seed"] = seeds[0]
            if teacher.get("teacher_model", "embedded") == "embedded" and any(e.distills for e in exps):
                teacher["teacher_model"] = str(first.of("distill").model_dir(problem_set, TEACHER_STAGE))
        data = data_of(ExperimentResource(**settings))
        if seed in complete:
            runs[seed] = {"reused": True}
            data = _recorded_data(root, problem_set)
        elif not run_missing:
            runs[seed] = {"reused": False, "skipped": "not every report is stored"}
            continue
        else:
            if reuse_base and seed != seeds[0]:
                _first_base_exists(first, problem_set, seeds[0], settings)
            _check_base_draw(problem_set, settings, teacher)
            stored = sum(p.exists() for p in expected_reports(root, problem_set, exps))
            if stored and show_progress:
                print(f"seed {seed}: {stored} reports stored, not all: its assets run again (committed E-step "
                      "shards and saved train states are reused)")  # fmt: skip
            # REUSE_EVALUATIONS: a seed cut short runs its assets again, but evaluations whose model, prompts
            # and settings are unchanged are taken from its stored reports
            out = run_demo(
                problem_set, exps, str(root.root), settings, show_progress=show_progress, trainer=trainer,
                distill=teacher or None, tags={"restem/paper_seed": str(seed), REUSE_EVALUATIONS: "true"},
            )  # fmt: skip
            runs[seed] = {"reused": False, "wall_seconds": out["wall_seconds"], "warnings": out["warnings"]}
        record = seed_record_from(root, problem_set, exps, seed, data)
        write_text_atomic(json.dumps(record, indent=2), root.report_path(problem_set, SEED_RECORD, ".json"))
        done.append(seed)
    if not done:
        raise SystemExit(f"no seed of {seeds} has every report stored under {paper_root}: run without --report-only")
    # the report over every seed, as a materialization of paper/report (in the UI), from the last seed's root
    last = DataRoot(paper_root / f"seed_{done[-1]}")
    dg.materialize(
        [build_paper_report(exps)],
        partition_key=problem_set,
        resources={"storage": StorageResource(data_root=str(last.root)), "experiment": ExperimentResource(**settings)},
        instance=ensure_instance(),
        tags={"restem/paper_seed": str(done[-1]), RECORDS_WRITTEN: "true"},
    )
    report = json.loads(last.report_path(problem_set, "paper", ".json").read_text())
    paths = {k: str(last.report_path(problem_set, "paper", f".{k}")) for k in ("md", "json", "png")}
    return {"report": report, "paths": paths, "runs": runs}


def _recorded_data(root: DataRoot, problem_set: str) -> dict:
    """A reused seed's data seeds as its stored record says ({} for a record from before they were recorded:
    those runs shared the first seed's problems, which today's settings would not say)."""
    path = root.report_path(problem_set, SEED_RECORD, ".json")
    record = json.loads(path.read_text()) if path.exists() else {}
    return {k: record[k] for k in ("data_seed", "base_data_seed", "test_ids_file") if k in record}


def claim_paper_root(paper_root: Path, provenance: dict, write: bool = True) -> None:
    """Record this run's label and settings in ``paper_root/paper_run.json`` (with ``write``), or check the
    recorded ones.

    A run keeps them across sessions: a call with another label, settings file or commit is refused (a
    changed confirmatory file is a new run: a new name). A confirmatory run starts in an empty folder.
    """
    path = paper_root / PAPER_RUN
    keys = ("label", "settings_file", "settings_commit")
    if path.exists():
        old = json.loads(path.read_text())
        if any(old.get(k) != provenance.get(k) for k in keys):
            was = ", ".join(f"{k} {old.get(k)!r}" for k in keys)
            now = ", ".join(f"{k} {provenance.get(k)!r}" for k in keys)
            raise SystemExit(f"{paper_root} holds a run with {was}; this one has {now}: give it another name")
        return
    if not write:
        return
    if provenance.get("label") == "confirmatory" and paper_root.exists() and any(paper_root.iterdir()):
        raise SystemExit(f"{paper_root} holds earlier results: a confirmatory run starts in a folder of its own")
    paper_root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(provenance, indent=2), path)


def _check_shared_base(
    problem_set: str, exps: list[Experiment], seeds: list[int], overrides: dict, distill: dict, reuse_base: bool
) -> None:
    """Refuse a shared embedded base (or teacher) whose pretraining pool a later seed's draw would not skip."""
    if not reuse_base or len(seeds) < 2:
        return
    given = overrides.get("base_model", "embedded") != "embedded"
    base_seed = overrides.get("base_data_seed")
    if base_seed is not None and not given:
        raise SystemExit(
            f"base_data_seed={base_seed} names the data seed of a given base model: set base_model=PATH too (the "
            f"base built with data seed {base_seed}); without it seed {seeds[0]} builds the base every seed shares"
        )
    if given and base_seed is None:
        raise SystemExit(
            f"base_model={overrides['base_model']} is shared by seeds {seeds}, each drawing its own problems: "
            "set base_data_seed=N too (the data seed it was built with), so their draws skip its pretraining pool"
        )
    teacher_built = distill.get("teacher_model", "embedded") == "embedded"
    if given and teacher_built and base_seed != seeds[0] and any(e.distills for e in exps):
        raise SystemExit(
            f"the distill experiment's teacher would be pretrained on data seed {seeds[0]}'s pool, which the draws "
            f"of seeds {seeds[1:]} do not skip (they skip data seed {base_seed}'s): give the teacher built with "
            f"data seed {base_seed} (--set distill.teacher_model=PATH)"
        )


def _check_base_draw(problem_set: str, settings: dict, teacher: dict) -> None:
    """A reused embedded base (or teacher) whose data root holds the problems it was built beside: they must be
    the ones ``base_data_seed`` draws at this run's sizes, else the draws would not skip its pool (refused)."""
    exp = ExperimentResource(**settings)
    seed = exp.excluded_data_seed
    if seed is None or problem_set not in EMBEDDED_SETS:
        return
    drawn = load_builtin(problem_set, seed, (exp.arith_train, exp.arith_validation, exp.arith_test)).problems
    redrawn = {p.prompt for p in subset(drawn, exp.max_train_problems, exp.max_eval_problems, seed)}
    built_here = ((SHARED, "base"), ("distill", TEACHER_STAGE))  # models/<set>/<experiment>/<stage> of a data root
    for model in (exp.base_model, teacher.get("teacher_model", "embedded")):
        path = Path(model).resolve()
        if not path.exists() or path.parts[-4:-2] != ("models", problem_set) or path.parts[-2:] not in built_here:
            continue
        table = DataRoot(path.parents[3]).table_path("problems", problem_set, "ingest")
        if not table.exists():
            continue
        stored = set(pl.read_parquet(table, columns=["prompt"])["prompt"])
        if stored != redrawn:
            raise SystemExit(
                f"the model at {path} was built beside {len(stored)} problems that data seed {seed} does not give at "
                f"this run's sizes ({len(stored ^ redrawn)} differ): set arith_train / arith_validation / arith_test "
                "and max_*_problems as its run did, or base_data_seed to the data seed it was built with"
            )


def _first_base_exists(first: DataRoot, problem_set: str, first_seed: int, settings: dict) -> None:
    """A later seed takes the first seed's base model; refuse clearly when it is not there.

    That happens when the first seed was run with a given model (``--set base_model=PATH``) and this
    call was not: the first seed's stored base report names the model it used.
    """
    path = settings.get("base_model")
    if not path or Path(path).exists() or not str(path).startswith(str(first.root)):
        return
    used, report = "", first.report_path(problem_set, "base", ".json")
    if report.exists():
        used = f" (its base report names {json.loads(report.read_text()).get('model')!r})"
    raise SystemExit(
        f"seed {first_seed}'s base model is not at {path}: seed {first_seed} was run with a given base "
        f"model{used}; pass the same --set base_model=PATH so every seed uses it"
    )


def with_iterations(experiments: list[Experiment], iterations: int | None, transfer: bool) -> list[Experiment]:
    """``iterations`` replacing every multi-iteration experiment's; transfer dropped when ``transfer`` is off."""
    out = []
    for e in experiments:
        e = dataclasses.replace(e, transfer=e.transfer if transfer else ())
        out.append(dataclasses.replace(e, iterations=iterations) if iterations and e.iterations > 1 else e)
    return out


# the demo's splits (200 validation / 400 test), so the base is the demo's: the base chosen on validation (its
# 58.0% validation pass@1 against 28.0% for the base pretrained beside 100 / 300 splits, the sweep before
# 2026-11-27; docs, "The paper's findings"); the trainer's and the teacher's rates are their resources' defaults
EMBEDDED_PAPER = {"eval_k": 4, "eval_train_subset": 100}
# --quick: the demo's tiny sizes, with a base pretrained long enough (400 steps, not 60), 64 training
# problems and N = 8, so that one eighth of them (8 problems x 8 samples) still yields correct samples
# to train on (at 60 and 200 steps it found none in one seed of two: the blocking check stopped the run)
EMBEDDED_PAPER_QUICK = {"pretrain_steps": 400, "arith_train": 64, "samples_per_problem": 8}
# the real-model part: the headline comparison (base, SFT, ReST-EM iterations) on arith with 3-shot chat
# prompts, sized for 2 CPU cores (about 31 minutes a seed); GSM8K is out of a 135M model's reach
# in a few samples (README "A real model")
REAL_MODEL_PAPER = {
    "arith_train": 120,
    "arith_validation": 40,
    "arith_test": 80,
    "max_train_problems": 120,
    "max_eval_problems": 80,
    "eval_train_subset": 20,
    "max_new_tokens": 128,
    "sft_epochs": 1.0,
}


def paper_settings(model: str, quick: bool) -> dict:
    """``restem experiment paper``'s defaults for ``model``: problem set, resource overrides, experiments, seeds."""
    s = demo_settings(model, quick)
    if model == "embedded":
        # K = 4 (the demo: 8) and the default teacher (2.2x the base's parameters); seed 0 builds the base
        # and the teacher, later seeds reuse them
        experiment = {**s["experiment"], **(EMBEDDED_PAPER_QUICK if quick else EMBEDDED_PAPER)}
        seeds, teacher = ([0, 1] if quick else [0, 1, 2]), {}
        return {**s, "experiment": experiment, "experiments": paper.PAPER_EXPERIMENTS, "seeds": seeds,
                "iterations": 2 if quick else None, "transfer": True, "distill": teacher}  # fmt: skip
    out = {**s, "experiments": ("restem",), "iterations": 2, "transfer": False, "seeds": [0, 1], "distill": {}}
    if not quick:  # at least 3 seeds for every model: with 2, t(0.975, 1) = 12.7 leaves nearly everything inconclusive
        out |= {"problem_set": "arith", "experiment": {**s["experiment"], **REAL_MODEL_PAPER}, "seeds": [0, 1, 2]}
    return out


def upsert_section(path: Path, marker: str, text: str) -> None:
    """Replace the section between ``<!-- marker -->`` and ``<!-- /marker -->`` in ``path`` (append if absent)."""
    begin, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    old = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    write_text_atomic(new, path)
