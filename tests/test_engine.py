"""restem's ``CachedSampler`` against transformers ``generate()`` on real (tiny) models.

Greedy float32 output equals ``generate()``'s token for token (a trained model whose completions end
at EOS at different lengths, a random-init model that runs to ``max_new_tokens``, and GQA / Qwen2 /
Qwen3 / Mistral layouts); sampling is seeded per sequence (re-runs reproduce, seeds matter, batch
size and dropped rows change nothing); stop strings cut like ``TransformersSampler``; the memory
budget caps batches, names its setting when even one sequence does not fit, and a real allocation
failure halves the batch; bf16 keeps most greedy completions; unsupported architectures fail
clearly or fall back; ``SamplerResource`` wiring and validation. Half precision's shared-prompt
decode (a prompt's KV cache stored once for its N samples) gives the logits a cache per row gives,
also after rows and whole prompts are dropped; the blockwise argmax / top-k equal torch's; float32
output does not depend on the thread count; the memory estimate counts a shared prompt once.
"""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

from resources import SamplerResource
from restem_pipeline.data import arith
from restem_pipeline.data.prompts import template_for
from restem_pipeline.generation import backends, engine_decode
from restem_pipeline.generation.engine import CachedSampler, SamplerMemoryError, UnsupportedModelError, native_bf16
from restem_pipeline.generation.engine_decode import ThreadTuner, argmax_rows, topk_rows
from restem_pipeline.generation.modeling import TinyLlamaSpec, load_tokenizer, tiny_llama
from restem_pipeline.generation.sampling import SamplingParams, TransformersSampler

REPO = Path(__file__).resolve().parents[1]
GREEDY = SamplingParams(n=1, temperature=0.0, max_new_tokens=48)
SAMPLED = SamplingParams(n=3, temperature=0.8, top_k=40, max_new_tokens=40, seed=5)


def _texts(out) -> list[list[str]]:
    return [[c.text for c in row] for row in out]


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    """All five levels: prompt lengths from about 30 to 110 tokens."""
    return [template_for(p).render(p.prompt) for p in arith.embedded_problem_set(0, 60, 20, 40)]


@pytest.fixture(scope="module")
def fp32(tiny_base) -> CachedSampler:
    return CachedSampler(tiny_base, dtype="float32", batch_size=64)


@pytest.fixture(scope="module")
def reference(tiny_base, prompts):
    return TransformersSampler(tiny_base, batch_size=32).generate(prompts, GREEDY)


def _save(model, tok, path: Path) -> Path:
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def random_model(tiny_base, tmp_path_factory) -> Path:
    tok = load_tokenizer(tiny_base)
    spec = TinyLlamaSpec(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=192, max_positions=256)
    return _save(tiny_llama(spec, tok, seed=3), tok, tmp_path_factory.mktemp("random") / "m")


def test_greedy_equals_generate_token_for_token(fp32, reference, prompts):
    ours = fp32.generate(prompts, GREEDY)
    assert ours == reference  # text, num_tokens and finished of every completion
    lengths = {row[0].num_tokens for row in ours}
    assert sum(row[0].finished for row in ours) >= len(prompts) // 2 and len(lengths) > 5  # ends vary
    assert fp32.stats["compactions"] > 0 and fp32.stats["batches"] == 2


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_many_decode_groups_give_the_same_completions_as_one(tiny_base, prompts, monkeypatch, dtype):
    """Rows split into one cache per prompt length (each right-aligned to its own longest) decode
    exactly as one shared cache does, also after finished rows are dropped group by group."""
    one = CachedSampler(tiny_base, dtype=dtype, batch_size=64)
    merged = one.generate(prompts, SAMPLED)
    monkeypatch.setattr(engine_decode, "GROUP_SLACK", (1.0, 0))  # a group per distinct prompt length
    split = CachedSampler(tiny_base, dtype=dtype, batch_size=64)
    out = split.generate(prompts, SAMPLED)
    assert split.stats["compactions"] > 0
    if dtype == "float32":
        assert out == merged
    else:  # bf16 sums over a different number of (zero-weight) columns: rounding may differ, rarely
        pairs = zip(sum(_texts(out), []), sum(_texts(merged), []), strict=True)
        same = sum(a == b for a, b in pairs)
        print(f"bf16: {same} of {len(prompts) * SAMPLED.n} samples equal")
        assert same >= 0.8 * len(prompts) * SAMPLED.n


