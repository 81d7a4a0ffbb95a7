"""The trainer: packing is exact, micro-batches add up to the batch, OOM splits lose nothing, bf16 trains.

A real (tiny, randomly initialised) Llama and a real BPE tokenizer on real arithmetic problems; the
only stand-in is a model forward that raises out-of-memory above a size, to test the fallback.
"""

import math
import random
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from restem_pipeline.data import arith
from restem_pipeline.data.prompts import TEMPLATES
from restem_pipeline.generation.modeling import TinyLlamaSpec, tiny_llama, train_tokenizer
from restem_pipeline.training.batching import IGNORE_INDEX, micro_batch, pack_rows, plan_micro_batches
from restem_pipeline.training.finetune import (
    TrainConfig,
    evaluate_loss,
    held_out_mask,
    lr_at,
    tokenize_pairs,
)
from restem_pipeline.training.loop import train_causal_lm
from restem_pipeline.training.micro_steps import StepRunner, autocast_dtype, cpu_has_native_bf16, micro_batch_logits
from restem_pipeline.training.packed_attention import NAME, packed_attention

TPL = TEMPLATES["arith"]
SPEC = TinyLlamaSpec(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_positions=256)


@pytest.fixture(scope="module")
def data():
    pool = arith.pretraining_pool(3, (30, 30, 20, 10, 10))
    prompts = [TPL.render(q) for q, _ in pool]
    targets = [TPL.target(a) for _, a in pool]
    tok = train_tokenizer([p + t for p, t in zip(prompts, targets, strict=True)], 320)
    return tok, tokenize_pairs(tok, prompts, targets, 256)


def _model(tok, kv_heads: int | None = None, attn: str = "sdpa"):
    model = tiny_llama(SPEC, tok, seed=1)
    if kv_heads:  # grouped-query attention: fewer key/value heads than query heads
        cfg = model.config
        cfg.num_key_value_heads = kv_heads
        model = type(model)(cfg)
    model.config._attn_implementation = attn
    return model.eval()


