"""The paper's findings checked across seeds: one record per seed, mean ± sd per model, a verdict per claim.

A *seed record* holds, for one seed, every evaluated model's headline metrics (test pass@1, pass@K,
maj@K, validation and train pass@1, test pass@1 per level, pass@1 on the held-out transfer set), built
by ``model_metrics`` from the stored evaluation reports, plus ``restem/best``: the ReST-EM iteration
validation picks. ``paper_report(records)`` turns several records into

- a table: per model and metric, mean ± sample sd over the seeds (and n);
- a verdict per finding of the paper (``FINDINGS``): the paired difference of the two arms, per seed
  (both arms of one seed share its problems, base model and evaluation seed), and its 95% confidence
  interval by Student's t with n - 1 degrees of freedom: m ± t(0.975, n-1) · sd / sqrt(n) over n >= 2
  seeds. **reproduced** when the whole interval is above 0 (the paper's direction, beyond noise), **not
  reproduced** when it is at or below 0 (no gain, or the opposite, beyond noise), else **inconclusive**;
  one seed is always inconclusive. Why t and not a bootstrap: a seed is one independent replication of
  the whole experiment (where each seed draws its own problems, the draw of the test set is part of it),
  and a per-seed difference is a mean over hundreds of problems, close to normal; with n = 2 to 5 seeds a
  bootstrap over seeds has at most 5^5 resamples and its percentile interval is too narrow, while t's
  quantile (12.71 at n = 2, 4.30 at n = 3) is the honest price of so few replications;
- the markdown of both, and a four-panel figure (``paper_figure``).

Not covered: running the experiments or reading storage (``assets/paper.py``; ``restem experiment paper``:
``assets/paper_run.py``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import mpmath
from matplotlib.figure import Figure

from restem_pipeline.evaluation.plots import level_accuracy, level_order, panels_figure

# the comparison set, as shipped experiment files: ReST-EM, ReST (continue from t-1), one iteration with
# 3x samples, distillation from a bigger model, and the data-fraction sweep
PAPER_EXPERIMENTS = ("restem", "rest", "restem_3x", "distill", "restem_frac12", "restem_frac50")
BEST = "restem/best"
METRICS = (
    "test/pass@1",
    "test/pass@K",
    "test/maj@K",
    "validation/pass@1",
    "train/pass@1",
    "transfer/test/pass@1",
)


class Missing(LookupError):
    """A finding needs a model or metric the records do not have (its experiment was not run)."""


def _num(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    value = float(value)  # type: ignore[arg-type]
    return None if math.isnan(value) else value


def model_metrics(report: dict, transfer: dict | None = None) -> dict[str, float]:
    """One model's headline metrics from its evaluation report (and its report on the transfer set)."""
    m, k = report["metrics"], int(report["eval_config"]["k"])
    raw = {
        "test/pass@1": m.get("test/pass@1"),
        "test/pass@K": m.get(f"test/pass@{k}_sampled"),
        "test/maj@K": m.get(f"test/maj@{k}"),
        "validation/pass@1": m.get("validation/pass@1"),
        "train/pass@1": m.get("train/pass@1"),
        **{f"test/L{lv}": v for lv, v in level_accuracy(report["summary"]).items()},
    }
    if transfer is not None:
        raw["transfer/test/pass@1"] = transfer["metrics"].get("test/pass@1")
    return {key: v for key, value in raw.items() if (v := _num(value)) is not None}


def seed_record(
    seed: int, k: int, models: dict[str, dict[str, float]], experiments: dict[str, dict], test_problems: int = 0
) -> dict:
    """A seed's record: ``models`` {label: metrics} with ``restem/best`` added (validation's pick among the
    ReST-EM iterations, earliest on ties); ``experiments`` {name: {iterations, train_fraction, ...}};
    ``test_problems``: the scored test problems behind pass@1 (0: not known)."""
    iters = sorted(
        (int(label.rsplit("_", 1)[1]), label)
        for label, metrics in models.items()
        if label.startswith("restem/iter_") and "validation/pass@1" in metrics
    )
    out = dict(models)
    if iters:
        t, label = max(iters, key=lambda tl: (models[tl[1]]["validation/pass@1"], -tl[0]))
        out[BEST] = {**models[label], "iteration": float(t)}
    return {"seed": seed, "k": k, "models": out, "experiments": experiments, "test_problems": test_problems}


