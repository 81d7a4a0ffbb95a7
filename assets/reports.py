"""Evaluation reports: run the held-out evaluation for one model and emit it as asset metadata + files.

Files per stage under ``reports/<set>/``: ``<stage>.json`` (metrics, summary rows, pass@k curve),
``<stage>.md`` and three plots, ``<stage>_pass_at_k.png``, ``<stage>_levels.png`` and
``<stage>_splits.png``, shown inline in the asset's metadata too. Comparisons across models are the
``summary/run_summary`` asset's job (assets/summary.py), not this module's.
"""

import base64
import json
from pathlib import Path

import dagster as dg
import polars as pl
from matplotlib.figure import Figure

from assets.common import REUSE_EVALUATIONS, load_problems, md_table, run_prompter, stage_progress
from assets.ingest import ingested_problems
from resources import ExperimentResource, SamplerResource, StorageResource
from restem_pipeline.evaluation import plots
from restem_pipeline.evaluation.evaluate import evaluate, evaluation_fingerprint, headline, summarize
from restem_pipeline.storage.shards import remove_shard_dir
from restem_pipeline.storage.tables import DataRoot, write_text_atomic


def evaluation_result(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    experiment: ExperimentResource,
    sampler: SamplerResource,
    stage: str,
    model_path: str,
    root: DataRoot | None = None,
    problems_of: str | None = None,
) -> dg.MaterializeResult:
    """Evaluate ``model_path`` on this partition's problems (or, for a transfer evaluation, on the
    problem set ``problems_of``, stored or resolved now, with this partition's prompts) and store it
    under ``root`` (default: the shared data root) as ``stage``."""
    name = context.partition_key
    root = root or storage.root()
    problems = ingested_problems(problems_of, storage, experiment) if problems_of else load_problems(storage, name)
    cfg = experiment.eval_config(run_prompter(storage, experiment, name))
    fingerprint = evaluation_fingerprint(
        problems, cfg, model_path, {"sampler": sampler.model_dump(mode="json"), "evaluated_on": problems_of or name}
    )
    reuse = context.run.tags.get(REUSE_EVALUATIONS) == "true"
    reused = stored_evaluation(root, name, stage, fingerprint) if reuse else None
    if reused is not None:
        samples, summary = reused, summarize(reused, cfg)
        context.log.info(f"{stage}: the stored evaluation has this fingerprint (model, prompts, settings): reused")
    else:  # the model is loaded only here; each finished job is committed under parts, so a cut run resumes
        smp = sampler.sampler(model_path, stop=cfg.prompter.stop(problems[0]))
        parts = root.shard_dir("eval_samples", name, stage)
        samples, summary = evaluate(smp, problems, cfg, stage_progress(context), parts, fingerprint, context.log.info)
        root.write_table(samples, "eval_samples", name, stage)
        root.write_table(summary, "eval_summary", name, stage)
        remove_shard_dir(parts)  # only once the tables are stored
    metrics = headline(summary, cfg)
    shown = summary.select(
        [
            "split",
            "level",
            "problems",
            "unscored",
            "pass@1_greedy",
            *[c for c in summary.columns if c.startswith(("pass@", "maj@")) and c != "pass@1_greedy"],
        ]
    )
    table = md_table(shown)
    curve = plots.pass_at_k_curve(samples)
    label = plots.stage_label(stage)
    rows = summary.to_dicts()
    figures = {
        "pass_at_k": plots.pass_at_k_figure({label: curve}),
        "levels": plots.level_figure(
            {s: plots.level_accuracy(rows, s) for s in plots.SPLITS}, f"{label}: greedy pass@1 per level"
        ),
        "splits": plots.splits_figure({label: plots.split_accuracy(metrics)}),
    }
    pngs = write_plots(root, name, stage, figures)
    report = {
        "problem_set": name,
        "evaluated_on": problems_of or name,
        "experiment": root.experiment,
        "stage": stage,
        "model": model_path,
        "metrics": metrics,
        "summary": rows,
        "pass_at_k_curve": {str(k): v for k, v in curve.items()},
        "plots": {key: path.name for key, path in pngs.items()},
        "eval_config": {**cfg.__dict__, "prompter": cfg.prompter.name},
        "fingerprint": fingerprint,
        "reused": reused is not None,
    }
    json_path = root.write_json(report, name, stage)
    md_path = root.report_path(name, stage, ".md")
    images = "\n".join(f"![{key}]({path.name})" for key, path in pngs.items())
    write_text_atomic(f"# {name} / {stage}\n\nmodel: `{model_path}`\n\n{table}\n\n{images}\n", md_path)
    context.log.info(f"{stage}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if "pass" in k or "maj" in k))
    meta: dict = {k: dg.MetadataValue.float(v) for k, v in metrics.items()}
    meta.update(
        {
            "summary": dg.MetadataValue.md(table),
            "report_json": dg.MetadataValue.path(str(json_path)),
            "report_md": dg.MetadataValue.path(str(md_path)),
            "pass@k_curve": dg.MetadataValue.md(md_table(curve_frame(curve), "{:.4f}")),
            "model": model_path,
            **plot_metadata(pngs),
        }
    )
    return dg.MaterializeResult(metadata=meta)


def write_plots(root: DataRoot, problem_set: str, stage: str, figures: dict[str, Figure]) -> dict[str, Path]:
    """Each figure as ``reports/<set>/<stage>_<key>.png`` (atomic); {key: path}."""
    return {
        key: plots.write_bytes_atomic(plots.png_bytes(fig), root.report_path(problem_set, f"{stage}_{key}", ".png"))
        for key, fig in figures.items()
    }


def plot_metadata(pngs: dict[str, Path]) -> dict[str, dg.MetadataValue]:
    """Per plot: the image inline (Markdown, base64 data URI) and the path of its file."""
    meta: dict[str, dg.MetadataValue] = {}
    for key, path in pngs.items():
        meta[f"plot/{key}"] = dg.MetadataValue.md(inline_png(key, path.read_bytes()))
        meta[f"plot/{key}_file"] = dg.MetadataValue.path(str(path))
    return meta


def inline_png(alt: str, data: bytes) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(data).decode('ascii')})"


def curve_frame(curve: dict[int, float]) -> pl.DataFrame:
    return pl.DataFrame(
        {"k": list(curve), "pass@k": list(curve.values())}, schema={"k": pl.Int64, "pass@k": pl.Float64}
    )


def stored_report(root: DataRoot, problem_set: str, stage: str) -> dict | None:
    """The stored JSON report of ``stage`` (``reports/<set>/<stage>.json``), or None if not materialized."""
    path = root.report_path(problem_set, stage, ".json")
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a valid report ({err})") from err


def stored_evaluation(root: DataRoot, problem_set: str, stage: str, fingerprint: dict) -> pl.DataFrame | None:
    """The stored ``eval_samples`` of ``stage`` when its report records this ``fingerprint``, else None."""
    report = stored_report(root, problem_set, stage)
    table = root.table_path("eval_samples", problem_set, stage)
    if report is None or report.get("fingerprint") != fingerprint or not table.exists():
        return None
    return pl.read_parquet(table)


def status_counts(df: pl.DataFrame) -> dict[str, int]:
    return {r["status"]: int(r["len"]) for r in df.group_by("status").len().iter_rows(named=True)}