def _example_losses(model, examples, rows, packed: bool, pad_to: int = 1, amp=None) -> dict[int, float]:
    """Mean loss per example from one forward over ``rows``."""
    mb = micro_batch(examples, rows, 0, packed, pad_to)
    with torch.no_grad():
        logits = micro_batch_logits(model, mb, amp).float()
    tok_loss = F.cross_entropy(logits.flatten(0, 1), mb.targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
    seg, tgt = mb.segments.flatten(), mb.targets.flatten()
    return {i: float(tok_loss[(seg == i) & (tgt != IGNORE_INDEX)].mean()) for row in rows for i in row}


@pytest.mark.parametrize(
    "attn,kv_heads,varlen",
    [("sdpa", None, True), ("sdpa", 2, True), ("eager", None, True), ("sdpa", None, False), ("eager", None, False)],
)
def test_packed_loss_equals_one_example_at_a_time(data, attn, kv_heads, varlen):
    tok, examples = data
    model = _model(tok, kv_heads, attn)
    idx = list(range(12))
    alone = {i: _example_losses(model, examples, [[i]], packed=False)[i] for i in idx}
    rows = pack_rows([len(examples[i][0]) for i in idx], 400)  # positions in idx are the indices
    with packed_attention(model) if varlen else torch.no_grad():
        assert model.config._attn_implementation == (NAME if varlen else attn)
        packed = {}
        for r in rows:
            packed.update(_example_losses(model, examples, [r], packed=True))
        padded = _example_losses(model, examples, [[i] for i in idx], packed=False)  # several rows, right padding
    assert model.config._attn_implementation == attn  # restored
    assert any(len(r) > 1 for r in rows)
    for i in idx:
        assert packed[i] == pytest.approx(alone[i], rel=1e-5, abs=1e-6)
        assert padded[i] == pytest.approx(alone[i], rel=1e-5, abs=1e-6)


def test_bf16_packed_rows_match_fp32_one_at_a_time(data):
    tok, examples = data
    model = _model(tok)
    idx = list(range(12))
    alone = {i: _example_losses(model, examples, [[i]], packed=False)[i] for i in idx}
    with packed_attention(model):
        packed = _example_losses(model, examples, [idx], packed=True, pad_to=64, amp=torch.bfloat16)
    for i in idx:
        assert packed[i] == pytest.approx(alone[i], rel=2e-2)


@pytest.mark.parametrize("varlen", [True, False])
def test_no_attention_across_examples_in_a_pack(data, varlen):
    tok, examples = data
    model = _model(tok)
    a, b = examples[0], examples[1]
    changed_a = ([(t + 7) % 300 for t in a[0]], a[1])
    with packed_attention(model) if varlen else torch.no_grad(), torch.no_grad():
        mb1 = micro_batch([a, b], [[0, 1]], 0, packed=True)
        mb2 = micro_batch([changed_a, b], [[0, 1]], 0, packed=True)
        l1, l2 = micro_batch_logits(model, mb1), micro_batch_logits(model, mb2)
    in_b = mb1.segments[0] == 1
    in_a = mb1.segments[0] == 0
    assert torch.equal(mb1.segments, mb2.segments) and int(in_b.sum()) == len(b[0])
    assert not torch.allclose(l1[0, in_a], l2[0, in_a])  # A's own logits do change
    torch.testing.assert_close(l1[0, in_b], l2[0, in_b], rtol=1e-5, atol=1e-6)  # B's do not


def test_targets_stay_inside_each_example():
    a = ([5, 6, 7, 8], 2)  # prompt 5 6 | completion 7 8
    b = ([9, 10, 11], 0)  # no prompt: 10 and 11 are targets, 9 has no context to be predicted from
    mb = micro_batch([a, b], [[0, 1]], 0, packed=True)
    assert mb.inputs["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11]]
    assert mb.inputs["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2]]
    # position j predicts token j + 1 of the same example; A's last token (8) never predicts B's first (9)
    assert mb.targets.tolist() == [[IGNORE_INDEX, 7, 8, IGNORE_INDEX, 10, 11, IGNORE_INDEX]]
    assert mb.real_tokens == 7 and mb.target_tokens == 4
    bucketed = micro_batch([a, b], [[0, 1]], 0, packed=True, pad_to=4)  # width rounded up: padding is its own run
    assert bucketed.inputs["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 0]]
    assert bucketed.targets.tolist()[0][:7] == mb.targets.tolist()[0] and bucketed.targets[0, 7] == IGNORE_INDEX
    assert bucketed.segments.tolist() == [[0, 0, 0, 0, 1, 1, 1, -1]] and bucketed.real_tokens == 7
    padded = micro_batch([a, b], [[0], [1]], 0, packed=False)
    assert padded.targets.tolist() == [[IGNORE_INDEX, 7, 8, IGNORE_INDEX], [10, 11, IGNORE_INDEX, IGNORE_INDEX]]
    assert padded.inputs["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_pack_rows_places_every_example_once_within_capacity():
    rng = random.Random(0)
    lengths = [rng.randint(10, 90) for _ in range(57)]
    rows = pack_rows(lengths, 200)
    assert sorted(i for r in rows for i in r) == list(range(57))
    assert all(sum(lengths[i] for i in r) <= 200 for r in rows)
    assert len(rows) <= math.ceil(sum(lengths) / 200) + 2
    with pytest.raises(ValueError, match="an example of 201 tokens does not fit in a row of 200"):
        pack_rows([201], 200)


def _step_grads(tok, examples, model=None, **cfg_kw) -> tuple[dict[str, torch.Tensor], float, dict]:
    """Gradients, loss and counts of one accumulated step over all ``examples`` (no optimizer update)."""
    model = model or tiny_llama(SPEC, tok, seed=1)
    cfg = TrainConfig(batch_size=len(examples), **cfg_kw)
    totals: dict[str, int] = {}
    with packed_attention(model) if cfg.packing else nullcontext(False) as varlen:
        runner = StepRunner(model, examples, cfg.step_layout(), tok.pad_token_id, varlen)
        loss = runner.step(list(range(len(examples))), totals)
    totals["oom_splits"] = runner.oom_splits
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}, loss, totals


def _assert_same_grads(a, b):
    for name in a:
        scale = float(a[name].abs().max())
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_packed_and_padded_steps_give_the_same_gradient(data):
    tok, examples = data
    batch = examples[:24]
    packed, l1, t1 = _step_grads(tok, batch, dtype="float32", packing=True)
    padded, l2, t2 = _step_grads(tok, batch, dtype="float32", packing=False)
    _assert_same_grads(packed, padded)
    assert l1 == pytest.approx(l2, rel=1e-5)
    assert t1["tokens"] == t2["tokens"] == sum(len(ids) for ids, _ in batch)
    assert t1["computed_tokens"] == t1["tokens"]  # one packed row: no padding computed
    assert t2["computed_tokens"] > t2["tokens"]


def test_gradient_accumulation_matches_one_big_batch(data):
    tok, examples = data
    batch = examples[:24]
    whole, l1, t1 = _step_grads(tok, batch, dtype="float32")
    accumulated, l2, t2 = _step_grads(tok, batch, dtype="float32", grad_accum_steps=4)
    budget, l3, t3 = _step_grads(tok, batch, dtype="float32", max_length=256, max_tokens_per_micro_batch=300)
    padded, l4, t4 = _step_grads(tok, batch, dtype="float32", packing=False, grad_accum_steps=3)
    for other in (accumulated, budget, padded):
        _assert_same_grads(whole, other)
    assert (t1["micro_batches"], t2["micro_batches"], t4["micro_batches"]) == (1, 4, 3)
    assert t3["micro_batches"] > 4  # the token budget cut the step further
    assert l1 == pytest.approx(l2, rel=1e-5) and l1 == pytest.approx(l3, rel=1e-5) and l1 == pytest.approx(l4, rel=1e-5)


def test_a_packed_training_run_matches_a_padded_one(data):
    tok, examples = data
    runs = {}
    for packing in (True, False):
        model = tiny_llama(SPEC, tok, seed=1)
        cfg = TrainConfig(max_steps=1, batch_size=24, learning_rate=1e-3, warmup_ratio=0.0, packing=packing)
        runs[packing] = train_causal_lm(model, tok, examples[:24], cfg)
    assert runs[True].tokens == runs[False].tokens and runs[True].target_tokens == runs[False].target_tokens
    assert runs[True].loss_history[0] == pytest.approx(runs[False].loss_history[0], rel=1e-2)  # bf16 on some CPUs
    assert runs[True].computed_tokens < runs[False].computed_tokens


def test_lr_schedules_at_hand_worked_steps():
    # total 10 steps, 2 of warm-up, peak 1.0: warm-up 0.5, 1.0; then progress (step - 2) / 8
    for schedule in ("cosine", "linear", "constant"):
        assert lr_at(0, 10, 1.0, 2, schedule) == pytest.approx(0.5)
        assert lr_at(1, 10, 1.0, 2, schedule) == pytest.approx(1.0)
        assert lr_at(2, 10, 1.0, 2, schedule) == pytest.approx(1.0)
    assert lr_at(4, 10, 1.0, 2, "cosine") == pytest.approx(0.1 + 0.45 * (1 + math.sqrt(0.5)))  # progress 1/4
    assert lr_at(6, 10, 1.0, 2, "cosine") == pytest.approx(0.55)
    assert lr_at(10, 10, 1.0, 2, "cosine") == pytest.approx(0.1)
    assert lr_at(4, 10, 1.0, 2, "linear") == pytest.approx(0.775)
    assert lr_at(10, 10, 1.0, 2, "linear") == pytest.approx(0.1)
    assert lr_at(7, 10, 1.0, 2, "constant") == 1.0


def test_optimizer_follows_the_schedule(data, monkeypatch):
    tok, examples = data
    seen = []
    model = tiny_llama(SPEC, tok, seed=1)
    cfg = TrainConfig(max_steps=6, batch_size=8, learning_rate=1e-2, warmup_ratio=0.34, lr_schedule="linear")
    original = torch.optim.AdamW.step

    def record(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    train_causal_lm(model, tok, examples, cfg)
    assert seen == pytest.approx([lr_at(s, 6, 1e-2, 2, "linear") for s in range(6)])


def test_validation_loss_every_eval_every_steps(data):
    tok, examples = data
    train, val = examples[:60], examples[60:80]
    model = tiny_llama(SPEC, tok, seed=1)
    calls = []
    cfg = TrainConfig(max_steps=7, batch_size=8, learning_rate=5e-3, eval_every=3)
    stats = train_causal_lm(model, tok, train, cfg, validation=val, on_validation=lambda s, v: calls.append((s, v)))
    assert [s for s, _ in stats.val_loss_history] == [3, 6, 7]
    assert calls == stats.val_loss_history
    assert all(math.isfinite(v) for _, v in stats.val_loss_history)
    assert stats.val_loss_history[-1][1] < stats.val_loss_history[0][1]
    # the recorded value is the trained model's loss on exactly those examples
    assert stats.final_val_loss == pytest.approx(evaluate_loss(model, val, cfg, tok.pad_token_id), rel=1e-6)


def _oom_above(model, limit: int, in_backward: bool = False):
    """Make ``model``'s forward (or its backward) run out of memory for inputs over ``limit`` tokens."""
    forward = model.forward
    seen = []

    def guarded(*args, **kwargs):
        n = kwargs["input_ids"].numel()
        seen.append(n)
        if n > limit and not in_backward:
            raise torch.OutOfMemoryError(f"simulated: tried to allocate for {n} tokens; out of memory")
        out = forward(*args, **kwargs)
        if n > limit and in_backward and out.logits.requires_grad:

            def fail(grad):
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")

            out.logits.register_hook(fail)
        return out

    model.forward = guarded
    return seen


@pytest.mark.parametrize("in_backward", [False, True])
def test_out_of_memory_splits_the_micro_batch_and_loses_no_step(data, in_backward):
    tok, examples = data
    batch = examples[:24]
    total = sum(len(ids) for ids, _ in batch)
    reference, ref_loss, ref_totals = _step_grads(tok, batch, dtype="float32")
    model = tiny_llama(SPEC, tok, seed=1)
    seen = _oom_above(model, total // 3, in_backward)
    grads, loss, totals = _step_grads(tok, batch, model=model, dtype="float32")
    assert max(seen) == total and totals["oom_splits"] >= 2 and totals["micro_batches"] >= 4
    assert totals["tokens"] == ref_totals["tokens"] == total  # every token counted (and trained on) once
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    _assert_same_grads(reference, grads)
    # and through the trainer: the step completes, the budget stays lowered for later steps
    model = tiny_llama(SPEC, tok, seed=1)
    _oom_above(model, total // 3, in_backward)
    cfg = TrainConfig(max_steps=3, batch_size=24, learning_rate=1e-3)
    stats = train_causal_lm(model, tok, batch, cfg)
    assert stats.steps == 3 and stats.tokens == 3 * total and stats.oom_splits >= 2
    assert all(math.isfinite(v) for v in stats.loss_history)


def test_out_of_memory_on_one_example_names_the_settings(data):
    tok, examples = data
    model = tiny_llama(SPEC, tok, seed=1)
    _oom_above(model, 0)
    cfg = TrainConfig(max_steps=1, batch_size=4, max_length=256, max_tokens_per_micro_batch=1024)
    with pytest.raises(
        RuntimeError,
        match=r"single example of \d+ tokens: lower max_length \(now 256\).*"
        r"max_tokens_per_micro_batch \(now 1024",
    ):
        train_causal_lm(model, tok, examples[:4], cfg)


def test_other_runtime_errors_are_not_taken_for_out_of_memory(data):
    tok, examples = data
    model = tiny_llama(SPEC, tok, seed=1)

    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    model.forward = broken
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        train_causal_lm(model, tok, examples[:4], TrainConfig(max_steps=1, batch_size=4))


def test_examples_longer_than_the_budget_are_rejected_up_front(data):
    tok, examples = data
    model = tiny_llama(SPEC, tok, seed=1)
    long = [(list(range(3, 300)) * 2, 5)]
    cfg = TrainConfig(max_steps=1, batch_size=1, max_length=256, max_tokens_per_micro_batch=512)
    with pytest.raises(ValueError, match="an example has 594 tokens, more than max_tokens_per_micro_batch \\(512\\)"):
        train_causal_lm(model, tok, long, cfg)


def test_bf16_autocast_trains_with_fp32_master_weights(data):
    tok, examples = data
    model = tiny_llama(SPEC, tok, seed=1)
    cfg = TrainConfig(max_steps=30, batch_size=16, learning_rate=1e-2, dtype="bfloat16")
    stats = train_causal_lm(model, tok, examples[:64], cfg)
    assert stats.dtype == "bfloat16"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert stats.final_loss < stats.first_loss - 0.5


def test_auto_dtype_follows_the_cpu_flags():
    with open("/proc/cpuinfo") as f:
        flags = set(" ".join(line for line in f if line.startswith("flags")).split())
    native = bool(flags & {"amx_bf16", "avx512_bf16"})
    assert cpu_has_native_bf16() == native
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) == (torch.bfloat16 if native else None)
    assert autocast_dtype("float32", cpu) is None
    assert autocast_dtype("bfloat16", cpu) == torch.bfloat16


def test_micro_batch_plan_respects_the_budget(data):
    _, examples = data
    idx = list(range(40))
    for packed in (True, False):
        plan = plan_micro_batches(examples, idx, 1000, packed, capacity=256 if not packed else 1000)
        assert sorted(i for mb in plan for row in mb for i in row) == idx
        for mb in plan:
            width = max(sum(len(examples[i][0]) for i in row) for row in mb)
            assert len(mb) * width <= 1000


def test_held_out_mask_holds_out_whole_groups():
    groups = [f"p{i // 3}" for i in range(60)]  # 20 problems, 3 rows each
    mask = held_out_mask(groups, 0.2, seed=4)
    held = {g for g, m in zip(groups, mask, strict=True) if m}
    assert len(held) == 4
    assert all(m == (g in held) for g, m in zip(groups, mask, strict=True))
    assert mask == held_out_mask(groups, 0.2, seed=4) and mask != held_out_mask(groups, 0.2, seed=5)
    assert not any(held_out_mask(groups, 0.0, seed=4))
    assert sum(held_out_mask(["a", "a", "b"], 0.9, seed=0)) < 3  # never everything
    with pytest.raises(ValueError, match="validation_fraction must be in \\[0, 1\\), got 1.5"):
        held_out_mask(groups, 1.5, seed=0)


def test_train_config_names_bad_values():
    with pytest.raises(ValueError, match="lr_schedule must be one of cosine, linear, constant, got 'step'"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="dtype must be one of auto, float32, bfloat16, got 'fp16'"):
        TrainConfig(dtype="fp16")
    with pytest.raises(ValueError, match="grad_accum_steps must be in 1..batch_size \\(8\\), got 9"):
        TrainConfig(batch_size=8, grad_accum_steps=9)
    with pytest.raises(ValueError, match="max_tokens_per_micro_batch \\(100\\) must be >= max_length \\(320\\)"):
        TrainConfig(max_tokens_per_micro_batch=100)
    with pytest.raises(ValueError, match="eval_every must be >= 0, got -1"):
        TrainConfig(eval_every=-1)


def test_gradient_checkpointing_recomputes_and_trains_the_same(data):
    """Same losses and weights with activations recomputed in backward; switched off again afterwards."""
    tok, examples = data
    runs = {}
    for on in (False, True):
        model = _model(tok)
        seen: list[bool] = []
        cfg = TrainConfig(max_steps=3, batch_size=8, learning_rate=1e-3, dtype="float32", gradient_checkpointing=on)
        stats = train_causal_lm(
            model, tok, examples[:24], cfg, progress=lambda *_, m=model, s=seen: s.append(m.is_activation_checkpointing)
        )
        assert seen == [on] * 3 and not model.is_activation_checkpointing
        runs[on] = (stats.loss_history, model.state_dict())
    (loss_off, w_off), (loss_on, w_on) = runs[False], runs[True]
    assert loss_on == pytest.approx(loss_off, rel=1e-6)
    assert all(torch.allclose(w_on[k], w_off[k], atol=1e-6) for k in w_off)
    assert any(not torch.equal(w_on[k], _model(tok).state_dict()[k]) for k in w_on)  # it trained
