"""``<experiment>/summary``: one table and three plots comparing every model of an experiment, per problem set.

Reads the stored evaluation reports (``reports/<set>/<experiment>/<stage>.json``) of the base model and
the SFT baseline (``shared``), the teacher (distillation) and each iteration, and writes
``reports/<set>/<experiment>/summary.{md,json,png}``: the comparison table
(test pass@1, pass@K, maj@K, validation and train pass@1, test pass@1 per level), the best iteration
by validation pass@1 and whether validation stopped improving, and the pass@k / per-level /
train-validation-test plots across all models. It depends on every eval report in the graph, but reads
whichever reports are in storage: iterations not materialized yet are listed as missing, not an error
(a run can be summarized while it is in progress). Transfer reports (a checkpoint evaluated on another
problem set) get a table of their own. Not covered: running any evaluation.
"""

import json
import math

import dagster as dg
import polars as pl

from assets.baselines import base_eval_report, sft_eval_report
from assets.common import md_table
from assets.experiment import TEACHER_STAGE, experiment_key, iteration_key, transfer_stage
from assets.partitions import problem_sets
from assets.reports import inline_png, stored_report
from resources import StorageResource
from restem_pipeline.evaluation import plots
from restem_pipeline.experiments import Experiment
from restem_pipeline.storage.tables import SHARED, DataRoot, write_text_atomic


def summary_key(experiment: str) -> dg.AssetKey:
    return experiment_key(experiment, "summary")


def run_stages(exp: Experiment) -> list[str]:
    """The models an experiment's summary compares, in order: base, SFT, (teacher), each iteration."""
    return [
        "base",
        "sft",
        *([TEACHER_STAGE] if exp.distills else []),
        *(f"iter_{t}" for t in range(1, exp.iterations + 1)),
    ]


def stage_roots(root: DataRoot, stages: list[str]) -> dict[str, DataRoot]:
    """Where each stage's report is: base and SFT are shared, the rest are the experiment's."""
    return {s: root.of(SHARED) if s in ("base", "sft") else root for s in stages}


def label_of(exp: Experiment, stage: str, where: DataRoot) -> str:
    """A stage's label in tables: ``base`` / ``sft`` (shared), else ``<experiment>/<stage>``."""
    return stage if where.experiment == SHARED else f"{exp.name}/{stage}"


def collect_reports(roots: dict[str, DataRoot], problem_set: str) -> dict[str, dict]:
    """{stage: report} for the stages whose report is in storage, in ``roots`` order."""
    found = {s: stored_report(r, problem_set, s) for s, r in roots.items()}
    return {s: r for s, r in found.items() if r is not None}


