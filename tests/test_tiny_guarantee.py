"""The guarantee behind ``memorized_base`` (tests/conftest.py): its E-steps find correct samples by construction.

Covered: the sampling distribution the bound is computed under (temperature, top-k, ties), worked by hand;
the bound tells the weak ``tiny_base`` (no guarantee: its correct samples are luck) from ``memorized_base``;
the pipeline's own E-step sampler (``SamplerResource``'s default backend and dtype on this machine) on
``memorized_base`` with the end-to-end settings draws correct samples, scored by the real verifier.
Not covered: the end-to-end runs themselves (tests/test_e2e_dagster.py, tests/test_automation.py).
"""

import math

import pytest
import torch
from conftest import GUARANTEE_LOG10, no_correct_sample_log10, sampling_logprobs
from tiny_defs import TEST_SEED, TINY_EXPERIMENT

from resources import ExperimentResource, SamplerResource
from restem_pipeline.stages import draw_samples, verify_samples


def test_sampling_logprobs_hand_worked():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [2.0, 1.0, 0.0, -1.0], [1.0, 1.0, 1.0, 0.0]])
    # row 0, T 0.5, top-2: [4, 2] kept, P(0) = e^4 / (e^4 + e^2) = 1 / (1 + e^-2); row 1: token 2 is cut
    got = sampling_logprobs(logits, torch.tensor([0, 2, 0]), temperature=0.5, top_k=2)
    assert got[0].item() == pytest.approx(-math.log1p(math.exp(-2)))
    assert got[1].item() == -math.inf
    assert got[2].item() == pytest.approx(math.log(1 / 3))  # three tied at the 2nd largest: all three kept
    # T 1, top-40 over 4 tokens: plain softmax
    full = sampling_logprobs(logits[:1], torch.tensor([1]), temperature=1.0, top_k=40)
    assert full.item() == pytest.approx(1 - math.log(math.exp(2) + math.exp(1) + 1 + math.exp(-1)))


@pytest.mark.slow
def test_the_bound_rejects_the_weak_base_and_accepts_the_memorized_one(tiny_base, memorized_base, tiny_problems):
    weak, weak_detail = no_correct_sample_log10(tiny_base, tiny_problems)
    strong, strong_detail = no_correct_sample_log10(memorized_base, tiny_problems)
    print(f"RESTEM_TEST_SEED={TEST_SEED}: tiny_base {weak_detail}, memorized_base {strong_detail}")
    assert weak > GUARANTEE_LOG10  # the weak base guarantees nothing: its correct samples are luck
    assert strong <= GUARANTEE_LOG10


@pytest.mark.slow
def test_the_pipelines_sampler_draws_correct_samples_from_the_memorized_base(memorized_base, tiny_problems):
    settings = ExperimentResource(base_model=str(memorized_base), seed=TEST_SEED, **TINY_EXPERIMENT)
    prompter = settings.prompter("text", str(memorized_base))
    train = [p for p in tiny_problems if p.split == "train"]
    sampler = SamplerResource().sampler(str(memorized_base), stop=prompter.stop(train[0]))
    raw = draw_samples(sampler, train, settings.e_step_params(1), "tiny", "iter_1", str(memorized_base), prompter)
    ver = verify_samples(raw, train)
    assert len(ver) == settings.samples_per_problem * len(train)
    correct = ver.filter(ver["reward"] == 1.0)
    print(f"{len(correct)} of {len(ver)} samples correct, on {correct['problem_id'].n_unique()} problems")
    assert len(correct) > 0
