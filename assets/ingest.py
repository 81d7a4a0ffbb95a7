"""``problem_set`` (ingest and validate a partition's problems) and ``base_model`` (build or name it)."""

import functools
import random

import dagster as dg
import polars as pl

from assets.common import base_model_path, progress_logger, run_lengths, run_prompter
from assets.partitions import problem_sets
from resources import ExperimentResource, StorageResource, TrainerResource
from restem_pipeline.data import arith
from restem_pipeline.data import problems as loaders
from restem_pipeline.data.holdout import apply_holdout
from restem_pipeline.data.schema import Problem
from restem_pipeline.generation import named_models
from restem_pipeline.generation.modeling import load_tokenizer
from restem_pipeline.pretrain import build_base_model_pinned
from restem_pipeline.stages import problems_frame
from restem_pipeline.watch import find_problem_set_file

EMBEDDED_SETS = ("arith", "arith_ood")


def resolve_problem_set(name: str, storage: StorageResource, experiment: ExperimentResource) -> loaders.LoadReport:
    """A built-in set by name, or ``<data root>/problem_sets/<name>.jsonl`` (or ``.jsonl.gz``) in any
    supported format: the file ``problem_set_sensor`` watches.

    An embedded set drawn with another data seed's base (``experiment.excluded_data_seed``) skips every
    problem that seed's runs drew or its base pretrained on (``earlier_prompts``); ``experiment.test_ids_file``
    replaces its set's test split by a held-out slice (``data/holdout.py``)."""
    if name in loaders.BUILTIN_SETS:
        sizes = (experiment.arith_train, experiment.arith_validation, experiment.arith_test)
        exclude = earlier_prompts(name, experiment) if name in EMBEDDED_SETS else None
        report = loaders.load_builtin(name, seed=experiment.problems_seed, arith_sizes=sizes, exclude=exclude)
    else:
        folder = storage.root().root / "problem_sets"
        path = find_problem_set_file(folder, name)
        if path is None:
            raise dg.Failure(
                f"problem set {name!r}: not built in ({', '.join(loaders.BUILTIN_SETS)}) "
                f"and no file {folder / name}.jsonl (or .jsonl.gz)"
            )
        report = loaders.load_jsonl_auto(path)
        report.problems = loaders.with_validation_split(report.problems, 0.1, experiment.problems_seed)
    if experiment.test_ids_file:
        try:
            report.problems = apply_holdout(report.problems, experiment.test_ids_file, name)
        except ValueError as err:
            raise dg.Failure(f"problem set {name!r}, test_ids_file: {err}") from err
    return report


def earlier_prompts(name: str, experiment: ExperimentResource) -> frozenset[str]:
    """The texts an embedded set's draw skips: with ``excluded_data_seed`` B, every problem of B's draw at
    this run's sizes and subsets (what B's runs trained on and scored) and, for ``arith``, the pretraining
    pool a base built with B trains on (``pretraining_pool(B, pool, exclude=B's ingested problems)``, as
    ``base_model`` builds it; the teacher's is the same pool). Empty when the run draws with its own seed."""
    seed = experiment.excluded_data_seed
    if seed is None:
        return frozenset()
    sizes = (experiment.arith_train, experiment.arith_validation, experiment.arith_test)
    caps = (experiment.max_train_problems, experiment.max_eval_problems)
    pool = experiment.base_model_config().pool_per_level if name == "arith" else ()
    return _earlier_prompts(name, seed, sizes, caps, pool)


@functools.lru_cache(maxsize=8)
def _earlier_prompts(
    name: str, seed: int, sizes: tuple[int, int, int], caps: tuple[int, int], pool: tuple[int, ...]
) -> frozenset[str]:
    drawn = loaders.load_builtin(name, seed=seed, arith_sizes=sizes).problems
    ingested = {p.prompt for p in subset(drawn, *caps, seed)}
    pretrained = {text for text, _ in arith.pretraining_pool(seed, pool, ingested)} if pool else set()
    return frozenset({p.prompt for p in drawn} | pretrained)


def subset(problems: list[Problem], max_train: int, max_eval: int, seed: int) -> list[Problem]:
    out = []
    for split, cap in (("train", max_train), ("validation", max_eval), ("test", max_eval)):
        part = sorted((p for p in problems if p.split == split), key=lambda p: p.id)
        out += random.Random(f"{seed}-{split}").sample(part, cap) if 0 < cap < len(part) else part
    return out


