"""One factory for every experiment's graph: ``build_experiment(spec)`` -> its assets.

For experiment ``e`` (a file in ``experiments/``, ``restem_pipeline.experiments``), iteration t::

    e/iter_t/raw_samples      <- e/iter_{t-1}/checkpoint (base_model for t = 1; e/teacher_model when the
                                 policy is a teacher: distillation), problem_set
    e/iter_t/verified_samples <- e/iter_t/raw_samples, problem_set
    e/iter_t/training_set     <- e/iter_t/verified_samples
    e/iter_t/checkpoint       <- e/iter_t/training_set, base_model (init_from: base, ReST-EM) or
                                 e/iter_{t-1}/checkpoint (init_from: previous, ReST, t > 1), problem_set
    e/iter_t/eval_report      <- e/iter_t/checkpoint, problem_set
    e/iter_t/transfer_<set>   <- e/iter_t/checkpoint (base_model for t = 0), problem_set (per transfer set)
    e/summary                 <- base and SFT reports, every e/iter_t/eval_report and transfer report

plus ``e/teacher_model`` and ``e/teacher_eval_report`` for a teacher (group ``e_teacher``). Iteration t
is group ``e_iter_t`` (the UI's "materialize all" on it runs one iteration), the summary ``e_summary``
(``summary.build_summary``); all partitioned by problem set; tables, models and reports under the
experiment's folder of the data root (every row carries ``experiment``). The run's settings are the
deployment's resources with the experiment's ``settings`` applied (``settled``). Dagster rejects
cycles across non-time partitions, so each iteration has its own keys: the lineage graph shows the
loop unrolled, and which model each checkpoint trains from. Not covered: automation
(``automation``), the checks' bodies (``checks``).
"""

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.common import (
    base_model_path,
    fine_tune_result,
    load_problems,
    progress_logger,
    settled,
    stage_model_path,
)
from assets.ingest import base_model, problem_set
from assets.partitions import problem_sets
from assets.reports import evaluation_result
from assets.stage_results import cap_result, sample_result, verify_result
from resources import DistillResource, ExperimentResource, SamplerResource, StorageResource, TrainerResource
from restem_pipeline.experiments import DEFAULT_EXPERIMENT, Experiment
from restem_pipeline.generation.modeling import load_tokenizer
from restem_pipeline.pretrain import build_base_model_pinned

TEACHER_STAGE = "teacher"


def iteration_key(t: int, name: str, experiment: str = DEFAULT_EXPERIMENT) -> dg.AssetKey:
    return dg.AssetKey([experiment, f"iter_{t}", name])


def experiment_key(experiment: str, name: str) -> dg.AssetKey:
    return dg.AssetKey([experiment, name])


def transfer_stage(t: int, problem_set_name: str) -> str:
    return f"iter_{t}_on_{problem_set_name}"


def teacher_model_path(storage: StorageResource, exp: Experiment, distill: DistillResource, problem_set: str) -> str:
    if distill.uses_embedded_teacher:
        return stage_model_path(storage.root(exp.name), problem_set, TEACHER_STAGE)
    return distill.teacher_model


def build_teacher(exp: Experiment) -> list[dg.AssetsDefinition]:
    """``e/teacher_model`` and its evaluation: the model every E-step of a distillation samples from."""

    @dg.asset(
        key=experiment_key(exp.name, "teacher_model"),
        pool="restem_gpu",
        deps=[problem_set],
        group_name=f"{exp.name}_teacher",
        partitions_def=problem_sets,
        kinds={"pytorch", "huggingface"},
        description="The teacher: a bigger tiny Llama than the base, pretrained here on the same pool "
        "(settings.distill), or a named Hugging Face model / local path.",
    )
    def teacher_model(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        experiment: ExperimentResource,
        distill: DistillResource,
    ) -> dg.MaterializeResult:
        settings, teacher = settled(experiment, exp.overrides("experiment")), settled(distill, exp.overrides("distill"))
        name = context.partition_key
        path = teacher_model_path(storage, exp, teacher, name)
        if not teacher.uses_embedded_teacher:
            try:
                tok = load_tokenizer(path)
            except (OSError, ValueError) as err:
                raise dg.Failure(f"teacher_model {path!r} cannot be loaded: {err}") from err
            return dg.MaterializeResult(metadata={"model": path, "vocab_size": len(tok), "built_here": False})
        exclude = {p.prompt for p in load_problems(storage, name)}
        cfg = teacher.teacher_config(settings.base_model_config())
        stats = build_base_model_pinned(path, exclude, cfg, progress_logger(context, "pretraining teacher"))
        return dg.MaterializeResult(
            metadata={
                **{k: (float(v) if isinstance(v, float) else v) for k, v in stats.items()},
                "model": dg.MetadataValue.path(path),
                "built_here": True,
                "architecture": f"Llama, hidden {cfg.spec.hidden_size}, {cfg.spec.num_layers} layers",
            }
        )

    @dg.asset(
        key=experiment_key(exp.name, "teacher_eval_report"),
        pool="restem_gpu",
        deps=[teacher_model, problem_set],
        group_name=f"{exp.name}_teacher",
        partitions_def=problem_sets,
        kinds={"pytorch", "duckdb"},
        description="Held-out evaluation of the teacher itself (the ceiling the student is distilled towards).",
    )
    def teacher_eval_report(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        experiment: ExperimentResource,
        sampler: SamplerResource,
        distill: DistillResource,
    ) -> dg.MaterializeResult:
        settings, teacher = settled(experiment, exp.overrides("experiment")), settled(distill, exp.overrides("distill"))
        model = teacher_model_path(storage, exp, teacher, context.partition_key)
        return evaluation_result(context, storage, settings, sampler, TEACHER_STAGE, model, storage.root(exp.name))

    return [teacher_model, teacher_eval_report]