def _get(record: dict, model: str, metric: str) -> float:
    try:
        return record["models"][model][metric]
    except KeyError:
        raise Missing(f"{model} {metric}") from None


def _last(record: dict, experiment: str) -> str:
    iterations = record["experiments"].get(experiment, {}).get("iterations")
    if not iterations:
        raise Missing(experiment)
    return f"{experiment}/iter_{iterations}"


def _level_gain_gap(record: dict) -> float:
    """Mean gain (best ReST-EM iteration over base) on the harder levels minus on the easier ones."""
    best, base = record["models"].get(BEST, {}), record["models"].get("base", {})
    levels = sorted({key[len("test/L") :] for key in best if key.startswith("test/L")} & {
        key[len("test/L") :] for key in base if key.startswith("test/L")
    }, key=level_order)  # fmt: skip
    if len(levels) < 2:
        raise Missing("test pass@1 per level")
    n_easy = max(1, round(0.4 * len(levels)))
    gain = {lv: best[f"test/L{lv}"] - base[f"test/L{lv}"] for lv in levels}
    return statistics.fmean(gain[lv] for lv in levels[n_easy:]) - statistics.fmean(gain[lv] for lv in levels[:n_easy])


@dataclass(frozen=True)
class Finding:
    key: str
    claim: str  # the paper's claim, with its numbers
    measure: str  # the paired difference computed here, in words
    diff: Callable[[dict], float]  # one seed record -> the difference (positive: the paper's direction)


Model = str | Callable[[dict], str]  # a model label, or one computed from the record (its last iteration)


def _gap(a: Model, b: Model, metric: str) -> Callable[[dict], float]:
    """record -> metric of model ``a`` minus that of model ``b``."""

    def label(rec: dict, m: Model) -> str:
        return m(rec) if callable(m) else m

    return lambda rec: _get(rec, label(rec, a), metric) - _get(rec, label(rec, b), metric)


def _last_of(experiment: str) -> Callable[[dict], str]:
    return lambda rec: _last(rec, experiment)


def _trend_gap(rec: dict) -> float:
    first, last = "restem/iter_1", _last(rec, "restem")
    if last == first:
        raise Missing("a second ReST-EM iteration")
    train = _get(rec, last, "train/pass@1") - _get(rec, first, "train/pass@1")
    test = _get(rec, last, "test/pass@1") - _get(rec, first, "test/pass@1")
    return train - test


_transfer_gap = _gap(_last_of("restem"), _last_of("rest"), "transfer/test/pass@1")


