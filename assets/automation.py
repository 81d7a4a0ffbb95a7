"""Automation: new problem-set files become partitions and runs, a schedule re-evaluates, early stopping.

- ``problem_set_sensor`` (running by default, every 15 s): a new or changed ``*.jsonl`` / ``*.jsonl.gz``
  under ``<data root>/problem_sets/`` is validated with the project loaders; a valid file becomes a
  ``problem_set`` partition (its stem) and a run of ``restem_iteration_1`` (the default experiment's
  first iteration); an invalid one gets a message
  naming the file, the line and the field, and nothing else, until its content changes.
- ``evaluation_schedule`` (stopped by default; cron from ``RESTEM_SCHEDULE_CRON``, default ``0 3 * * *``):
  for every partition, re-runs the evaluation reports of the models already built.
- ``early_stopping_sensor`` (running by default): for every experiment ``e``, when ``e/iter_t/eval_report``
  of a partition is materialized, launches ``e_iteration_{t+1}`` only if validation pass@1 rose over iteration t-1 (the
  base model for t = 1) by more than ``RESTEM_MIN_IMPROVEMENT``; every decision is an observation on
  ``iter_t/eval_report`` and the launched run carries the numbers as ``restem/*`` tags. Nothing in the
  assets reads the decision: materializing iteration t+1 by hand always works.

The decisions themselves (file scanning, the continue rule) are framework-free in ``restem_pipeline.watch``.
Not covered: what the iterations compute (``experiment``), the settings of the runs (``resources``).
"""

import json
import os
from dataclasses import dataclass

import dagster as dg

from assets.baselines import base_eval_report, sft_baseline, sft_eval_report
from assets.experiment import iteration_key, iteration_keys
from assets.ingest import base_model, problem_set
from assets.partitions import problem_sets
from assets.summary import summary_key
from resources import StorageResource
from restem_pipeline.experiments import DEFAULT_EXPERIMENT, Experiment
from restem_pipeline.watch import (
    MIN_IMPROVEMENT_ENV,
    Decision,
    min_improvement_from_env,
    next_iteration_decision,
    scan_problem_sets,
)

SCHEDULE_CRON_ENV = "RESTEM_SCHEDULE_CRON"
DEFAULT_SCHEDULE_CRON = "0 3 * * *"
VALIDATION_METRIC = "validation/pass@1"


def schedule_cron(raw: str | None) -> str:
    """``raw`` (``RESTEM_SCHEDULE_CRON``; empty means the default), checked the way Dagster checks a
    schedule's cron: 5 fields, or an alias such as ``@daily``."""
    raw = (raw or "").strip() or DEFAULT_SCHEDULE_CRON
    try:
        dg.ScheduleDefinition(name="restem_cron_check", cron_schedule=raw, job_name="restem_cron_check")
    except dg.DagsterInvalidDefinitionError:
        raise ValueError(
            f"{SCHEDULE_CRON_ENV} must be a cron expression of 5 fields (minute hour day month weekday), "
            f"e.g. {DEFAULT_SCHEDULE_CRON!r}, got {raw!r}"
        ) from None
    return raw


def iteration_job_name(t: int, experiment: str = DEFAULT_EXPERIMENT) -> str:
    return f"{experiment}_iteration_{t}"


def iteration_jobs(exp: Experiment) -> list:
    """One job per iteration of ``exp``; the first also ingests, builds the base model and evaluates it."""
    summary = summary_key(exp.name)
    first = dg.AssetSelection.assets(problem_set, base_model, base_eval_report, summary, *iteration_keys(exp, 1))
    jobs = [
        dg.define_asset_job(
            iteration_job_name(1, exp.name),
            selection=first,
            description=f"{exp.name}: ingest the problem set, build and evaluate the base model, run iteration 1.",
        )
    ]
    for t in range(2, exp.iterations + 1):
        jobs.append(
            dg.define_asset_job(
                iteration_job_name(t, exp.name),
                selection=dg.AssetSelection.assets(*iteration_keys(exp, t), summary),
                description=f"{exp.name}: iteration {t}.",
            )
        )
    return jobs


def evaluation_job(experiments: list[Experiment]):
    keys = [base_eval_report.key, sft_eval_report.key]
    for exp in experiments:
        keys += [iteration_key(t, "eval_report", exp.name) for t in range(1, exp.iterations + 1)]
        keys.append(summary_key(exp.name))
    return dg.define_asset_job(
        "restem_evaluation",
        selection=dg.AssetSelection.assets(*keys),
        description="Re-run the evaluation reports of models already built (what evaluation_schedule requests).",
    )


# --- new problem-set files -----------------------------------------------------------------------


