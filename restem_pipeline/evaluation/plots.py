"""Plots for evaluation reports, as PNG bytes: pass@k curves, accuracy per level, train/validation/test.

Each plot has a data function (what is drawn, testable on its own) and a figure function that draws
it with matplotlib's Agg canvas directly: no pyplot, no global backend switch, no display needed.
Inputs are what the evaluation already stores: ``eval_samples`` rows (for pass@k, the unbiased
estimator of ``metrics.pass_at_k`` per problem, averaged) and the report JSON (its ``summary`` rows
and headline ``metrics``). Not covered: reading or writing reports (the assets do that), styling
beyond legible defaults.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path

import polars as pl
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from restem_pipeline.evaluation.metrics import pass_at_k
from restem_pipeline.storage.atomic import commit_file

SPLITS = ("train", "validation", "test")
DPI = 80
PANEL = (6.0, 4.0)  # inches per panel: 480 x 320 pixels at DPI

Curves = Mapping[str, Mapping[int, float]]
ByLevel = Mapping[str, Mapping[str, float]]
BySplit = Mapping[str, Mapping[str, float]]


# ---------------------------------------------------------------- data


def pass_at_k_curve(samples: pl.DataFrame, split: str = "test") -> dict[int, float]:
    """{k: mean over problems of pass@k} for k = 1..K, K the fewest samples any problem has.

    Uses the ``kind == "sample"`` rows of ``eval_samples``; a sample counts as correct when its reward
    is 1.0. Unscored samples (null reward: the verifier failed, not the model) are left out, as in the
    evaluation summary: a problem's pass@k uses its n scored samples, and a problem with fewer than k
    scored samples is left out of that k's mean. Empty if none.
    """
    rows = samples.filter((pl.col("kind") == "sample") & (pl.col("split") == split))
    if rows.is_empty():
        return {}
    per = rows.group_by("problem_id").agg(
        pl.len().alias("drawn"), pl.col("reward").count().alias("n"), (pl.col("reward") == 1.0).sum().alias("c")
    )
    counts = [(int(n), int(c)) for n, c in per.select("n", "c").iter_rows()]
    top = int(per["drawn"].min())
    curve = {}
    for k in range(1, top + 1):
        scored = [pass_at_k(n, c, k) for n, c in counts if n >= k]
        if scored:
            curve[k] = sum(scored) / len(scored)
    return curve


def level_accuracy(summary_rows: list[dict], split: str = "test", metric: str = "pass@1_greedy") -> dict[str, float]:
    """{level: metric} for one split from a report's ``summary`` rows (level 'all' left out)."""
    out = {
        str(r["level"]): float(r[metric])
        for r in summary_rows
        if r.get("split") == split and str(r.get("level")) != "all" and r.get(metric) is not None
    }
    return {lv: out[lv] for lv in sorted(out, key=level_order)}


def split_accuracy(metrics: Mapping[str, float]) -> dict[str, float]:
    """{split: greedy pass@1} for the splits a report's headline ``metrics`` has (NaN left out)."""
    out = {}
    for split in SPLITS:
        value = metrics.get(f"{split}/pass@1")
        if value is not None and not math.isnan(value):
            out[split] = float(value)
    return out


def stage_label(stage: str) -> str:
    """How a stage is named in plots and tables: 'base', 'SFT', 'iter 2'."""
    return {"base": "base", "sft": "SFT"}.get(stage, stage.replace("iter_", "iter "))


def level_order(level: str) -> tuple[int, float, str]:
    try:
        return (0, float(level), level)
    except ValueError:
        return (1, 0.0, level)


# ---------------------------------------------------------------- drawing


def draw_pass_at_k(ax: Axes, curves: Curves) -> None:
    """One line per model: pass@k against k."""
    for label, curve in curves.items():
        ks = sorted(curve)
        ax.plot(ks, [curve[k] for k in ks], marker="o", label=label)
    _finish(ax, "pass@k (unbiased, test)", "k", "pass@k", bool(curves))
    if curves:
        ax.set_xticks(sorted({k for c in curves.values() for k in c}))


def draw_levels(ax: Axes, levels: ByLevel, title: str = "test pass@1 (greedy) per level") -> None:
    """Grouped bars: one group per difficulty level, one bar per series (a model, or a split)."""
    all_levels = sorted({lv for m in levels.values() for lv in m}, key=level_order)
    width = 0.8 / max(len(levels), 1)
    for i, (label, by_level) in enumerate(levels.items()):
        xs = [j + (i - (len(levels) - 1) / 2) * width for j, lv in enumerate(all_levels) if lv in by_level]
        ax.bar(xs, [by_level[lv] for lv in all_levels if lv in by_level], width=width, label=label)
    ax.set_xticks(range(len(all_levels)), [f"level {lv}" for lv in all_levels])
    _finish(ax, title, "", "pass@1", bool(all_levels))


def draw_splits(ax: Axes, splits: BySplit) -> None:
    """One line per split (train, validation, test) across models in the order given."""
    labels = list(splits)
    for split in SPLITS:
        pts = [(i, splits[m][split]) for i, m in enumerate(labels) if split in splits[m]]
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=split)
    ax.set_xticks(range(len(labels)), labels)
    _finish(ax, "greedy pass@1: train vs validation vs test", "", "pass@1", bool(labels))


def _finish(ax: Axes, title: str, xlabel: str, ylabel: str, has_data: bool) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0.0, 1.02)
    ax.grid(alpha=0.3)
    if not has_data:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    elif ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def panels_figure(panels: int) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(PANEL[0] * panels, PANEL[1]), dpi=DPI, layout="tight")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, panels, i + 1) for i in range(panels)]


def pass_at_k_figure(curves: Curves) -> Figure:
    fig, (ax,) = panels_figure(1)
    draw_pass_at_k(ax, curves)
    return fig


def level_figure(levels: ByLevel, title: str = "test pass@1 (greedy) per level") -> Figure:
    fig, (ax,) = panels_figure(1)
    draw_levels(ax, levels, title)
    return fig


def splits_figure(splits: BySplit) -> Figure:
    fig, (ax,) = panels_figure(1)
    draw_splits(ax, splits)
    return fig


def summary_figure(curves: Curves, levels: ByLevel, splits: BySplit) -> Figure:
    """The three plots side by side (pass@k, per level, splits)."""
    fig, axes = panels_figure(3)
    draw_pass_at_k(axes[0], curves)
    draw_levels(axes[1], levels)
    draw_splits(axes[2], splits)
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def write_bytes_atomic(data: bytes, path: Path) -> Path:
    """Write ``data`` to ``path`` through a temporary file, fsync and a rename (``atomic.commit_file``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return commit_file(path.parent, path.name, lambda tmp: tmp.write_bytes(data))
