"""``paper/report`` and the ``paper`` job: the paper's comparison set over seeds, one report with verdicts.

The comparison set is the shipped experiment files ``restem_pipeline.evaluation.paper.PAPER_EXPERIMENTS``
(ReST-EM with transfer to the held-out set, ReST, one iteration with 3x samples, distillation, the
data-fraction sweep) beside the shared base model and SFT baseline. **A seed is a data root**: the run
for seed s sets ``ExperimentResource(seed=s, data_seed=s)`` (its own problems and the method's randomness;
later seeds share the first seed's base, ``base_data_seed`` keeping its pool out of their draws) and
stores under ``<root>/seed_<s>``. ``paper/report`` writes this root's seed record
(``reports/<set>/shared/paper_seed.json``: metrics, data seeds), then reads the records of every
``seed_*`` root beside it and writes the report over all of them (``paper.{md,json,png}``, and its table,
findings and plot as metadata), labelled exploratory or confirmatory from the run's ``paper_run.json``
beside the seed roots (its settings file and commit: ``assets/paper_run.py``).

Not covered: the statistics and verdicts (``restem_pipeline/evaluation/paper.py``); running the seeds
(``restem experiment paper``: ``assets/paper_run.py``).
"""

import json
import re
from pathlib import Path

import dagster as dg

from assets.experiment import transfer_stage
from assets.partitions import problem_sets
from assets.reports import inline_png, stored_report
from assets.summary import collect_reports, label_of, run_stages, stage_roots, summary_key
from resources import ExperimentResource, StorageResource
from restem_pipeline.evaluation import paper, plots
from restem_pipeline.experiments import Experiment
from restem_pipeline.storage.tables import DataRoot, write_text_atomic

REPORT_KEY = dg.AssetKey(["paper", "report"])
SEED_RECORD = "paper_seed"
PAPER_RUN = "paper_run.json"  # beside the seed roots: the run's label, settings file and commit
RECORDS_WRITTEN = "restem/paper_records_written"  # a run tag: the seed records are stored, report only
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


def data_of(experiment: ExperimentResource) -> dict:
    """Which problems a seed scored: its data seed, the base's data seed its draw skipped, the held-out slice."""
    return {
        "data_seed": experiment.problems_seed,
        "base_data_seed": experiment.excluded_data_seed,
        "test_ids_file": experiment.test_ids_file or None,
    }


def seed_record_from(
    root: DataRoot, problem_set: str, experiments: list[Experiment], seed: int, data: dict | None = None
) -> dict:
    """This root's seed record: every stored model's metrics (base and SFT once; transfer on the first target),
    and ``data`` (``data_of``: which problems it scored)."""
    models: dict[str, dict[str, float]] = {}
    k, test_problems = None, 0
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
            if stage == "base":
                test_problems = int(report["metrics"].get("test/scored_problems") or 0)
    if k is None:
        raise ValueError(f"no evaluation report of {problem_set!r} under {root.root / 'reports'}")
    meta = {e.name: {"iterations": e.iterations, "train_fraction": e.train_fraction, "init_from": e.init_from,
                     "policy": e.policy, "transfer": list(e.transfer)} for e in experiments}  # fmt: skip
    return {**paper.seed_record(seed, k, models, meta, test_problems), **(data or {})}


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


def run_provenance(root: Path) -> dict:
    """The run's ``paper_run.json`` beside the seed roots (``{"label": "exploratory"}`` where there is none)."""
    path = root.parent / PAPER_RUN if _SEED_DIR.match(root.name) else root / PAPER_RUN
    return json.loads(path.read_text()) if path.exists() else {"label": "exploratory"}


def provenance_line(report: dict) -> str:
    """What the report is evidence of: its label, settings file and commit, and which problems each seed drew."""
    label, settings = report["label"], report.get("settings") or {}
    if settings.get("file"):
        where = f"settings `{settings['file']}` at commit `{(settings.get('commit') or '?')[:12]}`"
        head = f"**{label.capitalize()}** run: {where}."
        if label == "confirmatory":
            head = head[:-1] + (
                ", committed before the run: settings chosen on validation beforehand, test problems no earlier "
                "run scored."
            )
    else:
        head = f"**{label.capitalize()}** run: no settings file (settings may have been chosen on these results)."
    data = report.get("data") or []
    seeds = sorted({d["data_seed"] for d in data if d.get("data_seed") is not None})
    if not seeds:
        return head
    skipped = sorted({d["base_data_seed"] for d in data if d.get("base_data_seed") is not None})
    draws = f" Problems: data seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    draws += " (each seed its own draw, so the interval covers the draw of the test set too)" if len(seeds) > 1 else ""
    if skipped:
        draws += f"; every problem of data seed {', '.join(map(str, skipped))} and its base's pretraining pool skipped"
    slices = sorted({d["test_ids_file"] for d in data if d.get("test_ids_file")})
    if slices:
        draws += f"; test split: the held-out slice {', '.join(f'`{Path(s).name}`' for s in slices)}"
    return head + draws + "."


def write_paper_report(root: Path, problem_set: str, title: str) -> tuple[dict, dict[str, Path], bytes]:
    """The report over every seed record beside ``root``, written to ``root``'s shared reports, labelled
    exploratory or confirmatory (``run_provenance``): the label in the title and the json."""
    records = collect_seed_records(root, problem_set)
    report = paper.paper_report(records)
    run = run_provenance(root)
    report["label"] = run.get("label", "exploratory")
    report["settings"] = {k: run.get(f"settings_{k}") for k in ("file", "commit")} if run.get("settings_file") else None
    report["run"] = run
    report["data"] = [
        {"seed": r["seed"], **{k: r.get(k) for k in ("data_seed", "base_data_seed", "test_ids_file")}} for r in records
    ]
    out = DataRoot(root)
    head, _, body = paper.report_markdown(report, f"{title} ({report['label']})").partition("\n\n")
    md = f"{head}\n\n{provenance_line(report)}\n\n{body}"
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
        if context.run.tags.get(RECORDS_WRITTEN) != "true":  # restem experiment paper wrote every seed's record
            record = seed_record_from(root, name, exps, experiment.seed, data_of(experiment))
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