def build_problem_set_sensor(first_job) -> dg.SensorDefinition:
    @dg.sensor(
        name="problem_set_sensor",
        job=first_job,
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="A new or changed <data root>/problem_sets/<name>.jsonl(.gz) that loads becomes partition "
        "<name> and a run of iteration 1; a file that does not load is reported (file, line, field) once.",
    )
    def problem_set_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
        folder = storage.root().root / "problem_sets"
        scan = scan_problem_sets(folder, context.cursor)
        added: list[str] = []
        runs: list[dg.RunRequest] = []
        errors: list[str] = []
        for v in scan.verdicts:
            if not v.valid:
                context.log.error(f"problem-set file rejected, no partition and no run: {v.error}")
                errors.append(f"rejected {v.error}")
                continue
            if v.name not in added and not context.instance.has_dynamic_partition(problem_sets.name, v.name):
                added.append(v.name)
            context.log.info(f"{v.path.name} (sha256 {v.fingerprint.short}): running iteration 1 of {v.name!r}")
            runs.append(
                dg.RunRequest(
                    partition_key=v.name,
                    run_key=f"{v.name}:{v.fingerprint.short}",
                    tags={
                        "restem/trigger": "problem_set_sensor",
                        "restem/file": v.path.name,
                        "restem/fingerprint": v.fingerprint.short,
                    },
                )
            )
        skip = None
        if not runs:
            later = f"; {scan.pending} file(s) left for the next tick" if scan.pending else ""
            skip = "\n".join(errors) if errors else f"no new or changed problem-set file in {folder}{later}"
        return dg.SensorResult(
            run_requests=runs,
            skip_reason=skip,
            dynamic_partitions_requests=[problem_sets.build_add_request(added)] if added else [],
            cursor=scan.cursor,
        )

    return problem_set_sensor


# --- early stopping ------------------------------------------------------------------------------


def latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), 1)
    return records.records[0] if records.records else None


def validation_reward(record: dg.EventLogRecord) -> float | None:
    mat = record.asset_materialization
    value = mat.metadata.get(VALIDATION_METRIC) if mat else None
    return float(value.value) if value is not None and isinstance(value.value, int | float) else None


def next_iteration_is_stale(instance: dg.DagsterInstance, exp: str, t: int, partition: str) -> bool:
    """True unless iter_{t+1}/raw_samples was drawn after the latest checkpoint t (then it has already run)."""
    raw = latest_materialization(instance, iteration_key(t + 1, "raw_samples", exp), partition)
    ckpt = latest_materialization(instance, iteration_key(t, "checkpoint", exp), partition)
    return raw is None or ckpt is None or raw.storage_id < ckpt.storage_id


def decision_tags(d: Decision, t: int, experiment: str) -> dict[str, str]:
    return {
        "restem/trigger": "early_stopping_sensor",
        "restem/experiment": experiment,
        "restem/decision": d.label,
        "restem/after_iteration": str(t),
        "restem/val_prev": f"{d.val_prev:.4f}",
        "restem/val_curr": f"{d.val_curr:.4f}",
        "restem/delta": f"{d.delta:+.4f}",
        "restem/margin": f"{d.margin:.4f}",
    }


def decision_metadata(d: Decision, compared_with: dg.AssetKey, next_run: str) -> dict:
    numbers = {"val_prev": d.val_prev, "val_curr": d.val_curr, "delta": d.delta, "margin": d.margin}
    return {
        "restem/decision": d.label,
        **{f"restem/{k}": dg.MetadataValue.float(v) for k, v in numbers.items() if v == v},  # NaN left out
        "restem/compared_with": compared_with.to_user_string(),
        "restem/next_iteration": next_run,
        "restem/reason": d.reason,
    }


@dataclass(frozen=True)
class _Outcome:
    decision: Decision
    observation: dg.AssetObservation
    run: dg.RunRequest | None
    note: str


def _decide(
    instance: dg.DagsterInstance, partition: str, exp: Experiment, t: int, margin: float, curr: dg.EventLogRecord
) -> _Outcome | str:
    """The decision after iteration ``t``'s evaluation, or why it has to wait."""
    prev_key = base_eval_report.key if t == 1 else iteration_key(t - 1, "eval_report", exp.name)
    prev = latest_materialization(instance, prev_key, partition)
    where = f"{partition}/{exp.name}"
    if prev is None:
        return f"{where}: iteration {t} waits for {prev_key.to_user_string()} to compare with"
    d = next_iteration_decision(t, exp.iterations, validation_reward(prev), validation_reward(curr), margin)
    run = None
    if not d.continue_:
        next_run = "not requested"
    elif next_iteration_is_stale(instance, exp.name, t, partition):
        next_run = f"requested: {iteration_job_name(t + 1, exp.name)}"
        run = dg.RunRequest(
            job_name=iteration_job_name(t + 1, exp.name),
            partition_key=partition,
            run_key=f"early_stopping:{partition}:{exp.name}:iter_{t}:{curr.storage_id}",
            tags=decision_tags(d, t, exp.name),
        )
    else:
        next_run = f"not requested: iteration {t + 1} already sampled from checkpoint {t}"
    observation = dg.AssetObservation(
        asset_key=iteration_key(t, "eval_report", exp.name),
        partition=partition,
        metadata=decision_metadata(d, prev_key, next_run),
    )
    return _Outcome(d, observation, run, f"{where}: after iteration {t}: {d.reason} (next iteration {next_run})")


