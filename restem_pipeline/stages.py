"""One function per ReST-EM stage, framework-free: the Dagster assets and the benchmarks call these.

E-step: ``draw_samples`` (N completions per train problem from the previous model) ->
``verify_samples`` (binary reward with a status) -> ``cap_samples`` (correct only, at most
``cap`` per problem, seeded; what was dropped and why is kept). ``draw_samples_resumable`` is the
E-step in committed shards (``shards``): a killed run resumes and every sample id ends up exactly
once. M-step: ``fine_tune`` (from the base model, or the previous checkpoint for ReST; loss on
completion tokens). ``build_base_model`` pretrains the embedded tiny Llama.
Each takes and returns polars frames; storage and reporting are the caller's.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import polars as pl

from restem_pipeline.data import arith
from restem_pipeline.data.prompts import TEXT_PROMPTS, Prompter, template_for
from restem_pipeline.data.schema import Problem
from restem_pipeline.generation.modeling import (
    TinyLlamaSpec,
    context_length,
    count_parameters,
    load_model,
    load_tokenizer,
    tiny_llama,
    train_tokenizer,
)
from restem_pipeline.generation.sampling import Sampler, SamplingParams
from restem_pipeline.rewards.verdicts import verdicts_for
from restem_pipeline.storage import shards
from restem_pipeline.training.finetune import (
    TrainConfig,
    TrainStats,
    held_out_mask,
    save_checkpoint,
    tokenize_pairs,
)
from restem_pipeline.training.loop import train_causal_lm

Progress = Callable[[int, int], None]

RAW_SCHEMA = {
    "sample_id": pl.String,
    "problem_id": pl.String,
    "sample_index": pl.Int64,
    "level": pl.Int64,
    "completion": pl.String,
    "num_tokens": pl.Int64,
    "finished": pl.Boolean,
    "model": pl.String,
    "seed": pl.Int64,
    "prompt_style": pl.String,
}


SAMPLE_ID_SCHEME = "sha1(f'{problem_set}|{stage}|{problem_id}|{index}')[:16]"


def sample_id(problem_set: str, stage: str, problem_id: str, index: int) -> str:
    """Stable across re-runs: the same (set, stage, problem, index) always gets the same id."""
    return hashlib.sha1(f"{problem_set}|{stage}|{problem_id}|{index}".encode()).hexdigest()[:16]


def problems_frame(problems: list[Problem]) -> pl.DataFrame:
    return pl.DataFrame(
        [p.to_row() for p in problems],
        schema={
            "id": pl.String,
            "domain": pl.String,
            "prompt": pl.String,
            "source": pl.String,
            "split": pl.String,
            "answer": pl.String,
            "tests": pl.String,
            "level": pl.Int64,
            "solution": pl.String,
            "entry_point": pl.String,
        },
    )


def problems_from_frame(df: pl.DataFrame) -> list[Problem]:
    return [Problem.from_row(r) for r in df.iter_rows(named=True)]


@dataclass(frozen=True)
class BaseModelConfig:
    spec: TinyLlamaSpec = field(default_factory=TinyLlamaSpec)
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=900, batch_size=64, learning_rate=3e-3))
    pool_per_level: tuple[int, ...] = arith.POOL_PER_LEVEL
    seed: int = 0


def build_base_model(
    out_dir: Path,
    exclude_texts: set[str],
    cfg: BaseModelConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Train a tokenizer and pretrain the tiny Llama on worked problems disjoint from the splits."""
    t0 = time.perf_counter()
    pool = arith.pretraining_pool(cfg.seed, cfg.pool_per_level, exclude_texts)
    tpl = template_for(Problem("x", "math", "x", "arith", answer="0"))
    prompts = [tpl.render(q) for q, _ in pool]
    targets = [tpl.target(a) for _, a in pool]
    tokenizer = train_tokenizer([p + t for p, t in zip(prompts, targets, strict=True)], cfg.spec.vocab_size)
    model = tiny_llama(cfg.spec, tokenizer, cfg.seed)
    examples = tokenize_pairs(tokenizer, prompts, targets, cfg.pretrain.max_length)
    stats = train_causal_lm(model, tokenizer, examples, cfg.pretrain, progress)
    save_checkpoint(model, tokenizer, out_dir)
    return {
        "parameters": count_parameters(model),
        "pool_problems": len(pool),
        "vocab_size": len(tokenizer),
        "steps": stats.steps,
        "tokens": stats.tokens,
        "tokens_per_s": stats.tokens_per_s,
        "dtype": stats.dtype,
        "first_loss": stats.first_loss,
        "final_loss": stats.final_loss,
        "seconds": time.perf_counter() - t0,
    }