def transfer_table(root: DataRoot, problem_set: str, exp: Experiment) -> pl.DataFrame:
    """One row per (model, transfer set) with a stored report: test and validation pass@1 there."""
    rows = []
    for target in exp.transfer:
        for t in range(0, exp.iterations + 1):
            report = stored_report(root, problem_set, transfer_stage(t, target))
            if report is not None:
                m = report["metrics"]
                rows.append(
                    {
                        "model": "base" if t == 0 else f"iter {t}",
                        "evaluated on": target,
                        "test pass@1": _num(m.get("test/pass@1")),
                        "validation pass@1": _num(m.get("validation/pass@1")),
                    }
                )
    schema = {"model": pl.String, "evaluated on": pl.String, "test pass@1": pl.Float64, "validation pass@1": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def _num(value: object) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def comparison_table(reports: dict[str, dict]) -> pl.DataFrame:
    """One row per model: headline metrics and test pass@1 (greedy) per level."""
    levels = sorted({lv for r in reports.values() for lv in plots.level_accuracy(r["summary"])}, key=plots.level_order)
    rows = []
    for stage, r in reports.items():
        m, k = r["metrics"], int(r["eval_config"]["k"])
        per_level = plots.level_accuracy(r["summary"])
        rows.append(
            {
                "model": plots.stage_label(stage),
                "K": k,
                "test pass@1": _num(m.get("test/pass@1")),
                "test pass@K": _num(m.get(f"test/pass@{k}_sampled")),
                "test maj@K": _num(m.get(f"test/maj@{k}")),
                "validation pass@1": _num(m.get("validation/pass@1")),
                "train pass@1": _num(m.get("train/pass@1")),
                **{f"test L{lv}": per_level.get(lv) for lv in levels},
            }
        )
    schema = {"model": pl.String, "K": pl.Int64} | {c: pl.Float64 for c in rows[0] if c not in ("model", "K")}
    return pl.DataFrame(rows, schema=schema)


def best_by_validation(reports: dict[str, dict]) -> dict:
    """The iteration with the highest validation pass@1 (earliest on ties), and whether later ones fell short.

    ``stopped_improving`` is True when an iteration after the best one exists and none beat it.
    """
    vals = [
        (int(s.removeprefix("iter_")), v)
        for s, r in reports.items()
        if s.startswith("iter_") and (v := _num(r["metrics"].get("validation/pass@1"))) is not None
    ]
    if not vals:
        return {"iteration": None, "validation/pass@1": None, "stopped_improving": False, "iterations_since_best": 0}
    best_t, best_v = max(vals, key=lambda tv: (tv[1], -tv[0]))
    last_t = max(t for t, _ in vals)
    return {
        "iteration": best_t,
        "validation/pass@1": best_v,
        "stopped_improving": last_t > best_t,
        "iterations_since_best": last_t - best_t,
    }


def pass_at_k_curves(
    roots: dict[str, DataRoot], problem_set: str, reports: dict[str, dict]
) -> dict[str, dict[int, float]]:
    """Per model, the report's stored pass@k curve, else one computed from its ``eval_samples`` table."""
    out = {}
    for stage, r in reports.items():
        root = roots[stage]
        if "pass_at_k_curve" in r:
            curve = {int(k): float(v) for k, v in r["pass_at_k_curve"].items()}
        elif root.table_path("eval_samples", problem_set, stage).exists():
            curve = plots.pass_at_k_curve(root.read_table("eval_samples", problem_set, stage))
        else:
            curve = {}
        if curve:
            out[plots.stage_label(stage)] = curve
    return out


def summary_markdown(
    problem_set: str, table: pl.DataFrame, best: dict, missing: list[str], experiment: str = "", transfer=None
) -> str:
    title = f"# {problem_set} / {experiment}: run summary" if experiment else f"# {problem_set}: run summary"
    lines = [title, "", md_table(table), ""]
    if transfer is not None and len(transfer):
        lines += ["Transfer (each model on another problem set):", "", md_table(transfer), ""]
    if best["iteration"] is None:
        lines.append("No iteration has a validation score yet.")
    else:
        lines.append(f"Best iteration by validation pass@1: **{best['iteration']}** ({best['validation/pass@1']:.3f}).")
        lines.append(
            f"Validation stopped improving: {best['iterations_since_best']} later iteration(s) did not beat it."
            if best["stopped_improving"]
            else "Validation has not stopped improving (the best iteration is the latest one)."
        )
    if missing:
        lines.append(f"Not in storage yet: {', '.join(missing)}.")
    return "\n".join([*lines, "", "![summary](summary.png)", ""])


def build_summary(exp: Experiment) -> dg.AssetsDefinition:
    """``e/summary``: the base model, the SFT baseline, the teacher (distillation) and each iteration of ``exp``."""
    stages = run_stages(exp)
    deps = [
        base_eval_report,
        sft_eval_report,
        *(iteration_key(t, "eval_report", exp.name) for t in range(1, exp.iterations + 1)),
    ]
    if exp.distills:
        deps.append(experiment_key(exp.name, "teacher_eval_report"))
    deps += [iteration_key(t, f"transfer_{s}", exp.name) for s in exp.transfer for t in range(0, exp.iterations + 1)]

    @dg.asset(
        key=summary_key(exp.name),
        deps=deps,
        group_name=f"{exp.name}_summary",
        partitions_def=problem_sets,
        kinds={"polars", "matplotlib"},
        description=f"{exp.name}: base vs SFT vs each iteration: comparison table, best iteration by validation, "
        "transfer, plots (reads whichever eval reports are stored).",
    )
    def run_summary(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
        name = context.partition_key
        root = storage.root(exp.name)
        roots = stage_roots(root, stages)
        reports = collect_reports(roots, name)
        if not reports:
            raise dg.Failure(
                f"no evaluation report of {name!r} in {root.root / 'reports'}: materialize the eval reports"
            )
        missing = [s for s in stages if s not in reports]
        if missing:
            context.log.warning(f"summarizing without {', '.join(missing)} (not materialized)")
        table = comparison_table(reports)
        best = best_by_validation(reports)
        curves = pass_at_k_curves(roots, name, reports)
        transfer = transfer_table(root, name, exp)
        levels = {plots.stage_label(s): plots.level_accuracy(r["summary"]) for s, r in reports.items()}
        splits = {plots.stage_label(s): plots.split_accuracy(r["metrics"]) for s, r in reports.items()}
        png = plots.png_bytes(plots.summary_figure(curves, levels, splits))
        png_path = plots.write_bytes_atomic(png, root.report_path(name, "summary", ".png"))
        md_path = root.report_path(name, "summary", ".md")
        write_text_atomic(summary_markdown(name, table, best, missing, exp.name, transfer), md_path)
        doc = {
            "problem_set": name,
            "experiment": exp.name,
            "transfer": transfer.to_dicts(),
            "stages": list(reports),
            "missing": missing,
            "table": table.to_dicts(),
            "best_by_validation": best,
            "pass_at_k_curves": {label: {str(k): v for k, v in c.items()} for label, c in curves.items()},
        }
        json_path = root.report_path(name, "summary", ".json")
        write_text_atomic(json.dumps(doc, indent=2), json_path)
        meta: dict = {
            "comparison": dg.MetadataValue.md(md_table(table)),
            **({"transfer": dg.MetadataValue.md(md_table(transfer))} if len(transfer) else {}),
            "plots": dg.MetadataValue.md(inline_png("summary", png)),
            "stages_found": len(reports),
            "stages_missing": ", ".join(missing) or "none",
            "validation_stopped_improving": best["stopped_improving"],
            "summary_md": dg.MetadataValue.path(str(md_path)),
            "summary_json": dg.MetadataValue.path(str(json_path)),
            "summary_png": dg.MetadataValue.path(str(png_path)),
        }
        if best["iteration"] is not None:
            meta["best_iteration_by_validation"] = best["iteration"]
            meta["best_validation/pass@1"] = dg.MetadataValue.float(best["validation/pass@1"])
        for row in table.iter_rows(named=True):
            if row["test pass@1"] is not None:
                meta[f"{row['model']}/test/pass@1"] = dg.MetadataValue.float(row["test pass@1"])
        return dg.MaterializeResult(metadata=meta)

    return run_summary


__all__ = ["build_summary", "best_by_validation", "comparison_table", "summary_key"]
