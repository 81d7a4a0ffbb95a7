"""Evaluation reports: run the held-out evaluation for one model and emit it as asset metadata + files."""

import dagster as dg
import polars as pl

from assets.common import load_problems, md_table, stage_progress
from resources import ExperimentResource, SamplerResource, StorageResource
from restem_pipeline.evaluation import evaluate, headline
from restem_pipeline.prompts import template_for
from restem_pipeline.storage import write_text_atomic


def evaluation_result(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    experiment: ExperimentResource,
    sampler: SamplerResource,
    stage: str,
    model_path: str,
) -> dg.MaterializeResult:
    name = context.partition_key
    root = storage.root()
    problems = load_problems(storage, name)
    cfg = experiment.eval_config()
    smp = sampler.sampler(model_path, stop=template_for(problems[0], cfg.few_shot).stop)
    samples, summary = evaluate(smp, problems, cfg, stage_progress(context))
    root.write_table(samples, "eval_samples", name, stage)
    root.write_table(summary, "eval_summary", name, stage)
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
    report = {
        "problem_set": name,
        "stage": stage,
        "model": model_path,
        "metrics": metrics,
        "summary": summary.to_dicts(),
        "eval_config": cfg.__dict__,
    }
    json_path = root.write_json(report, name, stage)
    md_path = root.report_path(name, stage, ".md")
    write_text_atomic(f"# {name} / {stage}\n\nmodel: `{model_path}`\n\n{table}\n", md_path)
    context.log.info(f"{stage}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if "pass" in k or "maj" in k))
    meta: dict = {k: dg.MetadataValue.float(v) for k, v in metrics.items()}
    meta.update(
        {
            "summary": dg.MetadataValue.md(table),
            "report_json": dg.MetadataValue.path(str(json_path)),
            "report_md": dg.MetadataValue.path(str(md_path)),
            "model": model_path,
        }
    )
    return dg.MaterializeResult(metadata=meta)


def status_counts(df: pl.DataFrame) -> dict[str, int]:
    return {r["status"]: int(r["len"]) for r in df.group_by("status").len().iter_rows(named=True)}