FINDINGS: tuple[Finding, ...] = (
    Finding("restem_vs_base", "ReST-EM improves test pass@1 over the base (MATH +5.94 / +6.34, PaLM 2-S / L)",
            "test pass@1: ReST-EM (iteration picked on validation) - base", _gap(BEST, "base", "test/pass@1")),
    Finding("restem_vs_sft", "ReST-EM beats SFT on human solutions (Figures 2, 3)",
            "test pass@1: ReST-EM (picked on validation) - SFT", _gap(BEST, "sft", "test/pass@1")),
    Finding("pass_at_k", "pass@K improves over the base (Figure 5)",
            "test pass@K: ReST-EM (picked on validation) - base", _gap(BEST, "base", "test/pass@K")),
    Finding("maj_at_k", "majority voting improves (maj@64 48.82 vs 44.02)",
            "test maj@K: ReST-EM (picked on validation) - base", _gap(BEST, "base", "test/maj@K")),
    Finding("iterations_vs_3x", "several iterations beat one with 3x the samples (41.0 / 41.9 vs 40.3, Figure 9)",
            "test pass@1: ReST-EM last iteration - one iteration with 3x samples",
            _gap(_last_of("restem"), "restem_3x/iter_1", "test/pass@1")),
    Finding("overfit", "more iterations overfit: train accuracy keeps rising, test saturates (Figures 4, 5)",
            "(train gain) - (test gain), ReST-EM iteration 1 -> last", _trend_gap),
    Finding("reset_transfers", "resetting to the base transfers better than continuing (ReST) (Figure 7)",
            "test pass@1 on the held-out set: ReST-EM last iteration - ReST last iteration", _transfer_gap),
    Finding("distill_vs_human", "a bigger model's samples distill better than human data (Figure 6)",
            "test pass@1: base trained on the teacher's samples - SFT",
            _gap("distill/iter_1", "sft", "test/pass@1")),
    Finding("small_data", "gains hold with 1,000 problems, 1/7.5 of MATH (Figure 8)",
            "test pass@1: one iteration on 1/8 of the problems - base",
            _gap("restem_frac12/iter_1", "base", "test/pass@1")),
    Finding("hard_levels", "gains are largest on medium and hard levels (Figure 8)",
            "gain over base, mean of the harder 60% of levels - the easier 40%", _level_gain_gap),
)  # fmt: skip


