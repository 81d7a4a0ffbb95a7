"""Tokenizer, tiny Llama, sampler, trainer and evaluation on a really trained (tiny) model."""

import hashlib

import polars as pl
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from restem_pipeline import stages
from restem_pipeline.data.prompts import TEMPLATES
from restem_pipeline.evaluation.evaluate import EvalConfig, evaluate, headline
from restem_pipeline.generation.modeling import TinyLlamaSpec, load_tokenizer
from restem_pipeline.generation.sampling import SamplingParams, TransformersSampler
from restem_pipeline.training.finetune import IGNORE_INDEX, TrainConfig, collate, tokenize_pairs

TPL = TEMPLATES["arith"]


def _digest(path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_base_is_a_hugging_face_llama(tiny_base):
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    tok = AutoTokenizer.from_pretrained(tiny_base)
    assert model.config.model_type == "llama"
    text = "Ann has 123 apples. 123 + 45 = 168. \\boxed{168}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    digits = [tok.convert_ids_to_tokens(i) for i in ids if tok.convert_ids_to_tokens(i).strip("Ġ").isdigit()]
    assert all(len(d.strip("Ġ")) == 1 for d in digits)  # one token per digit


def test_prompt_tokens_are_masked_out_of_the_loss(tiny_base):
    tok = load_tokenizer(tiny_base)
    ((ids, plen),) = tokenize_pairs(tok, ["Question: 1 + 1?\nAnswer:"], [" 1 + 1 = 2. \\boxed{2}"], 320)
    batch = collate([(ids, plen), (ids[:5], 3)], tok.pad_token_id)
    labels = batch["labels"][0].tolist()
    assert labels[:plen] == [IGNORE_INDEX] * plen
    assert labels[plen:] == ids[plen:] and ids[-1] == tok.eos_token_id
    assert batch["labels"][1].tolist()[5:] == [IGNORE_INDEX] * (len(ids) - 5)  # padding is masked too
    assert batch["attention_mask"][1].sum() == 5


def test_sampler_is_seeded_and_greedy_matches_generate(tiny_base, tiny_problems):
    prompts = [TPL.render(p.prompt) for p in tiny_problems[:6]]
    s = TransformersSampler(tiny_base, batch_size=8)
    params = SamplingParams(n=3, temperature=0.7, top_k=40, max_new_tokens=40, seed=7)
    a, b = s.generate(prompts, params), s.generate(prompts, params)
    c = s.generate(prompts, SamplingParams(n=3, temperature=0.7, top_k=40, max_new_tokens=40, seed=8))
    assert [[x.text for x in r] for r in a] == [[x.text for x in r] for r in b]
    assert [[x.text for x in r] for r in a] != [[x.text for x in r] for r in c]
    assert all(len(r) == 3 for r in a)
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=40)
    batched = [r[0].text for r in s.generate(prompts, greedy)]
    s.batch_size = 1
    single = [r[0].text for r in s.generate(prompts, greedy)]
    assert batched == single  # left padding does not change greedy output
    tok, model = s.tokenizer, s.model
    ids = torch.tensor([[tok.bos_token_id] + tok(prompts[0], add_special_tokens=False)["input_ids"]])
    ref = model.generate(
        ids, do_sample=False, max_new_tokens=40, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
    )[0, ids.shape[1] :]
    assert tok.decode(ref, skip_special_tokens=True) == single[0]


def test_fine_tune_changes_weights_lowers_loss_and_leaves_base_alone(tiny_base, tiny_problems, tmp_path):
    before = _digest(tiny_base)
    rows = stages.human_solution_rows(tiny_problems)
    cfg = TrainConfig(max_steps=25, batch_size=8, learning_rate=2e-3)
    stats = stages.fine_tune(tiny_base, tiny_problems, rows, tmp_path / "ft", cfg)
    assert stats.steps == 25 and stats.tokens > 0
    assert stats.final_loss < stats.first_loss
    assert stages.weight_change(tiny_base, tmp_path / "ft") > 1e-3
    assert _digest(tiny_base) == before


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="learning_rate must be in \\(0, 1\\), got 5"):
        TrainConfig(learning_rate=5)
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="hidden_size 100 is not divisible by num_heads 3"):
        TinyLlamaSpec(hidden_size=100, num_heads=3)
    with pytest.raises(ValueError, match="n \\(samples per prompt\\) must be >= 1, got 0"):
        SamplingParams(n=0)


def test_evaluate_reports_every_metric_per_level(tiny_base, tiny_problems):
    cfg = EvalConfig(k=4, max_new_tokens=40, train_subset=5)
    sampler = TransformersSampler(tiny_base, batch_size=64)
    probs = (
        [p for p in tiny_problems if p.split == "test"][:10]
        + [p for p in tiny_problems if p.split == "validation"][:4]
        + [p for p in tiny_problems if p.split == "train"][:8]
    )
    samples, summary = evaluate(sampler, probs, cfg)
    n_test = sum(p.split == "test" for p in probs)
    assert len(samples.filter(pl.col("kind") == "sample")) == 4 * n_test
    assert set(summary.columns) >= {
        "split",
        "level",
        "problems",
        "unscored",
        "pass@1_greedy",
        "pass@1",
        "pass@2",
        "pass@4",
        "maj@4",
    }
    test_all = summary.filter((pl.col("split") == "test") & (pl.col("level") == "all")).row(0, named=True)
    assert test_all["problems"] == n_test
    assert test_all["pass@1"] <= test_all["pass@2"] <= test_all["pass@4"]
    assert summary.filter(pl.col("split") == "train")["problems"].max() <= 5
    metrics = headline(summary, cfg)
    assert {"test/pass@1", "test/pass@4_sampled", "test/maj@4", "train/pass@1", "validation/pass@1"} <= metrics.keys()
    correct = samples.filter((pl.col("kind") == "sample") & (pl.col("split") == "test"))["reward"].mean()
    assert test_all["pass@1"] == pytest.approx(correct)
