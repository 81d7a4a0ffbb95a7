"""``paper/report`` and the ``paper`` job: the paper's comparison set over seeds, one report with verdicts.

The comparison set is the shipped experiment files ``restem_pipeline.evaluation.paper.PAPER_EXPERIMENTS``
(ReST-EM with transfer to the held-out set, ReST, one iteration with 3x samples, distillation, the
data-fraction sweep) beside the shared base model and SFT baseline. **A seed is a data root**: the run
for seed s sets ``ExperimentResource(seed=s, data_seed=<first seed>)`` (the method's randomness varies,
the problems and the base model do not) and stores under ``<root>/seed_<s>``. ``paper/report`` writes
this root's seed record (``reports/<set>/shared/paper_seed.json``), then reads the records of every
``seed_*`` root beside it and writes the report over all of them (``paper.{md,json,png}``, and its table,
findings and plot as metadata). ``run_paper`` (``restem experiment paper``) runs the seeds one after
another through Dagster, reusing a seed whose reports are all stored.

Not covered: the statistics and verdicts (``restem_pipeline/evaluation/paper.py``).
"""

import dataclasses
import json
import re
from pathlib import Path

import dagster as dg

from assets.experiment import TEACHER_STAGE, transfer_stage
from assets.partitions import problem_sets
from assets.reports import inline_png, stored_report
from assets.summary import collect_reports, label_of, run_stages, stage_roots, summary_key
from resources import ExperimentResource, StorageResource
from restem_pipeline.evaluation import paper, plots
from restem_pipeline.experiments import Experiment
from restem_pipeline.storage.tables import DataRoot, write_text_atomic

REPORT_KEY = dg.AssetKey(["paper", "report"])
SEED_RECORD = "paper_seed"
_SEED_DIR = re.compile(r"^seed_(\d+)$")


def paper_experiments(experiments: list[Experiment]) -> list[Experiment]:
    """The comparison set's experiments among ``experiments``, in the paper's order."""
    by_name = {e.name: e for e in experiments}
    return [by_name[n] for n in paper.PAPER_EXPERIMENTS if n in by_name]


def expected_reports(root: DataRoot, problem_set: str, experiments: list[Experiment]) -> list[Path]:
    """Every report file a complete run of ``experiments`` stores under ``root``."""
    paths = []
    for exp in experiments:
        for stage, where in stage_roots(root.of(exp.name), run_stages(exp)).items():
            paths.append(where.report_path(problem_set, stage, ".json"))
        for target in exp.transfer:
            for t in range(exp.iterations + 1):
                paths.append(root.of(exp.name).report_path(problem_set, transfer_stage(t, target), ".json"))
    return paths


def seed_record_from(root: DataRoot, problem_set: str, experiments: list[Experiment], seed: int) -> dict:
    """This root's seed record: every stored model's metrics (base and SFT once; transfer on the first target)."""
    models: dict[str, dict[str, float]] = {}
    k = None
    for exp in experiments:
        target = exp.transfer[0] if exp.transfer else None
        where_of = stage_roots(root.of(exp.name), run_stages(exp))
        for stage, report in collect_reports(where_of, problem_set).items():
            label = label_of(exp, stage, where_of[stage])
            t = 0 if stage == "base" else int(stage.removeprefix("iter_")) if stage.startswith("iter_") else None
            transfer = None
            if target is not None and t is not None:
                transfer = stored_report(root.of(exp.name), problem_set, transfer_stage(t, target))
            metrics = paper.model_metrics(report, transfer)
            models[label] = {**models.get(label, {}), **metrics}
            k = k or int(report["eval_config"]["k"])
    if k is None:
        raise ValueError(f"no evaluation report of {problem_set!r} under {root.root / 'reports'}")
    meta = {e.name: {"iterations": e.iterations, "train_fraction": e.train_fraction, "init_from": e.init_from,
                     "policy": e.policy, "transfer": list(e.transfer)} for e in experiments}  # fmt: skip
    return paper.seed_record(seed, k, models, meta)


def seed_roots(root: Path) -> list[Path]:
    """The ``seed_*`` roots beside ``root`` (``root`` alone when it is not a seed root)."""
    if not _SEED_DIR.match(root.name):
        return [root]
    return sorted((p for p in root.parent.iterdir() if _SEED_DIR.match(p.name)), key=lambda p: int(p.name[5:]))


