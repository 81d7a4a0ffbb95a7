"""LoRA fine-tuning (``finetune='lora'``): trains, changes each adapted matrix by rank <= r, saves a plain model.

A real tiny randomly initialised Llama and a real BPE tokenizer on real arithmetic problems, as in
test_training.py. The expected values come from LoRA's definition, not from the code under test: the
update of an adapted ``W`` (out x in) is ``(alpha / r) * B @ A`` with ``B`` (out x r) and ``A`` (r x in),
so ``W_after - W_before`` has rank at most ``r``; weights that are not adapted do not move at all;
each adapter holds ``r * (in + out)`` parameters.
"""

import json
import sys
from contextlib import nullcontext

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from resources.models import TrainerResource
from restem_pipeline.data import arith
from restem_pipeline.data.prompts import TEMPLATES
from restem_pipeline.generation.modeling import TinyLlamaSpec, tiny_llama, train_tokenizer
from restem_pipeline.training.finetune import (
    TrainConfig,
    evaluate_loss,
    save_checkpoint,
    tokenize_pairs,
)
from restem_pipeline.training.loop import train_causal_lm
from restem_pipeline.training.lora import DEFAULT_LORA_TARGETS, PeftNotInstalled, lora_adapters
from restem_pipeline.training.micro_steps import StepRunner
from restem_pipeline.training.packed_attention import packed_attention

pytest.importorskip("peft")

TPL = TEMPLATES["arith"]
SPEC = TinyLlamaSpec(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_positions=256)
RANK = 4  # well below the matrices' smallest side (32), so a rank <= 4 bound means something


@pytest.fixture(scope="module")
def data():
    pool = arith.pretraining_pool(3, (30, 30, 20, 10, 10))
    prompts = [TPL.render(q) for q, _ in pool]
    targets = [TPL.target(a) for _, a in pool]
    tok = train_tokenizer([p + t for p, t in zip(prompts, targets, strict=True)], 320)
    return tok, tokenize_pairs(tok, prompts, targets, 256)


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _lora_cfg(**kw) -> TrainConfig:
    base = {"max_steps": 15, "batch_size": 16, "learning_rate": 3e-2, "finetune": "lora", "lora_rank": RANK}
    base["lora_alpha"] = 2.0 * RANK  # alpha / r = 2, as with the defaults (32 / 16)
    return TrainConfig(**{**base, **kw})


def _is_adapted(name: str, targets=DEFAULT_LORA_TARGETS) -> bool:
    return name.endswith(".weight") and name.rsplit(".", 2)[-2] in targets


@pytest.fixture(scope="module")
def lora_run(data):
    """One LoRA run (fp32, packed): weights before and after, stats, held-out losses before and after."""
    tok, examples = data
    train, held = examples[:96], examples[96:]
    model = tiny_llama(SPEC, tok, seed=1)
    before = _weights(model)
    exact = TrainConfig(packing=False, dtype="float32")
    loss_before = evaluate_loss(model, held, exact, tok.pad_token_id)
    stats = train_causal_lm(model, tok, train, _lora_cfg(dtype="float32"))
    loss_after = evaluate_loss(model, held, exact, tok.pad_token_id)
    return model, before, stats, loss_before, loss_after


def test_lora_training_lowers_the_loss_and_changes_the_weights(lora_run):
    model, before, stats, loss_before, loss_after = lora_run
    assert stats.finetune == "lora" and stats.steps == 15
    # frozen random embeddings (tied to the output layer) limit what adapters can learn here: ~0.25-0.3
    assert stats.final_loss < stats.first_loss - 0.15
    assert loss_after < loss_before - 0.15  # held-out examples, never trained on
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all(_is_adapted(n) for n in changed)


def test_lora_updates_only_the_targets_by_rank_at_most_r(lora_run):
    model, before, _, _, _ = lora_run
    after = dict(model.named_parameters())
    assert sorted(after) == sorted(before)  # no adapter parameter is left in the model
    n_adapted = 0
    for name, w0 in before.items():
        delta = (after[name].detach() - w0).double()
        if not _is_adapted(name):  # embeddings (tied to the output layer) and norms
            assert torch.count_nonzero(delta) == 0, name
            continue
        n_adapted += 1
        rank = int(torch.linalg.matrix_rank(delta, rtol=1e-5))
        assert 1 <= rank <= RANK, (name, rank)
    assert n_adapted == SPEC.num_layers * len(DEFAULT_LORA_TARGETS)


