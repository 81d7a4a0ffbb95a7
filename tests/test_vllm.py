"""The vLLM sampling backend: same inputs and settings as the CPU samplers, and a plain error without vLLM.

CPU side (runs everywhere vLLM is absent, as on every CPU machine): ``SamplerResource(backend="vllm")``
raises ``VLLMNotInstalled`` naming the extra and the lock, directly and inside a real Dagster run; the
settings map one to one; the token ids vLLM is given are the ones the transformers sampler conditions
on. GPU side (marked ``gpu``; skipped unless vllm imports and CUDA is available): greedy equals the CPU
sampler's greedy on the tiny model, a seeded re-run reproduces, stop strings cut like the CPU's.
"""

import importlib.util
import json

import dagster as dg
import pytest
import torch

from assets.definitions import build_definitions
from resources import ExperimentResource, SamplerResource, StorageResource
from restem_pipeline.data.prompts import TEMPLATES
from restem_pipeline.experiments import Experiment
from restem_pipeline.generation.modeling import load_model, load_tokenizer
from restem_pipeline.generation.sampling import SamplingParams, TransformersSampler, batch_seed
from restem_pipeline.generation.sampling_vllm import (
    VLLMNotInstalled,
    VLLMSampler,
    check_engine_settings,
    prompt_token_ids,
    request_settings,
)

STOP = TEMPLATES["arith"].stop
HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_no_vllm = pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here: this checks a CPU environment")


def _prompts(problems, n: int = 24) -> list[str]:
    return [TEMPLATES["arith"].render(p.prompt) for p in problems[:n]]


@needs_no_vllm
def test_vllm_backend_without_vllm_names_what_to_install(tmp_path):
    with pytest.raises(VLLMNotInstalled) as err:
        SamplerResource(backend="vllm").sampler(str(tmp_path / "any_model"), stop=STOP)
    message = str(err.value)
    assert "not installed in this environment" in message
    assert "restem[vllm]" in message and "requirements/vllm-py311.lock" in message
    assert isinstance(err.value, ImportError)


@needs_no_vllm
@pytest.mark.slow
def test_a_dagster_run_with_the_vllm_backend_fails_with_that_error(tmp_path, tiny_base, tiny_problems):
    (tmp_path / "problem_sets").mkdir()
    with open(tmp_path / "problem_sets" / "tiny.jsonl", "w") as f:
        f.writelines(json.dumps(p.to_row()) + "\n" for p in tiny_problems)
    defs = build_definitions(
        [Experiment("restem", iterations=1)],
        resources={
            "storage": StorageResource(data_root=str(tmp_path)),
            "experiment": ExperimentResource(base_model=str(tiny_base), eval_k=2, eval_train_subset=8),
        },
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("problem_set", ["tiny"])
    keys = [dg.AssetKey("problem_set"), dg.AssetKey("base_model"), dg.AssetKey(["baselines", "base_eval_report"])]
    job = defs.resolve_implicit_global_asset_job_def()
    # the backend chosen at launch time, as in the Launchpad or `dagster asset materialize -c`
    run_config = {"resources": {"sampler": {"config": {"backend": "vllm", "tensor_parallel_size": 2}}}}
    result = job.execute_in_process(
        run_config, instance=instance, partition_key="tiny", asset_selection=keys, raise_on_error=False
    )
    assert not result.success
    done = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert done == {"problem_set", "base_model"}
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    cause = failures[0].event_specific_data.error.cause  # Dagster wraps what the asset raised
    assert cause.cls_name == "VLLMNotInstalled" and "restem[vllm]" in cause.message


def test_settings_map_one_to_one():
    sampled = SamplingParams(n=8, temperature=0.7, top_k=40, max_new_tokens=96, seed=3)
    s = request_settings(sampled, 5, STOP)
    assert (s["n"], s["temperature"], s["top_k"], s["top_p"], s["max_tokens"]) == (8, 0.7, 40, 1.0, 96)
    assert s["stop"] == list(STOP) and s["seed"] == batch_seed(3, 5)
    # pass@K: no top-k is vLLM's 0, top-p as given
    passk = request_settings(SamplingParams(n=4, temperature=1.0, top_k=None, top_p=0.95), 0, ())
    assert (passk["top_k"], passk["top_p"], passk["stop"]) == (0, 0.95, [])
    greedy = request_settings(SamplingParams(n=3, temperature=0.0, top_k=40, top_p=0.9), 0, STOP)
    assert (greedy["n"], greedy["temperature"], greedy["top_k"], greedy["top_p"]) == (1, 0.0, 0, 1.0)
    seeds = {request_settings(sampled, i, STOP)["seed"] for i in range(200)}
    assert len(seeds) == 200  # one seed per prompt, and the same on a re-run
    assert request_settings(sampled, 7, STOP) == request_settings(sampled, 7, STOP)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 0.85, None, 16), "tensor_parallel_size must be >= 1, got 0"),
        ((1, 1.5, None, 16), r"gpu_memory_utilization must be in \(0, 1\], got 1.5"),
        ((1, 0.85, 0, 16), "max_model_len must be >= 1 or None"),
        ((1, 0.85, None, 0), "chunk_prompts must be >= 1, got 0"),
    ],
)
def test_engine_settings_are_checked_before_vllm_is_loaded(args, message):
    with pytest.raises(ValueError, match=message):
        check_engine_settings(*args)
    with pytest.raises(ValueError, match=message):
        VLLMSampler("no-model", *args[:2], max_model_len=args[2], chunk_prompts=args[3])


