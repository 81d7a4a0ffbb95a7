"""Held-out evaluation: greedy pass@1, unbiased pass@k, majority vote, per difficulty level.

For the test split: one greedy completion and K samples (temperature 1.0, top-p 0.95, as in the
paper) per problem. For validation and a train subset: greedy only, so early stopping and the
train/test gap are visible without paying for K samples. Unscored verdicts (invalid gold, verifier
timeout, sandbox infra error) are counted in their own column, not folded into the accuracy.
Returns tables; writing them and rendering reports is the caller's job.

Resumable with ``parts_dir``: each of the four jobs (test greedy, test sampled, validation greedy, train
greedy) is one sampler call over all of its prompts, committed as one part (``storage.shards``: manifest,
lock, atomic commit, validated reuse) once it is verified. A resumed evaluation reuses the committed parts
whose fingerprint (model content, prompts, settings, ``fingerprint`` from the caller) matches and runs
the rest, so its tables equal an uninterrupted run's. The job is the unit: a job cut short is run again
whole (the same prompts in the same call, so the same samples), not from a problem part-way.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from restem_pipeline.data.prompts import TEXT_PROMPTS, Prompter
from restem_pipeline.data.schema import Problem
from restem_pipeline.evaluation.metrics import majority_answer, pass_at_k
from restem_pipeline.generation.sampling import Sampler, SamplingParams
from restem_pipeline.rewards.verdicts import verdicts_for
from restem_pipeline.storage import shards

StageProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class EvalConfig:
    k: int = 8
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 128
    seed: int = 1234
    train_subset: int = 200
    prompter: Prompter = TEXT_PROMPTS
    verify_timeout_s: float = 5.0
    verify_workers: int = 1

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k (samples per test problem) must be >= 1, got {self.k}")
        if self.train_subset < 0:
            raise ValueError(f"train_subset must be >= 0, got {self.train_subset}")

    @property
    def ks(self) -> list[int]:
        ks = [1]
        while ks[-1] * 2 <= self.k:
            ks.append(ks[-1] * 2)
        return ks if ks[-1] == self.k else [*ks, self.k]


def _completions(
    sampler: Sampler,
    problems: list[Problem],
    params: SamplingParams,
    prompter: Prompter,
    label: str,
    progress: StageProgress | None,
) -> list[list[str]]:
    prompts = [prompter.render(p) for p in problems]
    cb = (lambda d, t: progress(label, d, t)) if progress else None
    if cb:
        cb(0, len(prompts) * params.n)  # the phase starts now: its elapsed time counts from here
    return [[c.text for c in row] for row in sampler.generate(prompts, params, cb)]


SAMPLES_SCHEMA = {
    "problem_id": pl.String,
    "split": pl.String,
    "level": pl.Int64,
    "kind": pl.String,
    "sample_index": pl.Int64,
    "completion": pl.String,
    "status": pl.String,
    "reward": pl.Float64,
    "answer": pl.String,
}
PART_ID = "{split}/{kind}/{problem_id}/{index}"  # a committed part's row ids (dropped from the table)


def evaluation_fingerprint(
    problems: list[Problem], cfg: EvalConfig, model: str | Path, extra: dict | None = None
) -> dict:
    """What a resumed evaluation must match: model content, prompts, settings, ``extra`` (JSON-canonical)."""
    ordered = sorted(problems, key=lambda p: p.id)
    rendered = (f"{p.id}\x1f{p.split}\x1f{p.level}\x1f{cfg.prompter.render(p)}" for p in ordered)
    fingerprint = {
        "table": "eval_samples",
        "model": shards.model_identity(model),
        "problems": {"count": len(ordered), "ids_sha256": shards.digest_of(p.id for p in ordered)},
        "prompts_sha256": shards.digest_of(rendered),
        "eval_config": {**asdict(cfg), "prompter": cfg.prompter.name},
        "part_id_scheme": PART_ID,
        "schema": {k: str(v) for k, v in SAMPLES_SCHEMA.items()},
        **({"extra": extra} if extra else {}),
    }
    return json.loads(json.dumps(fingerprint, sort_keys=True, default=str))


def evaluate(
    sampler: Sampler,
    problems: list[Problem],
    cfg: EvalConfig,
    progress: StageProgress | None = None,
    parts_dir: str | Path | None = None,
    fingerprint: dict | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(eval_samples, eval_summary) for the test, validation and (subset of) train splits.

    With ``parts_dir`` (and the ``evaluation_fingerprint`` of this call) each job is committed there once
    done and reused by a later call; the caller removes the directory once its tables are stored."""
    by_split = {s: [p for p in problems if p.split == s] for s in ("train", "validation", "test")}
    train = by_split["train"]
    if len(train) > cfg.train_subset:
        train = random.Random(cfg.seed).sample(train, cfg.train_subset)
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    sampled = SamplingParams(
        n=cfg.k,
        temperature=cfg.temperature,
        top_k=None,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
    )
    jobs = [
        ("test", by_split["test"], "greedy", greedy),
        ("test", by_split["test"], "sample", sampled),
        ("validation", by_split["validation"], "greedy", greedy),
        ("train", train, "greedy", greedy),
    ]

    def run_job(split: str, probs: list[Problem], kind: str, params: SamplingParams) -> pl.DataFrame:
        outs = _completions(sampler, probs, params, cfg.prompter, f"eval {split} {kind}", progress)
        flat_p = [p for p, row in zip(probs, outs, strict=True) for _ in row]
        flat_c = [c for row in outs for c in row]
        verdicts = iter(verdicts_for(flat_p, flat_c, cfg.verify_timeout_s, cfg.verify_workers))
        rows = [
            {"problem_id": p.id, "split": split, "level": p.level, "kind": kind, "sample_index": j,
             "completion": text, "status": (v := next(verdicts)).status, "reward": v.reward, "answer": v.answer}
            for p, row in zip(probs, outs, strict=True) for j, text in enumerate(row)
        ]  # fmt: skip
        return pl.DataFrame(rows, schema=SAMPLES_SCHEMA)

    if parts_dir is None:
        frames = [run_job(*job) for job in jobs if job[1]]
    else:
        if fingerprint is None:
            raise ValueError("evaluate(parts_dir=...) needs the evaluation_fingerprint of this call")
        frames = _resumable(jobs, run_job, Path(parts_dir), fingerprint, progress, log)
    samples = pl.concat(frames) if frames else pl.DataFrame(schema=SAMPLES_SCHEMA)
    return samples, summarize(samples, cfg)