def build_iteration(exp: Experiment, t: int) -> list[dg.AssetsDefinition]:
    """The assets of iteration ``t`` (1-based) of ``exp``: E-step, reward, cap, M-step, evaluations."""
    stage, group = f"iter_{t}", f"{exp.name}_iter_{t}"  # one group per iteration: "materialize all" runs one
    if exp.distills:
        policy_dep, sampled_from = experiment_key(exp.name, "teacher_model"), "the teacher"
    elif t == 1:
        policy_dep, sampled_from = base_model.key, "the base model"
    else:
        policy_dep, sampled_from = iteration_key(t - 1, "checkpoint", exp.name), f"checkpoint {t - 1}"
    continues = exp.continues and t > 1  # ReST: fine-tune checkpoint t-1, not the base

    @dg.asset(
        key=iteration_key(t, "raw_samples", exp.name),
        pool="restem_gpu",
        deps=[policy_dep, problem_set.key],
        group_name=group,
        partitions_def=problem_sets,
        kinds={"pytorch", "parquet"},
        description=f"E-step {t}: N samples per train problem from {sampled_from} (top-k 40, T 0.7).",
    )
    def raw_samples(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        experiment: ExperimentResource,
        sampler: SamplerResource,
        distill: DistillResource,
    ) -> dg.MaterializeResult:
        settings = settled(experiment, exp.overrides("experiment"))
        name, root = context.partition_key, storage.root(exp.name)
        if exp.distills:
            model = teacher_model_path(storage, exp, settled(distill, exp.overrides("distill")), name)
        elif t == 1:
            model = base_model_path(storage, settings, name)
        else:
            model = stage_model_path(root, name, f"iter_{t - 1}")
        params = settings.e_step_params(t)
        return sample_result(context, storage, root, settings, sampler, stage, model, params, exp.train_fraction)

    @dg.asset(
        key=iteration_key(t, "verified_samples", exp.name),
        pool="restem_sandbox",
        deps=[raw_samples, problem_set.key],
        group_name=group,
        partitions_def=problem_sets,
        kinds={"duckdb", "parquet"},
        description=f"Reward {t}: every raw sample scored with a status (correct / incorrect / "
        "unparseable / invalid gold / timeout; code: pass / fail / ... / infra error).",
    )
    def verified_samples(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        experiment: ExperimentResource,
        duckdb: DuckDBResource,
    ) -> dg.MaterializeResult:
        settings = settled(experiment, exp.overrides("experiment"))
        return verify_result(context, storage, storage.root(exp.name), settings, duckdb, stage)

    @dg.asset(
        key=iteration_key(t, "training_set", exp.name),
        deps=[verified_samples],
        group_name=group,
        partitions_def=problem_sets,
        kinds={"duckdb", "parquet"},
        description=f"Filter {t}: correct samples only, at most max_per_problem per problem (seeded).",
    )
    def training_set(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        experiment: ExperimentResource,
        duckdb: DuckDBResource,
    ) -> dg.MaterializeResult:
        settings = settled(experiment, exp.overrides("experiment"))
        return cap_result(context, storage.root(exp.name), settings, duckdb, stage, settings.seed * 1000 + t)

    @dg.asset(
        key=iteration_key(t, "checkpoint", exp.name),
        pool="restem_gpu",
        deps=[
            training_set,
            iteration_key(t - 1, "checkpoint", exp.name) if continues else base_model.key,
            problem_set.key,
        ],
        group_name=group,
        partitions_def=problem_sets,
        kinds={"pytorch", "huggingface"},
        description=f"M-step {t}: fine-tune checkpoint {t - 1} (ReST, init_from=previous) on training set {t}."
        if continues
        else f"M-step {t}: fine-tune the BASE model (not checkpoint {t - 1}) on training set {t}.",
    )
    def checkpoint(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        experiment: ExperimentResource,
        trainer: TrainerResource,
    ) -> dg.MaterializeResult:
        settings, training = (
            settled(experiment, exp.overrides("experiment")),
            settled(trainer, exp.overrides("trainer")),
        )
        name, root = context.partition_key, storage.root(exp.name)
        rows = root.read_table("training_set", name, stage)
        if rows.is_empty():
            raise dg.Failure(f"training set {exp.name}/{stage} of {name} is empty: no sample was verified correct")
        init = stage_model_path(root, name, f"iter_{t - 1}") if continues else None  # None: the base model
        return fine_tune_result(
            context, storage, settings, training, rows, stage, settings.seed + t,
            init_from=init, init_mode=exp.init_from, root=root,
        )  # fmt: skip

    @dg.asset(
        key=iteration_key(t, "eval_report", exp.name),
        pool="restem_gpu",
        deps=[checkpoint, problem_set.key],
        group_name=group,
        partitions_def=problem_sets,
        kinds={"pytorch", "duckdb"},
        description=f"Held-out evaluation of checkpoint {t}: pass@1 (greedy), pass@K, maj@K per level.",
    )
    def eval_report(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        experiment: ExperimentResource,
        sampler: SamplerResource,
    ) -> dg.MaterializeResult:
        settings, root = settled(experiment, exp.overrides("experiment")), storage.root(exp.name)
        model = stage_model_path(root, context.partition_key, stage)
        return evaluation_result(context, storage, settings, sampler, stage, model, root)

    return [raw_samples, verified_samples, training_set, checkpoint, eval_report] + [
        build_transfer(exp, t, target) for target in exp.transfer
    ]