def test_full_fine_tuning_updates_are_not_low_rank(data):
    """The control for the rank test: the same run with full fine-tuning moves every weight, at high rank."""
    tok, examples = data
    model = tiny_llama(SPEC, tok, seed=1)
    before = _weights(model)
    stats = train_causal_lm(model, tok, examples[:32], _lora_cfg(dtype="float32", finetune="full", max_steps=2))
    assert stats.finetune == "full" and stats.trainable_parameters == sum(p.numel() for p in model.parameters())
    q = "model.layers.0.self_attn.q_proj.weight"
    delta = (dict(model.named_parameters())[q].detach() - before[q]).double()
    assert int(torch.linalg.matrix_rank(delta, rtol=1e-5)) > RANK
    assert not torch.equal(model.get_input_embeddings().weight, before["model.embed_tokens.weight"])


def test_trainable_parameters_are_the_adapters(lora_run):
    model, _, stats, _, _ = lora_run
    expected = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in DEFAULT_LORA_TARGETS:
            expected += RANK * (module.in_features + module.out_features)  # A: r x in, B: out x r
    assert stats.trainable_parameters == expected
    assert all(p.requires_grad for p in model.parameters())  # the flags are back after the merge


@pytest.mark.parametrize("packing,dtype,accum", [(True, "float32", 1), (False, "float32", 3), (True, "bfloat16", 2)])
def test_only_the_adapters_get_gradients(data, packing, dtype, accum):
    tok, examples = data
    model = tiny_llama(SPEC, tok, seed=1)
    cfg = _lora_cfg(packing=packing, dtype=dtype, grad_accum_steps=accum)
    with lora_adapters(model, RANK, 8.0, 0.0, DEFAULT_LORA_TARGETS) as info:
        with packed_attention(model) if packing else nullcontext(False) as varlen:
            runner = StepRunner(model, examples, cfg.step_layout(), tok.pad_token_id, varlen)
            runner.step(list(range(16)), {})
        grads = {n: p.grad for n, p in model.named_parameters()}
        assert {n for n, g in grads.items() if g is not None} == {n for n in grads if ".lora_" in n}
        assert all(float(g.abs().sum()) > 0 for n, g in grads.items() if ".lora_B." in n)
        assert info.trainable_parameters == sum(g.numel() for g in grads.values() if g is not None)
        for p in model.parameters():
            p.grad = None
    assert not any(".lora_" in n for n, _ in model.named_parameters())


def test_lora_with_bf16_autocast_and_oom_safe_micro_batches_trains(data):
    tok, examples = data
    model = tiny_llama(SPEC, tok, seed=1)
    cfg = _lora_cfg(max_steps=10, dtype="bfloat16", grad_accum_steps=2, max_length=256, max_tokens_per_micro_batch=600)
    stats = train_causal_lm(model, tok, examples[:64], cfg)
    assert stats.dtype == "bfloat16" and stats.micro_batches > 2 * stats.steps  # the budget cut each part
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert stats.final_loss < stats.first_loss - 0.15


def _oom_above(model, limit: int, in_backward: bool) -> None:
    """Make ``model``'s forward (or its backward) run out of memory for inputs over ``limit`` tokens."""
    forward = model.forward

    def guarded(*args, **kwargs):
        n = kwargs["input_ids"].numel()
        if n > limit and not in_backward:
            raise torch.OutOfMemoryError(f"simulated: tried to allocate for {n} tokens; out of memory")
        out = forward(*args, **kwargs)
        if n > limit and in_backward and out.logits.requires_grad:

            def fail(grad):
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")

            out.logits.register_hook(fail)
        return out

    model.forward = guarded


@pytest.mark.parametrize("in_backward", [False, True])
def test_lora_out_of_memory_splits_lose_no_step(data, in_backward):
    tok, examples = data
    batch = examples[:24]
    total = sum(len(ids) for ids, _ in batch)
    cfg = _lora_cfg(max_steps=3, batch_size=24, dtype="float32")
    reference = tiny_llama(SPEC, tok, seed=1)
    ref_stats = train_causal_lm(reference, tok, batch, cfg)
    model = tiny_llama(SPEC, tok, seed=1)
    _oom_above(model, total // 3, in_backward)
    stats = train_causal_lm(model, tok, batch, cfg)
    assert stats.oom_splits >= 2 and stats.micro_batches > ref_stats.micro_batches
    assert stats.tokens == ref_stats.tokens == 3 * total  # every token trained on once per step
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)