def collect_seed_records(root: Path, problem_set: str) -> list[dict]:
    records = []
    for seed_root in seed_roots(root):
        path = DataRoot(seed_root).report_path(problem_set, SEED_RECORD, ".json")
        if path.exists():
            records.append(json.loads(path.read_text()))
    return records


def write_paper_report(root: Path, problem_set: str, title: str) -> tuple[dict, dict[str, Path], bytes]:
    """The report over every seed record beside ``root``, written to ``root``'s shared reports."""
    report = paper.paper_report(collect_seed_records(root, problem_set))
    out = DataRoot(root)
    md = paper.report_markdown(report, title)
    png = plots.png_bytes(paper.paper_figure(report))
    paths = {kind: out.report_path(problem_set, "paper", f".{kind}") for kind in ("md", "json", "png")}
    write_text_atomic(md + "\n![paper](paper.png)\n", paths["md"])
    write_text_atomic(json.dumps(report, indent=2), paths["json"])
    plots.write_bytes_atomic(png, paths["png"])
    return report, paths, png


def build_paper_report(experiments: list[Experiment]) -> dg.AssetsDefinition:
    """``paper/report``: this seed's record and the report over every seed stored beside this data root."""
    exps = paper_experiments(experiments)

    @dg.asset(
        key=REPORT_KEY,
        deps=[summary_key(e.name) for e in exps],
        group_name="paper",
        partitions_def=problem_sets,
        kinds={"polars", "matplotlib"},
        description="The paper's findings over seeds: mean ± sd per model and metric, and per finding "
        "reproduced / not reproduced / inconclusive (a seed is a data root seed_<s>; see assets/paper.py).",
    )
    def paper_report(
        context: dg.AssetExecutionContext, storage: StorageResource, experiment: ExperimentResource
    ) -> dg.MaterializeResult:
        name = context.partition_key
        root = storage.root()
        record = seed_record_from(root, name, exps, experiment.seed)
        write_text_atomic(json.dumps(record, indent=2), root.report_path(name, SEED_RECORD, ".json"))
        model = root.root.parent.name if _SEED_DIR.match(root.root.name) else experiment.base_model
        report, paths, png = write_paper_report(root.root, name, f"{name}: the paper's findings, {model}")
        context.log.info(f"paper report over seeds {report['seeds']}: {report['counts']}")
        verdicts = {f"finding/{f['key']}": f["verdict"] for f in report["findings"]}
        return dg.MaterializeResult(
            metadata={
                "report": dg.MetadataValue.md(paths["md"].read_text().rsplit("![paper]", 1)[0]),
                "plots": dg.MetadataValue.md(inline_png("paper", png)),
                "seeds": dg.MetadataValue.json(report["seeds"]),
                **{f"count/{k}": v for k, v in report["counts"].items()},
                **verdicts,
                "paper_md": dg.MetadataValue.path(str(paths["md"])),
                "paper_json": dg.MetadataValue.path(str(paths["json"])),
            }
        )

    return paper_report


def paper_job(experiments: list[Experiment]):
    """The whole comparison set for one partition and one seed (set ``experiment.seed``, ``storage.data_root``)."""
    groups = [g for e in paper_experiments(experiments) for g in _groups(e)]
    return dg.define_asset_job(
        "paper",
        selection=dg.AssetSelection.groups("inputs", "baselines", *groups, "paper"),
        description="The paper's comparison set (base, SFT, ReST-EM, ReST, 3x samples, distillation, data "
        "fractions, transfer) for one seed, then paper/report over every seed_* data root beside this one. "
        "Materialize problem_set for the transfer set's partition (arith_ood) first.",
    )


def _groups(exp: Experiment) -> list[str]:
    teacher = [f"{exp.name}_teacher"] if exp.distills else []
    return [*teacher, *(f"{exp.name}_iter_{t}" for t in range(1, exp.iterations + 1)), f"{exp.name}_summary"]


