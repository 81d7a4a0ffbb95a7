"""Tune the "SFT on human solutions" baseline on the embedded arith task: learning rate x epochs, on validation.

The pipeline's SFT baseline (``baselines/sft_baseline``: the base model fine-tuned on one human reference
solution per train problem, ``sft_epochs`` = 10 at the trainer's learning rate) was never tuned. This
script builds (or reuses, from ``--work``) the embedded base model with the pipeline's default recipe
(``ExperimentResource().base_model_config()``, pretraining texts disjoint from the same 600/200/400
arith problems, seed 0), then for every (learning rate, epochs) of the grid fine-tunes the base on the
human solutions exactly as the asset does (``stages.fine_tune`` with ``TrainerResource().train_config``,
only ``learning_rate`` and ``epochs`` replaced) and scores greedy pass@1 on the **validation** split
(``evaluation.evaluate``, the pipeline's sampler and verifier). The setting with the best validation
pass@1 is chosen (ties: fewer epochs, then lower lr); only then is the **test** split scored, for the
chosen setting, the reference setting (``--default-lr`` / ``--default-epochs``: the pipeline's SFT before
this tuning, ``sft_epochs`` 10 at the trainer's learning rate 2e-4; pinned here, not read from the
resources, so the comparison does not move when the pipeline's defaults do) and the base model.

Not covered: sampled metrics (pass@K, maj@K), a train-subset evaluation, other problem sets or base
models, several seeds (one seed per setting: 200 validation problems put about +-3.5 points of noise on
each number), batch size / warm-up / schedule (the trainer's defaults). Nothing in the data root or the
pipeline's settings is changed: the chosen setting is a recommendation for the SFT baseline's epochs and lr.

Default grid: lr {1e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3} x epochs {1, 3, 10}, 21 runs and 1,862
optimizer steps (batch 32): about 7 min of training on 2 idle cores (0.2 s a step), a second or two per
validation pass, plus 6-10 min for the base model when none is built yet; on cores shared with other
jobs at ``nice -n 10`` it has taken 50 min.

Checkpoints and a result cache live under ``--work``; a re-run reuses the base model (when its recipe
and excluded texts match) and every (setting, split) already scored with the same training config (the
table's "train s" of a reused run is the time it took when it was trained). Only the chosen and the
default checkpoints are kept (``--keep-checkpoints`` keeps all).
Progress goes to stderr, one line per run; stdout gets a table and, as its last line, one JSON object.

    nice -n 10 python studies/tune_sft.py --work /tmp/restem_sft_tune
    python studies/tune_sft.py --quick   # a tiny grid, for a smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from tqdm import tqdm

from resources.experiment import ExperimentResource
from resources.models import SamplerResource, TrainerResource
from restem_pipeline.data.problems import load_builtin
from restem_pipeline.data.prompts import Prompter, resolve_style
from restem_pipeline.data.schema import Problem
from restem_pipeline.evaluation.evaluate import evaluate
from restem_pipeline.generation.modeling import load_tokenizer
from restem_pipeline.stages import build_base_model, fine_tune, human_solution_rows

DEFAULT_LRS = "1e-5,5e-5,1e-4,2e-4,5e-4,1e-3,2e-3"
DEFAULT_EPOCHS = "1,3,10"
QUICK_LRS, QUICK_EPOCHS = "2e-4,1e-3", "1"
# the SFT baseline's setting before this tuning: ExperimentResource.sft_epochs 10, TrainerResource.learning_rate
REFERENCE_LR, REFERENCE_EPOCHS = 2e-4, 10.0


def log(msg: str) -> None:
    tqdm.write(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr)


def digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def floats(text: str) -> list[float]:
    values = sorted({float(x) for x in text.split(",") if x.strip()})
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected a comma list of positive numbers, got {text!r}")
    return values


def pipeline_problems(exp: ExperimentResource) -> list[Problem]:
    """The ``problem_set`` asset's arith partition: the same problems, in the same order (train, validation, test)."""
    sizes = (exp.arith_train, exp.arith_validation, exp.arith_test)
    problems = load_builtin("arith", seed=exp.seed, arith_sizes=sizes).problems
    if exp.max_train_problems or exp.max_eval_problems:
        raise SystemExit("tune_sft.py mirrors the default ExperimentResource (no subsets); it has caps set")
    return [p for s in ("train", "validation", "test") for p in sorted((q for q in problems if q.split == s), key=_id)]