def test_lora_checkpoint_is_a_plain_transformers_model(lora_run, data, tmp_path):
    model, _, _, _, _ = lora_run
    tok, examples = data
    out = save_checkpoint(model, tok, tmp_path / "ckpt")
    files = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in files and not any("adapter" in f for f in files)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if "lora" in k or "base_model" in k or "base_layer" in k]
    assert "peft" not in json.dumps(json.loads((out / "config.json").read_text())).lower()
    reloaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert type(reloaded).__name__ == "LlamaForCausalLM"
    ids = torch.tensor([examples[0][0]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)


def test_lora_runs_are_reproducible(data):
    tok, examples = data
    weights = []
    for _ in range(2):
        model = tiny_llama(SPEC, tok, seed=1)
        train_causal_lm(model, tok, examples[:32], _lora_cfg(max_steps=2, dtype="float32"))
        weights.append(_weights(model))
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_a_failed_lora_run_leaves_the_base_weights(data):
    tok, examples = data
    model = tiny_llama(SPEC, tok, seed=1)
    before = _weights(model)

    def fail(step, total, loss):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_causal_lm(model, tok, examples[:32], _lora_cfg(max_steps=3), progress=fail)
    after = _weights(model)
    assert sorted(after) == sorted(before)
    assert all(torch.equal(after[n], before[n]) for n in before)


def test_bad_lora_settings_are_named():
    with pytest.raises(ValueError, match="finetune must be one of full, lora, got 'qlora'"):
        TrainConfig(finetune="qlora")
    with pytest.raises(ValueError, match="lora_rank must be an integer >= 1, got 0"):
        TrainConfig(finetune="lora", lora_rank=0)
    with pytest.raises(ValueError, match="lora_rank must be an integer >= 1, got 2.5"):
        TrainConfig(lora_rank=2.5)
    with pytest.raises(ValueError, match="lora_alpha must be > 0, got -1"):
        TrainConfig(lora_alpha=-1)
    with pytest.raises(ValueError, match="lora_dropout must be in \\[0, 1\\), got 1.0"):
        TrainConfig(lora_dropout=1.0)
    with pytest.raises(ValueError, match="lora_targets must be a list of layer names, not one string: got 'q_proj'"):
        TrainConfig(lora_targets="q_proj")
    with pytest.raises(ValueError, match="lora_targets must be a non-empty list of layer names, got \\(\\)"):
        TrainConfig(lora_targets=())
    assert TrainConfig(lora_targets=["q_proj", "v_proj"]).lora_targets == ("q_proj", "v_proj")  # hashable


def test_lora_targets_that_match_no_layer_are_named(data):
    tok, examples = data
    model = tiny_llama(SPEC, tok, seed=1)
    before = _weights(model)
    cfg = _lora_cfg(lora_targets=("q_proj", "query_key_value"))
    with pytest.raises(ValueError, match=r"lora_targets \['query_key_value'\] match no linear layer.*'q_proj'"):
        train_causal_lm(model, tok, examples[:16], cfg)
    assert all(torch.equal(p, before[n]) and p.requires_grad for n, p in model.named_parameters())


def test_missing_peft_names_the_install_command(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # as if not installed: import peft raises ImportError
    with pytest.raises(PeftNotInstalled, match="pip install peft"):
        TrainConfig(finetune="lora")
    with pytest.raises(ValueError, match="pip install peft"):
        TrainerResource(finetune="lora")
    assert TrainConfig().finetune == "full"  # full fine-tuning never needs it
    tok, examples = data
    model = tiny_llama(SPEC, tok, seed=1)
    with pytest.raises(PeftNotInstalled, match="pip install peft"), lora_adapters(model, 4, 8.0, 0.0, ("q_proj",)):
        pass


def test_trainer_resource_passes_the_lora_settings():
    res = TrainerResource(finetune="lora", lora_rank=8, lora_alpha=16, lora_dropout=0.1, lora_targets=["q_proj"])
    cfg = res.train_config(seed=3)
    assert (cfg.finetune, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets) == (
        "lora",
        8,
        16.0,
        0.1,
        ("q_proj",),
    )
    default = TrainerResource().train_config(seed=0)
    assert default.finetune == "full" and default.lora_targets == DEFAULT_LORA_TARGETS
    for bad, match in [
        ({"lora_rank": 0}, "lora_rank must be >= 1, got 0"),
        ({"lora_alpha": 0}, "lora_alpha must be > 0, got 0"),
        ({"lora_dropout": -0.1}, "lora_dropout must be in \\[0, 1\\), got -0.1"),
        ({"lora_targets": []}, "lora_targets must be a non-empty list of layer names, got \\[\\]"),
        ({"finetune": "qlora"}, "finetune"),
    ]:
        with pytest.raises(Exception, match=match):
            TrainerResource(**bad)
