"""The real-model experiment (base vs SFT on human data vs ReST-EM iterations) without Dagster or polars.

For a machine that has torch and transformers but not the rest of restem's environment: the GPU
machines lent to restem's issues (no dagster, polars or duckdb, nothing to install). It runs the same
restem_pipeline functions the assets run (prompts, samplers, the math verifier, the trainer, the
metrics), in the same order: evaluate the base; SFT on one human solution per train problem, from the
base; then per iteration t an E-step (N samples per train problem from model t-1 at T 0.7, top-k 40),
verification, at most ``--cap`` correct samples per problem, an M-step that fine-tunes **the base**,
and evaluation (greedy pass@1, pass@K and maj@K at T 1.0 / top-p 0.95 on test; greedy on validation
and a train subset). The prompt style (the chat template where the tokenizer has one) is zero- or
few-shot as chosen on *validation* (pass@N of the base at the E-step's settings) unless
``--few-shot``/``--zero-shot`` pins it.

Not covered: Parquet shards, lineage, resumption, code problems: that is what the Dagster graph is
for. Results go to ``--out`` (JSON, rewritten after every stage) and the last stdout line is one JSON
object. ``--budget-s`` stops before an iteration that would not finish in the time left.

    python scripts/experiment_nodagster.py --model smollm2-135m --device cuda --iterations 3 --out run.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from restem_pipeline.data.problems import load_builtin
from restem_pipeline.data.prompts import Prompter, resolve_style
from restem_pipeline.data.schema import Problem
from restem_pipeline.evaluation.metrics import majority_answer, pass_at_k
from restem_pipeline.generation import named_models
from restem_pipeline.generation.modeling import load_model, load_tokenizer
from restem_pipeline.generation.sampling import SamplingParams, TransformersSampler
from restem_pipeline.rewards.verdicts import verdicts_for
from restem_pipeline.training.batching import tokenize_pairs
from restem_pipeline.training.finetune import TrainConfig, save_checkpoint
from restem_pipeline.training.loop import train_causal_lm


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def subsets(problems: list[Problem], n_train: int, n_val: int, n_test: int, seed: int) -> dict[str, list[Problem]]:
    """Seeded subsets per split (the same problems for every stage)."""
    out = {}
    for split, n in (("train", n_train), ("validation", n_val), ("test", n_test)):
        pool = sorted((p for p in problems if p.split == split), key=lambda p: p.id)
        out[split] = random.Random(f"{seed}/{split}").sample(pool, min(n, len(pool))) if n else pool
    return out


class Runner:
    def __init__(self, args: argparse.Namespace, prompter: Prompter):
        self.args, self.prompter = args, prompter
        self._sampler: tuple[str, TransformersSampler] | None = None

    def sample(self, model: str, problems: list[Problem], params: SamplingParams) -> list[list[str]]:
        if self._sampler is None or self._sampler[0] != model:  # one load per model, not per call
            self._sampler = None
            if self.args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            self._sampler = (model, TransformersSampler(
                model, device=self.args.device, dtype=self.args.sample_dtype, batch_size=self.args.batch_size
            ))  # fmt: skip
        sampler = self._sampler[1]
        prompts = [self.prompter.render(p) for p in problems]
        t0 = time.perf_counter()
        rows = sampler.generate(prompts, params)
        toks = sum(c.num_tokens for r in rows for c in r)
        log(f"  sampled {len(prompts)}x{params.n} in {time.perf_counter() - t0:.1f}s ({toks} new tokens)")
        return [[c.text for c in r] for r in rows]

    def score(self, problems: list[Problem], rows: list[list[str]]) -> list[list]:
        flat_p = [p for p, r in zip(problems, rows, strict=True) for _ in r]
        flat = verdicts_for(flat_p, [c for r in rows for c in r], 5.0, self.args.verify_workers)
        out, i = [], 0
        for r in rows:
            out.append(flat[i : i + len(r)])
            i += len(r)
        unscored = sum(v.reward is None for v in flat)
        if unscored:  # an infrastructure failure is never a wrong answer: report it, do not count it
            log(f"  WARNING: {unscored} of {len(flat)} samples unscored")
        return out

    def evaluate(self, model: str, splits: dict[str, list[Problem]]) -> dict:
        a, k = self.args, self.args.eval_k
        greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=a.max_new_tokens, seed=1234)
        sampled = SamplingParams(
            n=k, temperature=1.0, top_k=None, top_p=0.95, max_new_tokens=a.max_new_tokens, seed=1234
        )
        m: dict = {}
        train_sub = random.Random(1234).sample(splits["train"], min(a.eval_train_subset, len(splits["train"])))
        parts = (("test", splits["test"]), ("validation", splits["validation"]), ("train", train_sub))
        every = [p for _, probs in parts for p in probs]  # one generate() call for all greedy rows
        v = self.score(every, self.sample(model, every, greedy))
        start = 0
        for split, probs in parts:
            part = v[start : start + len(probs)]
            start += len(probs)
            scored = [r[0].reward for r in part if r[0].reward is not None]  # unscored: left out, as evaluation.py
            m[f"{split}/pass@1"] = sum(x == 1.0 for x in scored) / len(scored) if scored else float("nan")
        v = self.score(splits["test"], self.sample(model, splits["test"], sampled))
        v = [[x for x in r if x.reward is not None] for r in v]  # scored samples only, as evaluation.py
        full = [r for r in v if len(r) == k]  # pass@k and maj@k over problems with k scored samples
        m[f"test/pass@{k}"] = sum(pass_at_k(k, sum(x.reward == 1.0 for x in r), k) for r in full) / max(len(full), 1)
        maj = [majority_answer([x.answer for x in r if x.answer is not None]) for r in full]
        m[f"test/maj@{k}"] = sum(
            ans is not None and any(x.answer == ans and x.reward == 1.0 for x in r)
            for ans, r in zip(maj, full, strict=True)
        ) / max(len(full), 1)
        m["test/sampled_correct_fraction"] = sum(x.reward == 1.0 for r in v for x in r) / max(sum(map(len, v)), 1)
        return m

    def fine_tune(self, base: str, pairs: list[tuple[Problem, str]], out: Path, epochs: float) -> dict:
        a = self.args
        tok = load_tokenizer(base)
        model = load_model(base, device=a.device)
        prompts = [self.prompter.render(p) for p, _ in pairs]
        targets = [self.prompter.target(p, s) for p, s in pairs]
        examples = tokenize_pairs(tok, prompts, targets, a.max_length, self.prompter.style == "text")
        cfg = TrainConfig(
            epochs=epochs, batch_size=a.train_batch_size, learning_rate=a.lr, max_length=a.max_length, seed=0
        )
        t0 = time.perf_counter()
        stats = train_causal_lm(model, tok, examples, cfg)
        save_checkpoint(model, tok, out)
        del model
        info = {
            "examples": len(examples),
            "steps": stats.steps,
            "first_loss": round(stats.first_loss, 4),
            "final_loss": round(stats.final_loss, 4),
            "tokens_per_s": round(stats.tokens_per_s, 1),
            "dtype": stats.dtype,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        log(f"  fine-tuned on {len(examples)} examples: {info}")
        return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="a named model, a hub id or a local checkpoint")
    ap.add_argument("--problem-set", default="gsm8k")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sample-dtype", default="bfloat16")
    ap.add_argument("--work", default="/tmp/restem_nodagster")
    ap.add_argument("--train", type=int, default=800)
    ap.add_argument("--validation", type=int, default=200)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--eval-train-subset", type=int, default=100)
    ap.add_argument("--n", type=int, default=8, help="E-step samples per train problem")
    ap.add_argument("--cap", type=int, default=10)
    ap.add_argument("--eval-k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--sft-epochs", type=float, default=2.0)
    ap.add_argument("--train-batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=512, help="sequences per generate() batch")
    ap.add_argument("--verify-workers", type=int, default=4)
    style = ap.add_mutually_exclusive_group()
    style.add_argument("--few-shot", dest="few_shot", action="store_true", default=None)
    style.add_argument("--zero-shot", dest="few_shot", action="store_false")
    ap.add_argument("--budget-s", type=float, default=0.0, help="stop before an iteration that would overrun")
    ap.add_argument("--out", default="experiment_nodagster.json")
    args = ap.parse_args()
    t_start = time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"settings": vars(args), "device_name": None, "stages": {}, "seconds": {}, "e_steps": {}}
    if args.device.startswith("cuda"):
        result["device_name"] = torch.cuda.get_device_name()
    out = Path(args.out)

    def save() -> None:
        result["wall_seconds"] = round(time.perf_counter() - t_start, 1)
        out.write_text(json.dumps(result, indent=1))

    t0 = time.perf_counter()
    if named_models.is_named(args.model):
        base_path, provenance = named_models.ensure_checkpoint(args.model, work / "named_models", log=log)
        result["provenance"] = provenance
    else:
        base_path = Path(args.model)
    base = str(base_path)
    result["seconds"]["base_model"] = round(time.perf_counter() - t0, 1)
    problems = load_builtin(args.problem_set, seed=0).problems
    splits = subsets(problems, args.train, args.validation, args.test, seed=0)
    result["sizes"] = {s: len(v) for s, v in splits.items()}
    log(f"base model {base}; problems {result['sizes']}")

    # prompt style, chosen on validation: pass@N of the base at the E-step's settings (then greedy)
    e_params = SamplingParams(n=args.n, temperature=0.7, top_k=40, max_new_tokens=args.max_new_tokens, seed=0)
    style = resolve_style("auto", load_tokenizer(base))  # chat where the tokenizer has a template

    def prompter(few: bool) -> Prompter:
        return Prompter(style, few, base if style == "chat" else None)

    candidates = [args.few_shot] if args.few_shot is not None else [False, True]
    probe = {}
    t0 = time.perf_counter()
    for few in candidates:
        runner = Runner(args, prompter(few))
        if len(candidates) > 1:
            v = runner.score(splits["validation"], runner.sample(base, splits["validation"], e_params))
            solved = sum(any(x.reward == 1.0 for x in r) for r in v) / len(v)
            frac = sum(x.reward == 1.0 for r in v for x in r) / (args.n * len(v))
            probe[runner.prompter.name] = {f"validation/pass@{args.n}": solved, "correct_sample_fraction": frac}
            log(f"  probe {runner.prompter.name}: {probe[runner.prompter.name]}")
    if probe:
        key = f"validation/pass@{args.n}"
        best = max(probe, key=lambda s: (probe[s][key], probe[s]["correct_sample_fraction"]))
        runner = Runner(args, prompter(best.endswith("/few-shot")))
    result["style_probe"], result["prompt_style"] = probe, runner.prompter.name
    result["seconds"]["style_probe"] = round(time.perf_counter() - t0, 1)
    log(f"prompt style: {runner.prompter.name}")

    def stage(name: str, fn):
        t = time.perf_counter()
        value = fn()
        result["seconds"][name] = round(time.perf_counter() - t, 1)
        save()
        return value

    result["stages"]["base"] = stage("base_eval", lambda: runner.evaluate(base, splits))
    log(f"base: {result['stages']['base']}")
    human = [(p, p.solution) for p in splits["train"] if p.solution]
    result["sft_train"] = stage("sft_train", lambda: runner.fine_tune(base, human, work / "sft", args.sft_epochs))
    result["stages"]["sft"] = stage("sft_eval", lambda: runner.evaluate(str(work / "sft"), splits))
    log(f"sft: {result['stages']['sft']}")

    previous = base
    for t in range(1, args.iterations + 1):
        spent = time.perf_counter() - t_start
        last = sum(result["seconds"].get(f"iter_{t - 1}/{s}", 0) for s in ("e_step", "m_step", "eval"))
        if args.budget_s and t > 1 and spent + 1.1 * last > args.budget_s:
            result["stopped"] = f"before iteration {t}: {spent:.0f}s spent, the last took {last:.0f}s"
            log(result["stopped"])
            break
        rows = stage(f"iter_{t}/e_step", lambda m=previous: runner.sample(m, splits["train"], e_params))
        v = runner.score(splits["train"], rows)
        rng = random.Random(t)
        kept = []
        for p, r, vr in zip(splits["train"], rows, v, strict=True):
            good = [text for text, x in zip(r, vr, strict=True) if x.reward == 1.0]
            rng.shuffle(good)
            kept += [(p, text) for text in good[: args.cap]]
        statuses = Counter(x.status for vr in v for x in vr)
        result["e_steps"][f"iter_{t}"] = {
            "samples": sum(map(len, rows)),
            "correct": sum(x.reward == 1.0 for vr in v for x in vr),
            "problems_solved": sum(any(x.reward == 1.0 for x in vr) for vr in v),
            "kept": len(kept),
            "statuses": dict(statuses),
        }
        log(f"iter_{t} E-step: {result['e_steps'][f'iter_{t}']}")
        if not kept:
            result["stopped"] = f"iteration {t}: no correct sample to train on"
            break
        ckpt = work / f"iter_{t}"
        result["e_steps"][f"iter_{t}"]["m_step"] = stage(
            f"iter_{t}/m_step", lambda c=ckpt, k=kept: runner.fine_tune(base, k, c, args.epochs)
        )
        result["stages"][f"iter_{t}"] = stage(f"iter_{t}/eval", lambda c=ckpt: runner.evaluate(str(c), splits))
        log(f"iter_{t}: {result['stages'][f'iter_{t}']}")
        previous = str(ckpt)
    save()
    k = args.eval_k
    cols = ["test/pass@1", f"test/pass@{k}", f"test/maj@{k}", "validation/pass@1", "train/pass@1"]
    print(f"{'model':<8}" + "".join(f"{c:>20}" for c in cols))
    for name, m in result["stages"].items():
        print(f"{name:<8}" + "".join(f"{100 * m[c]:>19.1f}%" for c in cols))
    print(json.dumps({"stages": result["stages"], "seconds": result["seconds"], "e_steps": result["e_steps"]}))


if __name__ == "__main__":
    main()