def test_greedy_equals_generate_when_running_to_max_new_tokens(random_model, prompts):
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=40)
    ours = CachedSampler(random_model, dtype="float32", batch_size=50).generate(prompts, params)
    assert ours == TransformersSampler(random_model, batch_size=50).generate(prompts, params)
    full = [row[0] for row in ours if row[0].num_tokens == 40 and not row[0].finished]
    assert len(full) > len(prompts) // 2


@pytest.mark.parametrize(
    "config_class, extra",
    [
        (LlamaConfig, {"num_key_value_heads": 2}),  # grouped-query attention
        (Qwen2Config, {"num_key_value_heads": 2}),  # q/k/v biases
        (Qwen3Config, {"num_key_value_heads": 2, "head_dim": 16}),  # per-head q/k norms
        (MistralConfig, {"num_key_value_heads": 4, "sliding_window": 4096}),
    ],
    ids=["llama-gqa", "qwen2", "qwen3", "mistral"],
)
def test_other_llama_style_layouts_match_generate(config_class, extra, tiny_base, prompts, tmp_path):
    tok = load_tokenizer(tiny_base)
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    config = config_class(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=len(tok),
        **ids,
        **extra,
    )
    torch.manual_seed(0)
    path = _save(AutoModelForCausalLM.from_config(config), tok, tmp_path / config.model_type)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=24)
    some = prompts[::8]
    assert CachedSampler(path, dtype="float32").generate(some, params) == TransformersSampler(path).generate(
        some, params
    )


def test_sampling_is_seeded_per_sequence(fp32, prompts):
    some = prompts[:24]
    a, b = fp32.generate(some, SAMPLED), fp32.generate(some, SAMPLED)
    other = fp32.generate(some, SamplingParams(**{**SAMPLED.__dict__, "seed": 6}))
    assert _texts(a) == _texts(b)
    assert sum(x != y for x, y in zip(_texts(a), _texts(other), strict=True)) > len(some) // 2
    assert sum(len(set(row)) > 1 for row in _texts(a)) > len(some) // 2  # the N samples of a prompt differ


def test_dropping_finished_rows_and_batch_size_change_nothing(tiny_base, fp32, prompts):
    some = prompts[:20]
    batched = fp32.generate(some, SAMPLED)
    assert fp32.stats["compactions"] > 0  # rows were dropped mid-batch
    one = CachedSampler(tiny_base, dtype="float32", batch_size=1)
    assert one.generate(some, SAMPLED) == batched
    assert one.stats["batches"] == len(some) * SAMPLED.n and one.stats["compactions"] == 0


def test_top_k_1_and_a_tiny_top_p_equal_greedy(fp32, reference, prompts):
    for params in (
        SamplingParams(n=2, temperature=0.7, top_k=1, max_new_tokens=48, seed=1),
        SamplingParams(n=1, temperature=1.0, top_k=None, top_p=1e-6, max_new_tokens=48, seed=2),
    ):
        out = fp32.generate(prompts, params)
        assert [[c.text for c in row] for row in out] == [[r[0].text] * params.n for r in reference]


def test_n_samples_share_a_prefill_and_progress_is_reported(fp32, reference, prompts):
    calls: list[tuple[int, int]] = []
    greedy4 = SamplingParams(n=4, temperature=0.0, max_new_tokens=48)
    out = fp32.generate(prompts[:10], greedy4, lambda done, total: calls.append((done, total)))
    assert [row[0].text for row in out] == [r[0].text for r in reference[:10]]
    assert all(len(set(_texts([row])[0])) == 1 for row in out)
    assert fp32.stats["prefill_tokens"] < 10 * max(len(fp32.tokenizer(p)["input_ids"]) + 1 for p in prompts[:10])
    assert calls[-1] == (40, 40) and [d for d, _ in calls] == sorted(d for d, _ in calls)