# --- restem experiment paper ---------------------------------------------------------------------


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
) -> dict:
    """Run ``experiments`` once per seed (data root ``paper_root/seed_<s>``), then the report over all seeds.

    A seed whose reports are all stored is not run again; with ``run_missing`` off (``--report-only``) a
    seed that is not complete is left out of the report instead of run. With ``reuse_base`` (the embedded model) later
    seeds take the first seed's base model and teacher as given models, so one pretrained base serves
    every seed, as one pretrained PaLM 2 served the paper.
    """
    from assets.demo import ensure_instance, run_demo

    exps = [e for e in experiments if e.name in paper.PAPER_EXPERIMENTS]
    first = DataRoot(paper_root / f"seed_{seeds[0]}")
    runs, settings, done = {}, {}, []
    for seed in seeds:
        root = DataRoot(paper_root / f"seed_{seed}")
        settings = {**overrides, "seed": seed, "data_seed": seeds[0]}
        teacher = dict(distill or {})
        if reuse_base and seed != seeds[0]:
            # the first seed's models, unless given ones (--set base_model=PATH) serve every seed already
            if overrides.get("base_model", "embedded") == "embedded":
                settings["base_model"] = str(first.model_dir(problem_set, "base"))
            if teacher.get("teacher_model", "embedded") == "embedded":
                teacher["teacher_model"] = str(first.of("distill").model_dir(problem_set, TEACHER_STAGE))
        if all(p.exists() for p in expected_reports(root, problem_set, exps)):
            runs[seed] = {"reused": True}
        elif not run_missing:
            runs[seed] = {"reused": False, "skipped": "not every report is stored"}
            continue
        else:
            if reuse_base and seed != seeds[0]:
                _first_base_exists(first, problem_set, seeds[0], settings)
            out = run_demo(
                problem_set, exps, str(root.root), settings, show_progress=show_progress, trainer=trainer,
                distill=teacher or None, tags={"restem/paper_seed": str(seed)},
            )  # fmt: skip
            runs[seed] = {"reused": False, "wall_seconds": out["wall_seconds"], "warnings": out["warnings"]}
        record = seed_record_from(root, problem_set, exps, seed)
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
        tags={"restem/paper_seed": str(done[-1])},
    )
    report = json.loads(last.report_path(problem_set, "paper", ".json").read_text())
    paths = {k: str(last.report_path(problem_set, "paper", f".{k}")) for k in ("md", "json", "png")}
    return {"report": report, "paths": paths, "runs": runs}


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


EMBEDDED_PAPER = {"eval_k": 4, "arith_validation": 100, "arith_test": 300, "eval_train_subset": 100}
# --quick: the demo's tiny sizes, with a base pretrained long enough (400 steps, not 60), 64 training
# problems and N = 8, so that one eighth of them (8 problems x 8 samples) still yields correct samples
# to train on (at 60 and 200 steps it found none in one seed of two: the blocking check stopped the run)
EMBEDDED_PAPER_QUICK = {"pretrain_steps": 400, "arith_train": 64, "samples_per_problem": 8}
TEACHER_PAPER = {"teacher_hidden_size": 192, "teacher_layers": 4, "teacher_intermediate_size": 768}
# the real-model part: the headline comparison (base, SFT, ReST-EM iterations) on arith with 3-shot chat
# prompts, sized for 2 CPU cores (about 25 minutes a seed alone); GSM8K is out of a 135M model's reach
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
    from assets.demo import demo_settings

    s = demo_settings(model, quick)
    if model == "embedded":
        # sized to fit 3 seeds in about 90 minutes on 2 cores: K = 4, 100 validation / 300 test problems
        # (the demo: 8, 200 / 400), and a teacher with 2.2x the base's parameters (hidden 192: the default
        # 256 x 6 layers costs 6x the base per pretraining step); seed 0 builds it, later seeds reuse it
        experiment = {**s["experiment"], **(EMBEDDED_PAPER_QUICK if quick else EMBEDDED_PAPER)}
        seeds, teacher = ([0, 1] if quick else [0, 1, 2]), TEACHER_PAPER
        return {**s, "experiment": experiment, "experiments": paper.PAPER_EXPERIMENTS, "seeds": seeds,
                "iterations": 2 if quick else None, "transfer": True, "distill": teacher}  # fmt: skip
    out = {**s, "experiments": ("restem",), "iterations": 2, "transfer": False, "seeds": [0, 1], "distill": {}}
    if not quick:
        out |= {"problem_set": "arith", "experiment": {**s["experiment"], **REAL_MODEL_PAPER}}
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