def draw_samples(
    sampler: Sampler,
    problems: list[Problem],
    params: SamplingParams,
    problem_set: str,
    stage: str,
    model_name: str,
    prompter: Prompter = TEXT_PROMPTS,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """``params.n`` samples per problem, one row each, with stable ``sample_id``s."""
    prompts = [prompter.render(p) for p in problems]
    if progress:
        progress(0, len(prompts) * params.n)  # the phase starts now: its elapsed time counts from here
    outs = sampler.generate(prompts, params, progress)
    rows = [
        {
            "sample_id": sample_id(problem_set, stage, p.id, j),
            "problem_id": p.id,
            "sample_index": j,
            "level": p.level,
            "completion": c.text,
            "num_tokens": c.num_tokens,
            "finished": c.finished,
            "model": model_name,
            "seed": params.seed,
            "prompt_style": prompter.name,
        }
        for p, row in zip(problems, outs, strict=True)
        for j, c in enumerate(row)
    ]
    return pl.DataFrame(rows, schema=RAW_SCHEMA)


def sampling_fingerprint(
    problems: list[Problem],
    params: SamplingParams,
    problem_set: str,
    stage: str,
    model_name: str,
    shard_size: int,
    prompter: Prompter,
) -> dict:
    """What E-step shards belong to: any change here means old shards are discarded, never mixed in.

    The sampler's backend is not part of it: shards from two backends are samples of the same model
    with the same settings, so a run resumed on another backend stays exactly-once (not bit-identical).
    """
    ordered = sorted(problems, key=lambda p: p.id)
    rendered = (f"{p.id}\x1f{p.level}\x1f{prompter.render(p)}" for p in ordered)
    return {
        "table": "raw_samples",
        "problem_set": problem_set,
        "stage": stage,
        "sampling": asdict(params),
        "shard_size": shard_size,
        "shard_seed_scheme": shards.SHARD_SEED_SCHEME,
        "problems": {"count": len(ordered), "ids_sha256": shards.digest_of(p.id for p in ordered)},
        "prompts_sha256": shards.digest_of(rendered),
        "prompt_style": prompter.name,
        "model": {"name": model_name, **shards.model_identity(model_name)},
        "sample_id_scheme": SAMPLE_ID_SCHEME,
        "sample_id_probe": sample_id(problem_set, stage, "probe", 0),
        "schema": {k: str(v) for k, v in RAW_SCHEMA.items()},
    }


def draw_samples_resumable(
    sampler: Sampler,
    problems: list[Problem],
    params: SamplingParams,
    problem_set: str,
    stage: str,
    model_name: str,
    shard_dir: str | Path,
    shard_size: int = 64,
    prompter: Prompter = TEXT_PROMPTS,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[pl.DataFrame, shards.ShardStats]:
    """``draw_samples`` in shards of ``shard_size`` problems committed under ``shard_dir``: (frame, stats).

    Shard ``i`` is sampled with seed ``shard_seed(params.seed, i)`` (its rows' ``seed``), so a resumed
    run returns the same table as an uninterrupted one. The result is checked exactly-once; the caller
    stores it, then calls ``shards.remove_shard_dir(shard_dir)``.
    """
    by_id = {p.id: p for p in problems}
    plan = shards.plan_shards([p.id for p in problems], shard_size, params.seed)
    fingerprint = sampling_fingerprint(problems, params, problem_set, stage, model_name, shard_size, prompter)

    def sample_shard(shard: shards.Shard, prog: Progress | None) -> pl.DataFrame:
        batch = [by_id[i] for i in shard.problem_ids]
        return draw_samples(
            sampler, batch, replace(params, seed=shard.seed), problem_set, stage, model_name, prompter, prog
        )

    return shards.run_shards(
        shard_dir,
        fingerprint,
        plan,
        params.n,
        lambda pid, j: sample_id(problem_set, stage, pid, j),
        sample_shard,
        RAW_SCHEMA,
        progress,
        log,
    )


def verify_samples(
    raw: pl.DataFrame, problems: list[Problem], timeout_s: float = 5.0, workers: int = 1
) -> pl.DataFrame:
    """``raw`` plus ``status``, ``reward`` (1/0, or null when unscored) and the extracted ``answer``."""
    by_id = {p.id: p for p in problems}
    missing = set(raw["problem_id"].unique().to_list()) - by_id.keys()
    if missing:
        raise ValueError(f"{len(missing)} samples refer to unknown problems, e.g. {sorted(missing)[:3]}")
    verdicts = verdicts_for([by_id[i] for i in raw["problem_id"]], raw["completion"].to_list(), timeout_s, workers)
    return raw.with_columns(
        pl.Series("status", [v.status for v in verdicts], dtype=pl.String),
        pl.Series("reward", [v.reward for v in verdicts], dtype=pl.Float64),
        pl.Series("answer", [v.answer for v in verdicts], dtype=pl.String),
        pl.Series("verdict_detail", [v.detail for v in verdicts], dtype=pl.String),
    )


def cap_samples(verified: pl.DataFrame, cap: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept, dropped): correct samples, at most ``cap`` per problem chosen with a seeded shuffle.

    ``dropped`` has every other sample with a ``drop_reason``: its status when not correct
    (unscored ones included, so they are never trained on) or ``over_cap``.
    """
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    rng = random.Random(seed)
    keep_ids: set[str] = set()
    correct = verified.filter(pl.col("reward") == 1.0)
    for _, grp in correct.group_by("problem_id", maintain_order=True):
        ids = sorted(grp["sample_id"].to_list())
        rng.shuffle(ids)
        keep_ids.update(ids[:cap])
    kept = verified.filter(pl.col("sample_id").is_in(list(keep_ids))).sort(["problem_id", "sample_index"])
    dropped = verified.filter(~pl.col("sample_id").is_in(list(keep_ids))).with_columns(
        pl.when(pl.col("reward") == 1.0).then(pl.lit("over_cap")).otherwise(pl.col("status")).alias("drop_reason")
    )
    return kept, dropped


def training_pairs(
    problems: list[Problem], rows: pl.DataFrame, text_col: str, prompter: Prompter = TEXT_PROMPTS
) -> tuple[list[str], list[str]]:
    by_id = {p.id: p for p in problems}
    prompts, targets = [], []
    for pid, text in zip(rows["problem_id"], rows[text_col], strict=True):
        prompts.append(prompter.render(by_id[pid]))
        targets.append(prompter.target(by_id[pid], text))
    return prompts, targets


def human_solution_rows(problems: list[Problem]) -> pl.DataFrame:
    """The SFT baseline's training set: each train problem's reference solution, once."""
    rows = [
        {"problem_id": p.id, "level": p.level, "completion": p.solution}
        for p in problems
        if p.split == "train" and p.solution
    ]
    return pl.DataFrame(rows, schema={"problem_id": pl.String, "level": pl.Int64, "completion": pl.String})


def fine_tune(
    init_from: str | Path,
    problems: list[Problem],
    rows: pl.DataFrame,
    out_dir: Path,
    cfg: TrainConfig,
    prompter: Prompter = TEXT_PROMPTS,
    progress: Callable[[int, int, float], None] | None = None,
    device: str = "cpu",
    validation_fraction: float = 0.0,
    on_validation: Callable[[int, float], None] | None = None,
) -> TrainStats:
    """Fine-tune the model at ``init_from`` on ``rows`` and save it.

    ``init_from`` is the base for ReST-EM, the previous checkpoint for ReST. With
    ``validation_fraction`` > 0, that fraction of the *problems* in ``rows`` (all their rows, seeded by
    ``cfg.seed``) is held out of training and its loss is reported every ``cfg.eval_every`` steps and at
    the end: a held-out loss on the same kind of text as the training rows, on problems never trained on.
    """
    tokenizer = load_tokenizer(init_from)
    model = load_model(init_from, device=device)
    held = held_out_mask(rows["problem_id"].to_list(), validation_fraction, cfg.seed)
    val_rows = rows.filter(pl.Series(held, dtype=pl.Boolean))
    train_rows = rows.filter(~pl.Series(held, dtype=pl.Boolean))
    prompts, targets = training_pairs(problems, train_rows, "completion", prompter)
    # a chat prompt opens with the template's own tokens; only a text prompt gets the tokenizer's BOS
    add_bos = prompter.style == "text"
    limit = cfg.max_length or context_length(init_from) or 0  # 0: the model's context
    examples = tokenize_pairs(tokenizer, prompts, targets, limit, add_bos)
    validation = None
    if len(val_rows):
        v_prompts, v_targets = training_pairs(problems, val_rows, "completion", prompter)
        validation = tokenize_pairs(tokenizer, v_prompts, v_targets, limit, add_bos)
    stats = train_causal_lm(model, tokenizer, examples, cfg, progress, validation, on_validation)
    save_checkpoint(model, tokenizer, out_dir)
    return stats


def weight_change(a: str | Path, b: str | Path) -> float:
    """Relative L2 distance between two checkpoints' parameters (0.0 means identical)."""
    ma, mb = load_model(a), load_model(b)
    num = sum(float((pa - pb).detach().pow(2).sum()) for pa, pb in zip(ma.parameters(), mb.parameters(), strict=True))
    den = sum(float(pa.detach().pow(2).sum()) for pa in ma.parameters())
    return (num / den) ** 0.5 if den else 0.0