def _id(p: Problem) -> str:
    return p.id


class Cache:
    """``results.json`` under the work dir: scores per (model tag, split), valid for one base model."""

    def __init__(self, path: Path, base_fingerprint: str):
        self.path = path
        data = json.loads(path.read_text()) if path.exists() else {}
        self.data = data if data.get("base") == base_fingerprint else {"base": base_fingerprint, "runs": {}}

    def get(self, tag: str, key: str, fingerprint: str) -> dict | None:
        run = self.data["runs"].get(tag, {})
        return run.get(key) if run.get("fingerprint") == fingerprint else None

    def put(self, tag: str, key: str, fingerprint: str, value: dict) -> None:
        run = self.data["runs"].setdefault(tag, {"fingerprint": fingerprint})
        if run.get("fingerprint") != fingerprint:
            run.clear()
            run["fingerprint"] = fingerprint
        run[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


def ensure_base(work: Path, exp: ExperimentResource, problems: list[Problem]) -> tuple[Path, str, dict]:
    """Build the base model as the ``base_model`` asset does, or reuse one built with the same recipe."""
    base = work / "base"
    exclude = {p.prompt for p in problems}
    cfg = exp.base_model_config()
    fingerprint = digest({"cfg": asdict(cfg), "exclude": sorted(exclude)})
    meta_path = work / "base_meta.json"
    if meta_path.exists() and (base / "config.json").exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == fingerprint:
            log(f"reusing the base model at {base} (built in {meta['stats']['seconds']:.0f}s)")
            return base, fingerprint, meta["stats"]
    log(f"pretraining the base model into {base} ({cfg.pretrain.max_steps} steps; 6-10 min on 2 cores)")
    bar = tqdm(total=cfg.pretrain.max_steps, desc="pretrain", file=sys.stderr, leave=False)

    def progress(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.n = step
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.refresh()

    stats = build_base_model(base, exclude, cfg, progress)
    bar.close()
    stats = {k: (float(v) if isinstance(v, float) else v) for k, v in stats.items()}
    meta_path.write_text(json.dumps({"fingerprint": fingerprint, "stats": stats}, indent=1))
    log(
        f"base model: {stats['parameters']:,} parameters, loss {stats['first_loss']:.3f} -> "
        f"{stats['final_loss']:.3f} in {stats['seconds']:.0f}s"
    )
    return base, fingerprint, stats


def greedy_pass_at_1(
    sampler_res: SamplerResource, exp: ExperimentResource, prompter: Prompter, model: Path, problems: list[Problem]
) -> dict:
    """Greedy pass@1 on one split, through ``evaluation.evaluate`` exactly as the eval reports run it.

    ``evaluate`` scores the validation split greedily only (test also gets K samples), so the problems
    are passed labelled as validation: same prompts, sampler settings, verifier and unscored handling.
    """
    cfg = replace(exp.eval_config(prompter), train_subset=0)
    as_val = [replace(p, split="validation") for p in problems]
    sampler = sampler_res.sampler(str(model), stop=prompter.stop(problems[0]))
    t0 = time.perf_counter()
    _, summary = evaluate(sampler, as_val, cfg)
    rows = {r["level"]: r for r in summary.filter(summary["split"] == "validation").iter_rows(named=True)}
    overall = rows["all"]
    return {
        "pass@1": float(overall["pass@1_greedy"]),
        "problems": int(overall["problems"]),
        "unscored": int(overall["unscored"]),
        "per_level": {lv: round(float(r["pass@1_greedy"]), 4) for lv, r in sorted(rows.items()) if lv != "all"},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def tag_of(lr: float, epochs: float) -> str:
    return f"lr{lr:g}_ep{epochs:g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/restem_sft_tune", help="base model, checkpoints and result cache")
    ap.add_argument("--lrs", default=None, help=f"comma list of peak learning rates (default {DEFAULT_LRS})")
    ap.add_argument("--epochs", default=None, help=f"comma list of epochs (default {DEFAULT_EPOCHS})")
    ap.add_argument("--default-lr", type=float, default=REFERENCE_LR, help="the reference SFT setting's lr")
    ap.add_argument("--default-epochs", type=float, default=REFERENCE_EPOCHS, help="... and its epochs")
    ap.add_argument("--quick", action="store_true", help=f"tiny grid (lrs {QUICK_LRS}, epochs {QUICK_EPOCHS})")
    ap.add_argument(
        "--keep-checkpoints", action="store_true", help="keep every grid checkpoint (default: chosen and default only)"
    )
    args = ap.parse_args()
    lrs = floats(args.lrs or (QUICK_LRS if args.quick else DEFAULT_LRS))
    epochs_grid = floats(args.epochs or (QUICK_EPOCHS if args.quick else DEFAULT_EPOCHS))
    t_start = time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    exp, trainer, sampler_res = ExperimentResource(), TrainerResource(), SamplerResource()
    problems = pipeline_problems(exp)
    split = {s: [p for p in problems if p.split == s] for s in ("train", "validation", "test")}
    rows = human_solution_rows(problems)
    log(f"arith: {', '.join(f'{s} {len(v)}' for s, v in split.items())}; {len(rows)} human solutions to train on")

    base, base_fp, base_stats = ensure_base(work, exp, problems)
    style = resolve_style(exp.prompt_style, load_tokenizer(base))  # the run_prompter of the assets
    prompter = exp.prompter(style, str(base))
    cache = Cache(work / "results.json", digest({"base": base_fp, "prompter": prompter.name}))
    default_lr, default_epochs = args.default_lr, args.default_epochs

    def score(tag: str, fp: str, model: Path, which: str) -> dict:
        hit = cache.get(tag, which, fp)
        if hit is None:
            hit = greedy_pass_at_1(sampler_res, exp, prompter, model, split[which])
            cache.put(tag, which, fp, hit)
        return hit

    def train(lr: float, epochs: float, to_score: str) -> tuple[str, str, Path, dict]:
        """Fine-tune one setting unless cached; returns (tag, fingerprint, checkpoint, train stats).

        A cached setting is trained again only when its checkpoint is gone and ``to_score`` is not cached.
        """
        tag = tag_of(lr, epochs)
        cfg = replace(trainer.train_config(exp.seed, epochs), learning_rate=lr, epochs=epochs)
        fp = digest(asdict(cfg))
        out = work / "sft" / tag
        stats = cache.get(tag, "train", fp)
        missing = not (out / "config.json").exists() and cache.get(tag, to_score, fp) is None
        if stats is None or missing:
            t0 = time.perf_counter()
            s = fine_tune(base, problems, rows, out, cfg, prompter, None, trainer.device)
            stats = {
                "steps": s.steps,
                "first_loss": round(s.first_loss, 4),
                "final_loss": round(s.final_loss, 4),
                "dtype": s.dtype,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            cache.put(tag, "train", fp, stats)
        return tag, fp, out, stats

    base_val = score("base", base_fp, base, "validation")
    log(f"base: validation pass@1 {base_val['pass@1']:.3f} ({base_val['seconds']}s)")

    grid = [(lr, ep) for ep in epochs_grid for lr in lrs]
    results: list[dict] = []
    bar = tqdm(grid, desc="grid", file=sys.stderr, unit="run")
    for lr, ep in bar:
        bar.set_postfix(lr=f"{lr:g}", epochs=f"{ep:g}")
        tag, fp, out, stats = train(lr, ep, "validation")
        val = score(tag, fp, out, "validation")
        results.append({"lr": lr, "epochs": ep, "tag": tag, "fp": fp, "dir": out, "train": stats, "val": val})
        log(
            f"{tag}: {stats['steps']} steps, loss {stats['first_loss']:.3f} -> {stats['final_loss']:.3f} "
            f"({stats['seconds']:.0f}s); validation pass@1 {val['pass@1']:.3f} ({val['seconds']:.0f}s)"
        )
    bar.close()

    best = min(results, key=lambda r: (-r["val"]["pass@1"], r["epochs"], r["lr"]))
    default = next((r for r in results if r["lr"] == default_lr and r["epochs"] == default_epochs), None)
    if default is None:  # not in the grid: train and validate it too, for the comparison
        tag, fp, out, stats = train(default_lr, default_epochs, "validation")
        default = {"lr": default_lr, "epochs": default_epochs, "tag": tag, "fp": fp, "dir": out, "train": stats}
        default["val"] = score(tag, fp, out, "validation")
    log(
        f"chosen on validation: lr {best['lr']:g}, epochs {best['epochs']:g} "
        f"(validation pass@1 {best['val']['pass@1']:.3f}); scoring test"
    )

    base_test = score("base", base_fp, base, "test")
    for r in (default, best):
        train(r["lr"], r["epochs"], "test")  # a no-op unless the checkpoint is needed and gone
        r["test"] = score(r["tag"], r["fp"], r["dir"], "test")
    if not args.keep_checkpoints:
        for r in results:
            if r is not best and r["tag"] != default["tag"]:
                shutil.rmtree(r["dir"], ignore_errors=True)

    # the table: every grid setting's validation pass@1, then the three models on test
    print(f"\nSFT on human solutions, arith ({len(split['train'])} train problems), greedy pass@1")
    print("| lr | epochs | steps | loss first -> final | train s | validation pass@1 |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        mark = " (chosen)" if r is best else (" (default)" if r is default else "")
        t = r["train"]
        print(
            f"| {r['lr']:g} | {r['epochs']:g} | {t['steps']} | {t['first_loss']:.3f} -> {t['final_loss']:.3f} | "
            f"{t['seconds']:.0f} | {r['val']['pass@1']:.3f}{mark} |"
        )
    print("\n| model | validation pass@1 | test pass@1 | test pass@1 by level 1..5 |")
    print("|---|---:|---:|---|")
    trio = [
        ("base", base_val, base_test),
        (f"SFT default (lr {default['lr']:g}, {default['epochs']:g} ep)", default["val"], default["test"]),
        (f"SFT tuned (lr {best['lr']:g}, {best['epochs']:g} ep)", best["val"], best["test"]),
    ]
    for name, v, t in trio:
        levels = " / ".join(f"{x:.2f}" for x in t["per_level"].values())
        print(f"| {name} | {v['pass@1']:.3f} | {t['pass@1']:.3f} | {levels} |")
    unscored = sum(x["unscored"] for _, v, t in trio for x in (v, t)) + sum(r["val"]["unscored"] for r in results)
    wall = time.perf_counter() - t_start
    print(f"\nunscored samples (left out of pass@1): {unscored}; wall time {wall / 60:.1f} min")

    summary = {
        "problem_set": "arith",
        "sizes": {s: len(v) for s, v in split.items()},
        "prompt_style": prompter.name,
        "base_model": {"path": str(base), "parameters": base_stats["parameters"]},
        "grid": [
            {
                "lr": r["lr"],
                "epochs": r["epochs"],
                "steps": r["train"]["steps"],
                "final_loss": r["train"]["final_loss"],
                "validation_pass@1": round(r["val"]["pass@1"], 4),
            }
            for r in results
        ],
        "chosen": {"lr": best["lr"], "epochs": best["epochs"], "validation_pass@1": round(best["val"]["pass@1"], 4)},
        "default": {
            "lr": default["lr"],
            "epochs": default["epochs"],
            "validation_pass@1": round(default["val"]["pass@1"], 4),
        },
        "validation_pass@1": {
            "base": round(base_val["pass@1"], 4),
            "sft_default": round(default["val"]["pass@1"], 4),
            "sft_tuned": round(best["val"]["pass@1"], 4),
        },
        "test_pass@1": {
            "base": round(base_test["pass@1"], 4),
            "sft_default": round(default["test"]["pass@1"], 4),
            "sft_tuned": round(best["test"]["pass@1"], 4),
        },
        "unscored": unscored,
        "wall_seconds": round(wall, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
