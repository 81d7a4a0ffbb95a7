"""Asset checks on every iteration: what must hold before a stage's output is used downstream.

On ``<experiment>/iter_t/verified_samples`` (blocking): ``sample_conservation`` (every raw sample has exactly one
verdict) and the unscored rates, ``invalid_gold_rate``, ``verifier_timeout_rate`` and
``infra_error_rate``, each at most its ``ChecksResource`` threshold: a broken problem set or a failing
sandbox would otherwise shrink the training set quietly. A timeout counts here only when it left the
sample unscored (a math verifier timeout); a code program that ran out of time is a real wrong answer.
On ``iter_t/training_set`` (blocking): ``cap_holds`` (only correct samples, at most the cap per problem)
and ``training_set_not_empty``. On ``iter_t/eval_report`` (severity WARN, not blocking):
``not_worse_than_base``, validation pass@1 against the base model's, both from the stored reports, and
``eval_unscored_rate``: evaluation verdicts left unscored (left out of every metric) at most
``max_eval_unscored_rate``.
Every result carries its counts and rates as metadata; every experiment's iterations get the same checks
(distillation's included), read from the experiment's storage with its settings. Not covered: checks
on the baselines.
"""

import math
from collections.abc import Callable

import dagster as dg
import polars as pl

from assets.common import settled
from assets.experiment import iteration_key
from assets.reports import stored_report
from resources import ChecksResource, ExperimentResource, StorageResource
from restem_pipeline.experiments import Experiment
from restem_pipeline.storage.tables import SHARED

# (check name, verdict status, ChecksResource field)
UNSCORED_RATES = (
    ("invalid_gold_rate", "invalid_gold", "max_invalid_gold_rate"),
    ("verifier_timeout_rate", "timeout", "max_timeout_rate"),
    ("infra_error_rate", "infra_error", "max_infra_error_rate"),
)


def unscored_rate_result(
    df: pl.DataFrame, status: str | None, threshold: float, severity: dg.AssetCheckSeverity | None = None
) -> dg.AssetCheckResult:
    """Passes when the fraction of samples with ``status`` (None: any) and no reward is at most ``threshold``."""
    unscored = df["reward"].is_null() if status is None else (df["status"] == status) & df["reward"].is_null()
    count = int(unscored.sum()) if len(df) else 0
    status = status or "unscored"
    rate = count / len(df) if len(df) else 0.0
    return dg.AssetCheckResult(
        passed=rate <= threshold,
        metadata={
            "samples": len(df),
            status: count,
            "rate": dg.MetadataValue.float(rate),
            "threshold": dg.MetadataValue.float(threshold),
        },
        description=None if rate <= threshold else f"{count} of {len(df)} samples are {status} ({rate:.1%})",
        severity=severity or dg.AssetCheckSeverity.ERROR,
    )


def unscored_rate_check(
    key: Callable[[str], dg.AssetKey], experiment: str, stage: str, check_name: str, status: str, setting: str
) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=key("verified_samples"),
        name=check_name,
        blocking=True,
        description=f"At most ChecksResource.{setting} of the samples are '{status}' (unscored, never trained on).",
    )
    def _check(
        context: dg.AssetCheckExecutionContext, storage: StorageResource, checks: ChecksResource
    ) -> dg.AssetCheckResult:
        df = storage.root(experiment).read_table("verified_samples", context.partition_key, stage)
        return unscored_rate_result(df, status, getattr(checks, setting))

    return _check


def validation_delta_result(base: dict | None, mine: dict | None, tolerance: float) -> dg.AssetCheckResult:
    """WARN-severity: the checkpoint's validation pass@1 is at least the base model's minus ``tolerance``."""
    warn = dg.AssetCheckSeverity.WARN
    if base is None or mine is None:
        missing = "baselines/base_eval_report" if base is None else "this iteration's report"
        return dg.AssetCheckResult(
            passed=False, severity=warn, description=f"cannot compare: {missing} is not in storage", metadata={}
        )
    b = float(base["metrics"].get("validation/pass@1", math.nan))
    m = float(mine["metrics"].get("validation/pass@1", math.nan))
    if math.isnan(b) or math.isnan(m):
        return dg.AssetCheckResult(
            passed=False, severity=warn, description="no validation pass@1 to compare (no validation split?)"
        )
    delta = m - b
    return dg.AssetCheckResult(
        passed=delta >= -tolerance,
        severity=warn,
        metadata={
            "validation/pass@1": dg.MetadataValue.float(m),
            "base validation/pass@1": dg.MetadataValue.float(b),
            "delta": dg.MetadataValue.float(delta),
            "tolerance": dg.MetadataValue.float(tolerance),
        },
        description=None if delta >= -tolerance else f"validation pass@1 {m:.3f} is below the base model's {b:.3f}",
    )