CONFIDENCE = 0.95


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (p in (0.5, 1)), by bisection on its CDF.

    The CDF comes from mpmath's regularized incomplete beta function: for t >= 0,
    P(T <= t) = 1 - I_x(df/2, 1/2) / 2 with x = df / (df + t^2).
    """
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")

    def cdf(t: float) -> float:
        return 1 - float(mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True)) / 2

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2


def interval(diffs: list[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The two-sided t confidence interval of the mean of ``diffs`` (None for fewer than 2 values)."""
    n = len(diffs)
    if n < 2:
        return None
    m = statistics.fmean(diffs)
    half = t_quantile((1 + confidence) / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return m - half, m + half


def verdict(diffs: list[float]) -> str:
    """reproduced / not reproduced / inconclusive from per-seed paired differences (module docstring)."""
    ci = interval(diffs)
    if ci is None:
        return "inconclusive"
    if ci[0] > 0:
        return "reproduced"
    if ci[1] <= 0:
        return "not reproduced"
    return "inconclusive"


def _stats(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
        "values": values,
    }


def model_order(labels: set[str]) -> list[str]:
    def key(label: str) -> tuple:
        head = ["base", "sft", "distill/teacher"]
        if label in head:
            return (0, head.index(label), "", 0)
        exp, _, stage = label.partition("/")
        order = list(PAPER_EXPERIMENTS)
        rank = order.index(exp) if exp in order else len(order)
        t = int(stage.rsplit("_", 1)[1]) if stage.startswith("iter_") else 99
        return (1, rank, exp, t)

    return sorted(labels, key=key)


def paper_report(records: list[dict]) -> dict:
    """The table (mean ± sd per model and metric), the findings with verdicts, over ``records`` (one per seed)."""
    if not records:
        raise ValueError("no seed records: run the experiments first")
    records = sorted(records, key=lambda r: r["seed"])
    labels = model_order({label for r in records for label in r["models"]})
    metrics = [*METRICS, *sorted({key for r in records for m in r["models"].values() for key in m
                                  if key.startswith("test/L")}, key=lambda key: level_order(key[6:]))]  # fmt: skip
    table = []
    for label in labels:
        row: dict = {"model": label}
        for metric in metrics:
            values = [r["models"][label][metric] for r in records if metric in r["models"].get(label, {})]
            if values:
                row[metric] = _stats(values)
        table.append(row)
    findings = []
    for f in FINDINGS:
        diffs, seeds, missing = [], [], ""
        for r in records:
            try:
                diffs.append(f.diff(r))
                seeds.append(r["seed"])
            except Missing as e:
                missing = str(e)
        entry = {"key": f.key, "claim": f.claim, "measure": f.measure, "seeds": seeds, "diffs": diffs}
        if diffs:
            entry |= {"mean": statistics.fmean(diffs), "verdict": verdict(diffs), "ci": interval(diffs)}
            entry["se"] = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
        else:
            entry |= {"mean": None, "se": None, "ci": None, "verdict": f"not run ({missing})"}
        findings.append(entry)
    counts = {v: sum(f["verdict"] == v for f in findings) for v in ("reproduced", "not reproduced", "inconclusive")}
    return {
        "seeds": [r["seed"] for r in records],
        "k": records[0]["k"],
        "test_problems": sorted({n for r in records if (n := r.get("test_problems"))}),
        "confidence": CONFIDENCE,
        "metrics": metrics,
        "table": table,
        "findings": findings,
        "counts": counts,
    }


def _pct(stats: dict | None) -> str:
    if not stats:
        return ""
    sd = "" if stats["sd"] is None else f" ± {100 * stats['sd']:.1f}"
    return f"{100 * stats['mean']:.1f}{sd}"


def _column(metric: str, k: int) -> str:
    names = {"test/pass@K": f"test pass@{k}", "test/maj@K": f"test maj@{k}", "transfer/test/pass@1": "transfer pass@1"}
    if metric in names:
        return names[metric]
    return metric.replace("test/L", "test L").replace("/", " ")


def report_markdown(report: dict, title: str) -> str:
    """The report as markdown: setup, the mean ± sd table, the findings with their verdicts."""
    k, metrics = report["k"], report["metrics"]
    seeds = ", ".join(str(s) for s in report["seeds"])
    lines = [
        f"# {title}",
        "",
        f"Seeds {seeds} (n = {len(report['seeds'])}); every cell is mean ± sd over the seeds, in percent "
        f"(K = {k}; pass@1 greedy; pass@K unbiased and maj@K at T 1.0, top-p 0.95; `restem/best` is the "
        "ReST-EM iteration validation picks, per seed).",
        "",
        "| model | n | " + " | ".join(_column(m, k) for m in metrics) + " |",
        "|---|---:|" + "---:|" * len(metrics),
    ]
    for row in report["table"]:
        n = max((s["n"] for key, s in row.items() if key != "model"), default=0)
        lines.append(f"| {row['model']} | {n} | " + " | ".join(_pct(row.get(m)) for m in metrics) + " |")
    level = round(100 * report.get("confidence", CONFIDENCE))
    lines += [
        "",
        f"| finding (paper) | measured here (paired, per seed) | mean (points) | {level}% interval | per seed "
        "| verdict |",
        "|---|---|---:|---|---|---|",
    ]
    for f in report["findings"]:
        if f["mean"] is None:
            lines.append(f"| {f['claim']} | {f['measure']} | | | | {f['verdict']} |")
            continue
        ci = "" if not f.get("ci") else f"[{100 * f['ci'][0]:+.1f}, {100 * f['ci'][1]:+.1f}]"
        per_seed = ", ".join(f"{100 * d:+.1f}" for d in f["diffs"])
        lines.append(
            f"| {f['claim']} | {f['measure']} | {100 * f['mean']:+.1f} | {ci} | {per_seed} | **{f['verdict']}** |"
        )
    c, n = report["counts"], len(report["seeds"])
    sizes = report.get("test_problems") or []
    point = ""
    if sizes:
        per = " or ".join(f"{100 / size:.2f}" for size in sizes)
        point = f"; one test problem is {per} points ({'/'.join(map(str, sizes))} test problems a seed)"
    t = f"t(0.975, {n - 1}) = {t_quantile(0.975, n - 1):.2f}" if n > 1 else "no interval with one seed"
    lines += [
        "",
        f"Reproduced {c['reproduced']}, not reproduced {c['not reproduced']}, inconclusive {c['inconclusive']} "
        f"of {len(report['findings'])}. Rule: the {level}% confidence interval of the paired per-seed "
        f"differences' mean by Student's t with n - 1 degrees of freedom (n = {n}: {t}); reproduced when it "
        "lies above 0, not reproduced when it lies at or below 0, else inconclusive" + point + ".",
        "",
    ]
    return "\n".join(lines)


def _mean_sd(row: dict | None, metric: str) -> tuple[float, float] | None:
    s = (row or {}).get(metric)
    return None if not s else (100 * s["mean"], 100 * (s["sd"] or 0.0))


def paper_figure(report: dict) -> Figure:
    """Test pass@1 per model; train/test by iteration (ReST-EM, ReST); the data fraction; gain per level."""
    fig, (ax_models, ax_iters, ax_frac, ax_levels) = panels_figure(4)
    rows = {row["model"]: row for row in report["table"]}
    bars = [(label, v) for label, row in rows.items() if (v := _mean_sd(row, "test/pass@1"))]
    ax_models.barh([b[0] for b in bars], [b[1][0] for b in bars], xerr=[b[1][1] for b in bars], color="#4c72b0")
    ax_models.invert_yaxis()
    ax_models.set_title("test pass@1 (greedy), mean ± sd")
    ax_models.set_xlabel("%")
    for exp, style in (("restem", "-"), ("rest", "--")):
        for metric, color in (("train/pass@1", "#dd8452"), ("test/pass@1", "#4c72b0")):
            pts = [(0, v) for v in [_mean_sd(rows.get("base"), metric)] if v]
            pts += [(int(label.rsplit("_", 1)[1]), v) for label, row in rows.items()
                    if label.startswith(f"{exp}/iter_") and (v := _mean_sd(row, metric))]  # fmt: skip
            if len(pts) > 1:
                xs, ys, errs = zip(*((p[0], p[1][0], p[1][1]) for p in pts), strict=True)
                ax_iters.errorbar(xs, ys, yerr=errs, linestyle=style, color=color, marker="o", capsize=3,
                                  label=f"{exp} {metric}")  # fmt: skip
    ax_iters.set_title("by iteration (0 = base)")
    ax_iters.set_xlabel("iteration")
    ax_iters.set_ylabel("pass@1 %")
    if ax_iters.has_data():
        ax_iters.legend(fontsize=7)
    fracs = [(0.125, "restem_frac12/iter_1"), (0.5, "restem_frac50/iter_1"), (1.0, "restem/iter_1")]
    pts = [(f, v) for f, label in fracs if (v := _mean_sd(rows.get(label), "test/pass@1"))]
    if pts:
        ax_frac.errorbar(
            [p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts], marker="o", capsize=3
        )
    if base := _mean_sd(rows.get("base"), "test/pass@1"):
        ax_frac.axhline(base[0], color="grey", linestyle=":", label="base")
        ax_frac.legend(fontsize=7)
    ax_frac.set_xscale("log", base=2)
    ax_frac.set_title("one iteration vs fraction of training problems")
    ax_frac.set_xlabel("fraction of training problems")
    ax_frac.set_ylabel("test pass@1 %")
    levels = [m for m in report["metrics"] if m.startswith("test/L")]
    gains = []
    for metric in levels:
        best, base = _mean_sd(rows.get(BEST), metric), _mean_sd(rows.get("base"), metric)
        if best and base:
            gains.append((metric[len("test/") :], best[0] - base[0]))
    if gains:
        ax_levels.bar([g[0] for g in gains], [g[1] for g in gains], color="#55a868")
    ax_levels.axhline(0, color="black", linewidth=0.8)
    ax_levels.set_title("ReST-EM (validation's pick) - base, per level")
    ax_levels.set_ylabel("test pass@1 gain, points")
    return fig


__all__ = [
    "FINDINGS", "PAPER_EXPERIMENTS", "interval", "model_metrics", "paper_figure", "paper_report", "seed_record",
    "t_quantile", "verdict",
]  # fmt: skip