def build_early_stopping_sensor(experiments: list[Experiment], margin: float, jobs: list) -> dg.SensorDefinition:
    @dg.sensor(
        name="early_stopping_sensor",
        jobs=jobs or None,
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"For every experiment, after <experiment>/iter_t/eval_report: run iteration t+1 only if "
        f"validation pass@1 rose by more than {margin:.4f} ({MIN_IMPROVEMENT_ENV}); each decision is an "
        "observation on that eval_report.",
    )
    def early_stopping_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        decided: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        runs, events, notes = [], [], []
        todo = [
            (p, e, t)
            for p in context.instance.get_dynamic_partitions(problem_sets.name)
            for e in experiments
            for t in range(1, e.iterations + 1)
        ]
        for partition, exp, t in todo:
            curr = latest_materialization(context.instance, iteration_key(t, "eval_report", exp.name), partition)
            slot = f"{partition}/{exp.name}/iter_{t}"
            if curr is None or decided.get(slot) == curr.storage_id:
                continue  # nothing evaluated, or already decided for this materialization
            outcome = _decide(context.instance, partition, exp, t, margin, curr)
            if isinstance(outcome, str):
                notes.append(outcome)
                continue
            decided[slot] = curr.storage_id
            events.append(outcome.observation)
            runs += [outcome.run] if outcome.run else []
            notes.append(outcome.note)
            context.log.info(outcome.note)
        skip = None if runs else ("\n".join(notes) or "no new evaluation report to decide on")
        return dg.SensorResult(run_requests=runs, skip_reason=skip, asset_events=events, cursor=json.dumps(decided))

    return early_stopping_sensor


# --- scheduled evaluation ------------------------------------------------------------------------


def evaluations_to_rerun(instance: dg.DagsterInstance, experiments: list[Experiment]) -> dict[str, list[dg.AssetKey]]:
    """Per partition, the eval reports whose model exists (base, SFT, every experiment's checkpoints),
    and every experiment's summary."""
    models = [(base_model.key, base_eval_report.key), (sft_baseline.key, sft_eval_report.key)]
    for exp in experiments:
        models += [
            (iteration_key(t, "checkpoint", exp.name), iteration_key(t, "eval_report", exp.name))
            for t in range(1, exp.iterations + 1)
        ]
    partitions = set(instance.get_dynamic_partitions(problem_sets.name))
    out: dict[str, list[dg.AssetKey]] = {}
    for model_key, report_key in models:
        for partition in sorted(instance.get_materialized_partitions(model_key) & partitions):
            out.setdefault(partition, []).append(report_key)
    for keys in out.values():  # every summary compares the base model too: all are refreshed
        keys += [summary_key(e.name) for e in experiments]
    return out


def build_evaluation_schedule(job, experiments: list[Experiment], cron: str):
    @dg.schedule(
        name="evaluation_schedule",
        cron_schedule=cron,
        job=job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Re-run, for every problem set, the evaluation reports of the models already built "
        f"(cron {cron!r} from {SCHEDULE_CRON_ENV}).",
    )
    def evaluation_schedule(context: dg.ScheduleEvaluationContext):
        todo = evaluations_to_rerun(context.instance, experiments)
        if not todo:
            return dg.SkipReason("no problem set has a built model to evaluate yet")
        when = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "now"
        return [
            dg.RunRequest(
                run_key=f"evaluation:{partition}:{when}",
                partition_key=partition,
                asset_selection=keys,
                tags={"restem/trigger": "evaluation_schedule"},
            )
            for partition, keys in sorted(todo.items())
        ]

    return evaluation_schedule


@dataclass(frozen=True)
class Automation:
    jobs: list
    sensors: list
    schedules: list


def build_automation(
    experiments: list[Experiment], cron: str | None = None, min_improvement: float | None = None
) -> Automation:
    """Jobs, sensors and the schedule for ``experiments``; settings from the environment
    (``RESTEM_SCHEDULE_CRON``, ``RESTEM_MIN_IMPROVEMENT``) unless given. A new problem-set file starts
    iteration 1 of the default experiment (``restem``; the first by name when there is none)."""
    cron = schedule_cron(os.environ.get(SCHEDULE_CRON_ENV) if cron is None else cron)
    raw_margin = os.environ.get(MIN_IMPROVEMENT_ENV) if min_improvement is None else str(min_improvement)
    margin = min_improvement_from_env(raw_margin)
    per_exp = {e.name: iteration_jobs(e) for e in experiments}
    first = per_exp.get(DEFAULT_EXPERIMENT, per_exp[experiments[0].name])[0]
    later = [j for jobs in per_exp.values() for j in jobs[1:]]
    eval_job = evaluation_job(experiments)
    return Automation(
        jobs=[*(j for jobs in per_exp.values() for j in jobs), eval_job],
        sensors=[build_problem_set_sensor(first), build_early_stopping_sensor(experiments, margin, later)],
        schedules=[build_evaluation_schedule(eval_job, experiments, cron)],
    )
