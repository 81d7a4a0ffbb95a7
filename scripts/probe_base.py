"""Probe a base model before a ReST-EM run: greedy pass@1 and pass@N on validation problems, per prompt style.

ReST-EM needs problems the base model sometimes solves: this prints, for each prompt style asked for,
the greedy pass@1 and the unbiased pass@k (k = 1, 4, 8, ..., N) of N samples at the E-step's settings
(temperature 0.7, top-k 40), the fraction of samples that finished (end-of-turn or stop string) and
the mean completion length, on a seeded subset of a problem set's *validation* split (settings are
chosen on validation, never on test). Last line: one JSON object.

    python scripts/probe_base.py --model smollm2-135m --problem-set gsm8k --problems 32 --n 16
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from tqdm import tqdm

from restem_pipeline.data.problems import load_builtin
from restem_pipeline.data.prompts import Prompter, resolve_style
from restem_pipeline.evaluation.metrics import pass_at_k
from restem_pipeline.generation import named_models
from restem_pipeline.generation.engine import CachedSampler
from restem_pipeline.generation.modeling import load_tokenizer
from restem_pipeline.generation.sampling import SamplingParams
from restem_pipeline.rewards.verdicts import verdicts_for
from restem_pipeline.storage.tables import DataRoot


def probe(model: str, problems, style: str, few_shot: bool, n: int, max_new: int, seed: int) -> dict:
    prompter = Prompter(style, few_shot, model if style == "chat" else None)
    sampler = CachedSampler(model, stop=prompter.stop(problems[0]))
    prompts = [prompter.render(p) for p in problems]
    tok = load_tokenizer(model)
    prompt_tokens = sum(len(tok(x, add_special_tokens=False).input_ids) for x in prompts) / len(prompts)
    out = {"style": prompter.name, "problems": len(problems), "mean_prompt_tokens": round(prompt_tokens, 1)}
    t0 = time.perf_counter()
    bar = tqdm(total=2, desc=prompter.name, file=sys.stderr)
    greedy = sampler.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new, seed=seed))
    bar.update()
    e_step = SamplingParams(n=n, temperature=0.7, top_k=40, max_new_tokens=max_new, seed=seed)
    sampled = sampler.generate(prompts, e_step)
    bar.update()
    bar.close()
    g = verdicts_for(problems, [r[0].text for r in greedy])
    flat = [c for r in sampled for c in r]
    s = verdicts_for([p for p in problems for _ in range(n)], [c.text for c in flat])
    correct = [sum(v.reward == 1.0 for v in s[i * n : (i + 1) * n]) for i in range(len(problems))]
    ks = [k for k in (1, 4, 8, 16, 32, 64) if k <= n]
    out |= {
        "greedy_pass@1": sum(v.reward == 1.0 for v in g) / len(g),
        **{f"pass@{k}": sum(pass_at_k(n, c, k) for c in correct) / len(correct) for k in ks},
        "solved_by_any_sample": sum(c > 0 for c in correct) / len(correct),
        "correct_sample_fraction": sum(correct) / (n * len(problems)),
        "finished_fraction": sum(c.finished for c in flat) / len(flat),
        "mean_new_tokens": sum(c.num_tokens for c in flat) / len(flat),
        "unscored": sum(v.reward is None for v in (*g, *s)),
        "seconds": round(time.perf_counter() - t0, 1),
        "example": flat[0].text[:400],
    }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="a named model, a HF path")
    ap.add_argument("--problem-set", default="gsm8k")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--styles", default="chat/zero-shot,text/few-shot", help="comma list of style/shots")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model = args.model
    if named_models.is_named(model):
        model = str(named_models.ensure_checkpoint(model, DataRoot(None).root)[0])
    pool = [p for p in load_builtin(args.problem_set, seed=args.seed).problems if p.split == args.split]
    problems = random.Random(f"probe-{args.seed}").sample(pool, min(args.problems, len(pool)))
    results = []
    for spec in args.styles.split(","):
        style, shots = spec.split("/")
        style = resolve_style(style, load_tokenizer(model))
        r = probe(model, problems, style, shots == "few-shot", args.n, args.max_new_tokens, args.seed)
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "example"}), file=sys.stderr)
    cols = [
        "style",
        "mean_prompt_tokens",
        "greedy_pass@1",
        *[c for c in results[0] if c.startswith("pass@")],
        "finished_fraction",
        "mean_new_tokens",
        "seconds",
    ]
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    print(json.dumps({"model": args.model, "problem_set": args.problem_set, "split": args.split, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