def ingested_problems(name: str, storage: StorageResource, experiment: ExperimentResource) -> list[Problem]:
    """Problem set ``name`` as its ``problem_set`` partition stored it, else resolved now (not stored):
    what a transfer evaluation reads, so a held-out set needs no partition of its own."""
    from assets.common import load_problems

    if storage.root().table_path("problems", name, "ingest").exists():
        return load_problems(storage, name)
    try:
        report = resolve_problem_set(name, storage, experiment)
    except ValueError as err:
        raise dg.Failure(f"problem set {name!r}: {err}") from err
    return subset(
        report.problems, experiment.max_train_problems, experiment.max_eval_problems, experiment.problems_seed
    )


@dg.asset(
    partitions_def=problem_sets,
    group_name="inputs",
    kinds={"polars", "parquet"},
    description="Ingest and validate the partition's problems into the normalized schema.",
)
def problem_set(
    context: dg.AssetExecutionContext, storage: StorageResource, experiment: ExperimentResource
) -> dg.MaterializeResult:
    name = context.partition_key
    report = resolve_problem_set(name, storage, experiment)
    problems = subset(
        report.problems, experiment.max_train_problems, experiment.max_eval_problems, experiment.problems_seed
    )
    if not any(p.split == "train" for p in problems):
        raise dg.Failure(f"problem set {name!r} has no train problems")
    for r in report.rejected[:20]:
        context.log.warning(f"excluded {r['id']}: {r['field']}: {r['reason']}")
    df = problems_frame(problems)
    path = storage.root().write_table(df, "problems", name, "ingest")
    counts = df.group_by(["split", "level"]).len().sort(["split", "level"])
    return dg.MaterializeResult(
        metadata={
            "problems": len(df),
            "train": int((df["split"] == "train").sum()),
            "validation": int((df["split"] == "validation").sum()),
            "test": int((df["split"] == "test").sum()),
            "rejected_invalid_gold": len(report.rejected),
            "per_split_and_level": dg.MetadataValue.md(_md(counts)),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


def _md(df: pl.DataFrame) -> str:
    from assets.common import md_table

    return md_table(df)


@dg.asset(
    partitions_def=problem_sets,
    group_name="inputs",
    pool="restem_gpu",
    kinds={"pytorch", "huggingface"},
    deps=[problem_set],
    description="The base model every ReST-EM iteration fine-tunes from: the embedded tiny Llama "
    "(tokenizer and pretraining built here, offline) or a named Hugging Face model.",
)
def base_model(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    experiment: ExperimentResource,
    trainer: TrainerResource,
) -> dg.MaterializeResult:
    """Build, convert or find the base model, then check the run's lengths on its tokenizer (before any work)."""
    name = context.partition_key
    path = base_model_path(storage, experiment, name)
    if named_models.is_named(experiment.base_model):
        try:
            _, provenance = named_models.ensure_checkpoint(experiment.base_model, storage.root().root, context.log.info)
        except named_models.NamedModelMissing as err:
            raise dg.Failure(str(err)) from err
        return dg.MaterializeResult(
            metadata={
                **{k: v for k, v in provenance.items() if isinstance(v, str | int | float)},
                "model": dg.MetadataValue.path(path),
                "prompt_style": run_prompter(storage, experiment, name).name,
                "built_here": False,
                **run_lengths(storage, experiment, trainer, name),
            }
        )
    if not experiment.uses_embedded_model:
        tok = load_tokenizer(path)  # fails loudly if the model cannot be found
        return dg.MaterializeResult(
            metadata={
                "model": path,
                "vocab_size": len(tok),
                "prompt_style": run_prompter(storage, experiment, name).name,
                "built_here": False,
                **run_lengths(storage, experiment, trainer, name),
            }
        )
    from assets.common import load_problems

    exclude = {p.prompt for p in load_problems(storage, name)}
    cfg = experiment.base_model_config()
    stats = build_base_model_pinned(
        storage.root().model_dir(name, "base"), exclude, cfg, progress_logger(context, "pretraining")
    )
    return dg.MaterializeResult(
        metadata={
            **{k: (float(v) if isinstance(v, float) else v) for k, v in stats.items()},
            "model": dg.MetadataValue.path(path),
            "built_here": True,
            "architecture": f"Llama, hidden {cfg.spec.hidden_size}, {cfg.spec.num_layers} layers",
            **run_lengths(storage, experiment, trainer, name),
        }
    )