def _resumable(
    jobs: list[tuple[str, list[Problem], str, SamplingParams]],
    run_job: Callable[..., pl.DataFrame],
    parts_dir: Path,
    fingerprint: dict,
    progress: StageProgress | None,
    log: Callable[[str], None] | None,
) -> list[pl.DataFrame]:
    """Each job's rows, from its committed part (validated) or run now and committed."""
    schema = {**SAMPLES_SCHEMA, "sample_id": pl.String}
    frames = []
    with shards.ShardDir(parts_dir, fingerprint, log) as store:
        store.prepare()
        for index, (split, probs, kind, params) in enumerate(jobs):  # the index names the part: fixed per job
            if not probs:
                continue
            part = shards.Shard(index, tuple(p.id for p in probs), params.seed)

            def id_of(pid: str, j: int, split: str = split, kind: str = kind) -> str:
                return PART_ID.format(split=split, kind=kind, problem_id=pid, index=j)

            df, _ = store.load(part, params.n, id_of, schema)
            if df is not None:
                if log:
                    log(f"eval {split} {kind}: {len(df)} rows reused from {parts_dir / part.name}")
                if progress:
                    progress(f"eval {split} {kind}", len(df), len(df))
            else:
                df = run_job(split, probs, kind, params)
                ids = [id_of(p, j) for p, j in zip(df["problem_id"], df["sample_index"], strict=True)]
                store.commit(part, df.with_columns(pl.Series("sample_id", ids, dtype=pl.String)))
            frames.append(df.select(list(SAMPLES_SCHEMA)))
    return frames