@pytest.mark.parametrize("stop", [("The answer",), ("answer ", "\nQuestion:")])
def test_stop_strings_truncate_and_finish_like_transformers(tiny_base, prompts, stop):
    ours = CachedSampler(tiny_base, dtype="float32", batch_size=32, stop=stop).generate(prompts, GREEDY)
    theirs = TransformersSampler(tiny_base, batch_size=32, stop=stop).generate(prompts, GREEDY)
    assert _texts(ours) == _texts(theirs)
    assert [r[0].finished for r in ours] == [r[0].finished for r in theirs]
    stopped = [(a[0], b[0]) for a, b in zip(ours, theirs, strict=True) if not any(s in b[0].text for s in stop)]
    assert all(a.num_tokens <= b.num_tokens for a, b in stopped)
    cut = [a for a, b in stopped if a.num_tokens < b.num_tokens]  # stopped early instead of running to EOS
    assert len(cut) > len(prompts) // 4 and all(a.finished for a in cut)


def test_memory_budget_caps_the_batch_and_names_its_setting(tiny_base, fp32, reference, prompts):
    fw = fp32.forward
    per_token = fw.num_layers * 2 * fw.num_kv_heads * fw.head_dim * 4  # float32 cache
    assert fw.kv_bytes_per_token() == per_token
    need = fp32.bytes_per_sequence(120, GREEDY.max_new_tokens)
    assert need > per_token * (120 + GREEDY.max_new_tokens)
    small = CachedSampler(tiny_base, dtype="float32", batch_size=64, memory_budget_mb=3.5 * need / 2**20)
    assert small.max_batch(120, GREEDY.max_new_tokens, small.budget_bytes()) == 3
    assert small.generate(prompts, GREEDY) == reference
    shortest = min(len(small.tokenizer(p)["input_ids"]) + 1 for p in prompts)
    assert 3 <= small.stats["largest_batch"] <= small.max_batch(shortest, GREEDY.max_new_tokens, small.budget_bytes())
    assert small.stats["largest_batch"] < 64 and small.stats["batches"] > 2  # batch_size 64 alone: 2 batches
    tiny = CachedSampler(tiny_base, dtype="float32", memory_budget_mb=0.01)
    with pytest.raises(SamplerMemoryError, match="memory_budget_mb"):
        tiny.generate(prompts[:2], GREEDY)


OOM_SCRIPT = """
import json, resource, sys
from restem_pipeline.generation.engine import CachedSampler
from restem_pipeline.generation.sampling import SamplingParams
path, prompts = sys.argv[1], json.loads(sys.argv[2])
s = CachedSampler(path, dtype="float32", batch_size=512, memory_budget_mb=10**6)
params = SamplingParams(n=128, temperature=0.0, max_new_tokens=150)
ref = s.generate(prompts, params)
size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (size + 96 * 2**20, resource.RLIM_INFINITY))
out = s.generate(prompts, params)
print(json.dumps({"same": out == ref, "retries": s.stats["oom_retries"], "batches": s.stats["batches"]}))
"""