def build_iteration_checks(exp: Experiment, t: int) -> list[dg.AssetChecksDefinition]:
    """The checks of iteration ``t`` of ``exp`` (assets ``<experiment>/iter_t/...``)."""
    return build_stage_checks(exp, lambda name: iteration_key(t, name, exp.name), f"iter_{t}")


def build_experiment_checks(exp: Experiment) -> list[dg.AssetChecksDefinition]:
    return [c for t in range(1, exp.iterations + 1) for c in build_iteration_checks(exp, t)]


def build_stage_checks(
    exp: Experiment, key: Callable[[str], dg.AssetKey], stage: str
) -> list[dg.AssetChecksDefinition]:
    """Checks on one sample -> verify -> cap -> train -> evaluate chain: ``key(name)`` is its asset key."""

    @dg.asset_check(
        asset=key("verified_samples"),
        blocking=True,
        description="Every raw sample has exactly one verdict, and no verdict lacks a sample.",
    )
    def sample_conservation(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
        root = storage.root(exp.name)
        name = context.partition_key
        raw = root.read_table("raw_samples", name, stage)["sample_id"]
        ver = root.read_table("verified_samples", name, stage)["sample_id"]
        missing = len(set(raw) - set(ver))
        extra = len(set(ver) - set(raw))
        dupes = len(ver) - ver.n_unique()
        return dg.AssetCheckResult(
            passed=missing == extra == dupes == 0,
            metadata={"raw": len(raw), "verified": len(ver), "missing": missing, "extra": extra, "duplicates": dupes},
        )

    @dg.asset_check(
        asset=key("training_set"),
        blocking=True,
        description="Only correct samples, and at most max_per_problem per problem.",
    )
    def cap_holds(
        context: dg.AssetCheckExecutionContext, storage: StorageResource, experiment: ExperimentResource
    ) -> dg.AssetCheckResult:
        experiment = settled(experiment, exp.overrides("experiment"))
        df = storage.root(exp.name).read_table("training_set", context.partition_key, stage)
        worst = int(df.group_by("problem_id").len()["len"].max() or 0) if len(df) else 0
        wrong = int((df["reward"] != 1.0).fill_null(True).sum()) if len(df) else 0
        return dg.AssetCheckResult(
            passed=worst <= experiment.max_per_problem and wrong == 0,
            metadata={
                "examples": len(df),
                "max_per_problem_observed": worst,
                "cap": experiment.max_per_problem,
                "not_correct": wrong,
            },
        )

    @dg.asset_check(
        asset=key("training_set"),
        blocking=True,
        description="The training set has at least one example (some sample was verified correct).",
    )
    def training_set_not_empty(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
        df = storage.root(exp.name).read_table("training_set", context.partition_key, stage)
        return dg.AssetCheckResult(
            passed=len(df) > 0,
            metadata={"examples": len(df), "problems_covered": df["problem_id"].n_unique() if len(df) else 0},
            description=None if len(df) else "no sample was verified correct: nothing to fine-tune on",
        )

    @dg.asset_check(
        asset=key("eval_report"),
        blocking=False,
        description="Warns when this checkpoint's validation pass@1 is below the base model's "
        "(from the stored reports; ChecksResource.validation_tolerance allows a margin).",
    )
    def not_worse_than_base(
        context: dg.AssetCheckExecutionContext, storage: StorageResource, checks: ChecksResource
    ) -> dg.AssetCheckResult:
        root = storage.root(exp.name)
        name = context.partition_key
        return validation_delta_result(
            stored_report(root.of(SHARED), name, "base"), stored_report(root, name, stage), checks.validation_tolerance
        )

    @dg.asset_check(
        asset=key("eval_report"),
        blocking=False,
        description="Warns when more than ChecksResource.max_eval_unscored_rate of the evaluation's verdicts are "
        "unscored: they are left out of pass@k, so the report's numbers rest on fewer problems.",
    )
    def eval_unscored_rate(
        context: dg.AssetCheckExecutionContext, storage: StorageResource, checks: ChecksResource
    ) -> dg.AssetCheckResult:
        df = storage.root(exp.name).read_table("eval_samples", context.partition_key, stage)
        return unscored_rate_result(df, None, checks.max_eval_unscored_rate, dg.AssetCheckSeverity.WARN)

    rates = [unscored_rate_check(key, exp.name, stage, *spec) for spec in UNSCORED_RATES]
    return [sample_conservation, *rates, cap_holds, training_set_not_empty, not_worse_than_base, eval_unscored_rate]


__all__ = ["build_experiment_checks", "build_iteration_checks", "unscored_rate_result", "validation_delta_result"]