def build_transfer(exp: Experiment, t: int, target: str) -> dg.AssetsDefinition:
    """Checkpoint t of ``exp`` (t = 0: the base model) evaluated on problem set ``target`` (ingested as
    its own partition), with this partition's prompts."""

    @dg.asset(
        key=iteration_key(t, f"transfer_{target}", exp.name),
        pool="restem_gpu",
        deps=[iteration_key(t, "checkpoint", exp.name) if t else base_model.key, problem_set.key],
        group_name=f"{exp.name}_iter_{max(t, 1)}",
        partitions_def=problem_sets,
        kinds={"pytorch", "duckdb"},
        description=f"Transfer: {f'checkpoint {t}' if t else 'the base model'} evaluated on problem set "
        f"{target!r} (its problem_set partition if stored, else the set as resolved now), with this partition's "
        "prompts.",
    )
    def transfer_report(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        experiment: ExperimentResource,
        sampler: SamplerResource,
    ) -> dg.MaterializeResult:
        settings, root = settled(experiment, exp.overrides("experiment")), storage.root(exp.name)
        name = context.partition_key
        model = stage_model_path(root, name, f"iter_{t}") if t else base_model_path(storage, settings, name)
        return evaluation_result(
            context, storage, settings, sampler, transfer_stage(t, target), model, root, problems_of=target
        )

    return transfer_report


def iteration_keys(exp: Experiment, t: int) -> list[dg.AssetKey]:
    """The keys of iteration ``t`` of ``exp`` (with the teacher and base transfer evaluations for t = 1)."""
    names = ["raw_samples", "verified_samples", "training_set", "checkpoint", "eval_report"]
    keys = [iteration_key(t, n, exp.name) for n in [*names, *(f"transfer_{s}" for s in exp.transfer)]]
    if t == 1:
        keys += [iteration_key(0, f"transfer_{s}", exp.name) for s in exp.transfer]
        if exp.distills:
            keys += [experiment_key(exp.name, "teacher_model"), experiment_key(exp.name, "teacher_eval_report")]
    return keys


def build_experiment(exp: Experiment) -> list[dg.AssetsDefinition]:
    """Every asset of ``exp`` but its summary (``summary.build_summary``)."""
    assets = build_teacher(exp) if exp.distills else []
    for t in range(1, exp.iterations + 1):
        assets += build_iteration(exp, t)
    return assets + [build_transfer(exp, 0, target) for target in exp.transfer]


__all__ = ["build_experiment", "iteration_key", "iteration_keys", "experiment_key", "settled", "transfer_stage"]