def test_a_real_out_of_memory_halves_the_batch(tiny_base, prompts):
    """Address space capped just above the process's size: the 512-row batch cannot be allocated."""
    proc = subprocess.run(
        [sys.executable, "-c", OOM_SCRIPT, str(tiny_base), json.dumps(prompts[:4])],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["same"] and result["retries"] >= 1 and result["batches"] > 1


def test_bf16_keeps_most_greedy_completions(tiny_base, reference, prompts):
    bf16 = CachedSampler(tiny_base, dtype="bfloat16", batch_size=64)
    assert bf16.dtype == torch.bfloat16
    out = bf16.generate(prompts, GREEDY)
    same = sum(a[0].text == b[0].text for a, b in zip(out, reference, strict=True))
    first = sum(a[0].text[:4] == b[0].text[:4] for a, b in zip(out, reference, strict=True))
    assert same >= 0.7 * len(prompts) and first >= 0.95 * len(prompts)
    auto = CachedSampler(tiny_base, dtype="auto", batch_size=64)
    assert auto.dtype == (torch.bfloat16 if native_bf16() else torch.float32), auto.dtype_note
    assert CachedSampler(tiny_base, dtype="auto", batch_size=1).dtype == torch.float32


def test_unsupported_architecture_fails_clearly_or_falls_back(tiny_base, tmp_path):
    tok = load_tokenizer(tiny_base)
    config = GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=len(tok), n_positions=256)
    path = _save(AutoModelForCausalLM.from_config(config), tok, tmp_path / "gpt2")
    with pytest.raises(UnsupportedModelError, match="backend='transformers'"):
        CachedSampler(path)
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        SamplerResource(backend="restem").sampler(str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback = SamplerResource().sampler(str(path))
    assert isinstance(fallback, TransformersSampler) and "gpt2" in str(caught[0].message)


def test_resource_defaults_to_restem_on_cpu_and_validates(tiny_base):
    res = SamplerResource()
    assert res.backend == "auto" and res.dtype == "auto" and res.resolved_backend() == "restem"
    assert SamplerResource(device="cuda").resolved_backend() == backends.CUDA_AUTO  # measured on a GPU
    sampler = SamplerResource(memory_budget_mb=64, batch_size=8).sampler(str(tiny_base), stop=("\nQuestion:",))
    assert isinstance(sampler, CachedSampler) and sampler.memory_budget_mb == 64 and sampler.stop == ("\nQuestion:",)
    baseline = SamplerResource(backend="transformers").sampler(str(tiny_base))
    assert isinstance(baseline, TransformersSampler) and baseline.model.dtype == torch.float32
    with pytest.raises(ValueError, match="memory_budget_mb must be >= 0.*-1"):
        SamplerResource(memory_budget_mb=-1)
    with pytest.raises(ValueError, match="fp8"):
        SamplerResource(dtype="fp8")
    with pytest.raises(ValueError, match="dtype must be 'auto' or one of .*'fp8'"):
        CachedSampler(tiny_base, dtype="fp8")


def _decode_logits(fw, seqs, chunk, tokens, drop_after: int, keep: list[int]) -> list[torch.Tensor]:
    """Logits of decode steps fed ``tokens`` (rows, steps), dropping to rows ``keep`` after step ``drop_after``."""
    groups, _ = engine_decode._groups(fw, seqs, chunk, tokens.shape[1], 0, {"prefill_tokens": 0})
    assert len(groups) == 1
    positions = torch.tensor([length for length, _, _ in chunk])[:, None]
    rows, out = list(range(len(chunk))), []
    for step in range(tokens.shape[1]):
        if step == drop_after:
            local = [rows.index(r) for r in keep]
            groups = [groups[0].keep(fw, local, 0, step)]
            rows = keep
        out.append(fw.forward(tokens[rows, step : step + 1], positions[rows] + step, [g.part(step) for g in groups]))
    return out


def test_shared_prompt_decode_gives_the_logits_of_a_cache_per_row(tiny_base, prompts, tmp_path):
    """N samples of a prompt attend to one copy of its KV cache, each seeing only its own new tokens
    (each row is fed different tokens here): the logits match a cache per row to bf16 rounding."""
    tok = load_tokenizer(tiny_base)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    path = _save(AutoModelForCausalLM.from_config(config), tok, tmp_path / "gqa")
    half, fp32 = CachedSampler(path, dtype="bfloat16"), CachedSampler(path, dtype="float32")
    assert half.forward.shared_decode and not fp32.forward.shared_decode
    seqs = [[tok.bos_token_id, *tok(p, add_special_tokens=False)["input_ids"]] for p in prompts[::9][:5]]
    chunk = sorted((len(seqs[i]), i, j) for i in range(len(seqs)) for j in range(3))  # 5 prompts x 3 samples
    tokens = torch.randint(3, len(tok), (len(chunk), 8), generator=torch.Generator().manual_seed(1))
    keep = [r for r in range(len(chunk)) if r >= 6 and r != 7]  # every row of two prompts, one row of another
    with torch.inference_mode():
        shared = _decode_logits(half.forward, seqs, chunk, tokens, 4, keep)
        half.forward.shared_decode = False
        per_row = _decode_logits(half.forward, seqs, chunk, tokens, 4, keep)
        exact = _decode_logits(fp32.forward, seqs, chunk, tokens, 4, keep)
    for step, (a, b, c) in enumerate(zip(shared, per_row, exact, strict=True)):
        scale = c.abs().max().item()
        assert (a - c).abs().max().item() <= 2 * (b - c).abs().max().item() + 0.02 * scale, step
        assert (a - b).abs().max().item() <= 0.05 * scale, step


def test_blockwise_argmax_and_top_k_equal_torchs():
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        x = (torch.randn(6, 49152, generator=g) * 4).to(dtype)
        x[1, 100] = x[1, 5000] = x[1].max() + 1  # a tie: the first index wins, as in torch
        x[2] = 0.0  # all tied
        assert torch.equal(argmax_rows(x), x.argmax(-1))
        values, index = topk_rows(x, 40)
        assert torch.equal(values, x.topk(40, -1).values)  # the same k largest, in order
        assert torch.equal(x.gather(1, index), values)  # at their own indices (tied values may swap places)
        assert all(len(set(row)) == 40 for row in index.tolist())
    odd = torch.randn(3, 1000, generator=g)  # not a multiple of the block: torch's own
    assert torch.equal(argmax_rows(odd), odd.argmax(-1)) and torch.equal(topk_rows(odd, 5)[1], odd.topk(5, -1)[1])


def test_threads_fixed_or_tuned_change_no_float32_completion(tiny_base, fp32, prompts):
    some = prompts[:12]
    ref = fp32.generate(some, SAMPLED)
    before = torch.get_num_threads()
    pinned = CachedSampler(tiny_base, dtype="float32", batch_size=64, threads=1)
    assert pinned.tuner.candidates == [1] and pinned.generate(some, SAMPLED) == ref
    assert torch.get_num_threads() == before  # restored after generate
    tuner = ThreadTuner()
    assert tuner.candidates[0] == 1 and tuner.candidates[-1] == before and tuner.best in (1, before)
    tuner.best, tuner.countdown = 1, ThreadTuner.FIRST_TRIAL  # as on a busy machine
    if before > 1:  # more threads on trial, much slower: kept at 1, the next trial far away
        assert tuner.apply() == 1 and [tuner.apply(s) for s in range(2)] == [1, 1]
        tuner.observe(1, 0.01, 10), tuner.observe(1, 0.01, 10)
        assert tuner.apply(2) == before and torch.get_num_threads() == before
        tuner.observe(before, 0.05, 10)
        assert tuner.best == 1 and tuner.apply(3) == 1 and tuner.countdown == ThreadTuner.MAX_PERIOD
        tuner.observe(1, 0.01, 10)  # then a step 3x slower than the first after that choice: a trial at once
        tuner.observe(1, 0.03, 10)
        assert tuner.countdown == 0 and tuner.apply(4) == before
        tuner.observe(before, 0.012, 10), tuner.observe(before, 0.011, 10)
        assert tuner.best == before and tuner.switches == 1
    torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        CachedSampler(tiny_base, threads=0)


def test_memory_estimate_counts_a_shared_prompt_once(tiny_base):
    half = CachedSampler(tiny_base, dtype="bfloat16", batch_size=256)
    one, eight = half.bytes_per_sequence(400, 64), half.bytes_per_sequence(400, 64, samples=8)
    assert eight < one / 3  # prefill activations and the prompt's cache, once per 8 samples
    kv = half.forward.kv_bytes_per_token()
    assert eight >= kv * (400 // 8 + 64)