def _per_problem(samples: pl.DataFrame, cfg: EvalConfig) -> pl.DataFrame:
    """Per problem: greedy correctness, pass@k and maj@K, each over its *scored* samples only.

    An unscored verdict (null reward: verifier timeout, sandbox outage) is the infrastructure's
    failure, not the model's: it is counted in ``unscored`` and left out of every metric's
    denominator; a problem with no scored greedy verdict (or fewer than k scored samples) is left out
    of that metric's mean instead of counting as wrong.
    """
    recs = []
    scored = pl.col("reward").is_not_null()
    for (pid, split, level), grp in samples.group_by(["problem_id", "split", "level"]):
        g = grp.filter((pl.col("kind") == "greedy") & scored)
        drawn = grp.filter(pl.col("kind") == "sample")
        s = drawn.filter(scored).sort("sample_index")
        rec = {
            "problem_id": pid,
            "split": split,
            "level": level,
            "greedy": float(g["reward"][0]) if len(g) else None,
            "unscored": int(grp["reward"].is_null().sum()),
        }
        if len(drawn):
            correct = int((s["reward"] == 1.0).sum())
            for k in cfg.ks:
                rec[f"pass@{k}"] = pass_at_k(len(s), correct, k) if k <= len(s) else None
            maj = majority_answer(s["answer"].to_list())
            hit = s.filter(pl.col("answer") == maj)["reward"] if maj is not None else pl.Series([0.0])
            rec[f"maj@{len(drawn)}"] = float(hit[0]) if len(s) else None
        recs.append(rec)
    return pl.DataFrame(recs)


def summarize(samples: pl.DataFrame, cfg: EvalConfig) -> pl.DataFrame:
    """One row per (split, level) plus level 'all': problem count and every metric's mean."""
    if samples.is_empty():
        return pl.DataFrame()
    per = _per_problem(samples, cfg).with_columns(pl.col("level").cast(pl.String).fill_null("none"))
    metric_cols = ["greedy"] + [c for c in per.columns if c.startswith(("pass@", "maj@"))]
    aggs = [pl.len().alias("problems"), pl.col("unscored").sum(), pl.col("greedy").count().alias("scored_problems")]
    aggs += [pl.col(c).mean() for c in metric_cols]  # mean() skips nulls: unscored problems are left out
    by_level = per.group_by(["split", "level"]).agg(aggs)
    overall = per.group_by("split").agg(aggs).with_columns(pl.lit("all").alias("level"))
    out = pl.concat([by_level, overall.select(by_level.columns)])
    return out.rename({"greedy": "pass@1_greedy"}).sort(["split", "level"])


def headline(summary: pl.DataFrame, cfg: EvalConfig) -> dict[str, float]:
    """Flat metrics for the report: ``test/pass@1`` (greedy), ``test/pass@K``, ``test/maj@K``, ..."""
    out: dict[str, float] = {}
    for row in summary.filter(pl.col("level") == "all").iter_rows(named=True):
        split = row["split"]
        out[f"{split}/pass@1"] = row["pass@1_greedy"]
        out[f"{split}/problems"] = row["problems"]
        out[f"{split}/unscored"] = row["unscored"]  # samples; left out of every metric above
        out[f"{split}/scored_problems"] = row["scored_problems"]  # pass@1's denominator
        if split == "test":
            for k in cfg.ks:
                if row.get(f"pass@{k}") is not None:
                    out[f"test/pass@{k}_sampled"] = row[f"pass@{k}"]
            if row.get(f"maj@{cfg.k}") is not None:
                out[f"test/maj@{cfg.k}"] = row[f"maj@{cfg.k}"]
    return {k: (float(v) if v is not None else float("nan")) for k, v in out.items()}