def test_resource_rejects_bad_vllm_values():
    with pytest.raises(Exception, match=r"gpu_memory_utilization must be in \(0, 1\], got 0.0"):
        SamplerResource(backend="vllm", gpu_memory_utilization=0.0)
    with pytest.raises(Exception, match="max_model_len must be >= 0"):
        SamplerResource(backend="vllm", max_model_len=-1)


@torch.inference_mode()
def test_vllm_is_given_the_tokens_the_cpu_sampler_conditions_on(tiny_base, tiny_problems):
    """Greedy from ``prompt_token_ids`` (what vLLM receives) equals the transformers sampler's greedy."""
    prompts = _prompts(tiny_problems, 8)
    tok, model = load_tokenizer(tiny_base), load_model(tiny_base).eval()
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=40)
    cpu = TransformersSampler(tiny_base).generate(prompts, params)
    for ids, [expected] in zip(prompt_token_ids(tok, prompts), cpu, strict=True):
        assert ids[0] == tok.bos_token_id
        gen = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=40,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )[0, len(ids) :].tolist()
        if tok.eos_token_id in gen:
            gen = gen[: gen.index(tok.eos_token_id)]
        assert tok.decode(gen, skip_special_tokens=True) == expected.text


# ---- on a GPU with vLLM installed ----------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_ready():
    pytest.importorskip("vllm", reason="vLLM is not installed (GPU environment: requirements/vllm-py311.lock)")
    if not torch.cuda.is_available():
        pytest.skip("vLLM is installed but no CUDA GPU is available (torch.cuda.is_available() is False)")


def _vllm(model, stop=STOP):
    return SamplerResource(backend="vllm", dtype="float32", gpu_memory_utilization=0.3).sampler(str(model), stop=stop)


@pytest.mark.gpu
def test_greedy_equals_the_cpu_sampler(gpu_ready, tiny_base, tiny_problems):
    prompts = _prompts(tiny_problems, 32)
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=40)
    gpu = _vllm(tiny_base).generate(prompts, params)
    cpu = TransformersSampler(tiny_base, stop=STOP).generate(prompts, params)
    assert all(len({c.text for c in row}) == 1 for row in gpu)  # greedy: n identical copies
    same = [g[0].text == c[0].text for g, c in zip(gpu, cpu, strict=True)]
    # float32 on both; a near-tie in the logits may flip one argmax between devices, rarely
    differ = [(g[0].text, c[0].text) for g, c, s in zip(gpu, cpu, same, strict=True) if not s]
    assert sum(same) >= 0.9 * len(same), differ
    assert all(g[0].finished == c[0].finished for g, c, s in zip(gpu, cpu, same, strict=True) if s)


@pytest.mark.gpu
def test_seeded_rerun_reproduces_and_seeds_matter(gpu_ready, tiny_base, tiny_problems):
    prompts = _prompts(tiny_problems, 16)
    sampler = _vllm(tiny_base)
    params = SamplingParams(n=4, temperature=0.7, top_k=40, max_new_tokens=40, seed=7)
    first, again = sampler.generate(prompts, params), sampler.generate(prompts, params)
    assert [[c.text for c in r] for r in first] == [[c.text for c in r] for r in again]
    other = sampler.generate(prompts, SamplingParams(n=4, temperature=0.7, top_k=40, max_new_tokens=40, seed=8))
    assert [[c.text for c in r] for r in first] != [[c.text for c in r] for r in other]
    assert any(len({c.text for c in r}) > 1 for r in first)  # the n samples of a prompt differ
    # the same prompt at another position in the call is another request seed, but the result is reproducible
    reversed_out = sampler.generate(prompts[::-1], params)
    assert reversed_out == sampler.generate(prompts[::-1], params)


@pytest.mark.gpu
def test_stop_strings_cut_like_the_cpu_sampler(gpu_ready, tiny_base, tiny_problems):
    prompts = _prompts(tiny_problems, 16)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=40)
    gpu = _vllm(tiny_base, stop=("=",)).generate(prompts, params)
    cpu = TransformersSampler(tiny_base, stop=("=",)).generate(prompts, params)
    assert all("=" not in r[0].text for r in gpu)
    stopped = [g[0] for g in gpu if g[0].finished]
    assert stopped, "the tiny model writes equations: some completion should reach '='"
    same = [g[0].text == c[0].text and g[0].finished == c[0].finished for g, c in zip(gpu, cpu, strict=True)]
    assert sum(same) >= 0.9 * len(same)
