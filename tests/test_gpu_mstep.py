"""The GPU M-step's pieces against independent references: FlexAttention document mask, chunked loss, kernels.

References are computed another way, never by the code under test: per-token losses and gradients
of a *packed* batch against the plain model run on *one example at a time* with its own causal sdpa
(no position ids, no packing); the chunked cross-entropy against ``F.cross_entropy`` on the full
logits; the block mask against torch's ``create_block_mask`` on the same element mask and against a
mask written from the examples' lengths.

What runs on CPU here: FlexAttention's forward (unfused: torch 2.13 has no CPU backward), the block
classification, the chunked loss, and gradients of the flex path's wiring through ``flex_dense`` (the
same attention function and element mask, sdpa on the materialised mask in place of the kernel).
What only CUDA runs (marked ``gpu``, skipped here with ``NO_CUDA``): the fused FlexAttention kernel's
forward and backward, bf16 on it, the compiled path end to end.

Tolerances: fp32 sums in a different order differ in the last bits, so losses agree to a relative
1e-5 and gradients to 1e-4 relative plus 1e-5 of each tensor's largest entry (as tests/test_training.py);
bf16 carries 3 significant digits, so bf16 comparisons allow 2e-2 relative on losses and, on gradients,
2e-2 of the largest entry against a bf16 reference (the chunked loss) or 5e-2 against fp32 (the CUDA
kernel). A real tiny Llama and BPE tokenizer on arithmetic problems; nothing mocked.
"""

import importlib.util
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, create_mask

from restem_pipeline.data import arith
from restem_pipeline.data.prompts import TEMPLATES
from restem_pipeline.generation.modeling import TinyLlamaSpec, tiny_llama, train_tokenizer
from restem_pipeline.training.batching import IGNORE_INDEX, micro_batch, pack_rows
from restem_pipeline.training.chunked_loss import linear_cross_entropy_sum
from restem_pipeline.training.finetune import TrainConfig, tokenize_pairs
from restem_pipeline.training.flex_packed import DENSE_NAME, NAME, document_block_mask
from restem_pipeline.training.gpu_bench import bench_mstep, model_flops, step_batches
from restem_pipeline.training.kernels import Kernels, resolve, training_kernels
from restem_pipeline.training.loop import train_causal_lm
from restem_pipeline.training.micro_steps import StepRunner, micro_batch_logits
from restem_pipeline.training.packed_attention import packed_attention

TPL = TEMPLATES["arith"]
SPEC = TinyLlamaSpec(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_positions=256)
# on CUDA a head dim of 32: FlexAttention's Triton kernel tiles head dims of 16 and more
GPU_SPEC = TinyLlamaSpec(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=256, max_positions=256)
NO_CUDA = "needs a CUDA GPU: FlexAttention's fused kernel and its backward run on CUDA only"
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)


@pytest.fixture(scope="module")
def data():
    pool = arith.pretraining_pool(3, (30, 30, 20, 10, 10))
    prompts = [TPL.render(q) for q, _ in pool]
    targets = [TPL.target(a) for _, a in pool]
    tok = train_tokenizer([p + t for p, t in zip(prompts, targets, strict=True)], 320)
    return tok, tokenize_pairs(tok, prompts, targets, 256)


def _model(tok, kv_heads: int | None = 2, device: str = "cpu", spec: TinyLlamaSpec = SPEC):
    """The tiny Llama with grouped-query attention (2 key/value heads for 4 query heads) by default."""
    model = tiny_llama(spec, tok, seed=1)
    if kv_heads:
        cfg = model.config
        cfg.num_key_value_heads = kv_heads
        torch.manual_seed(1)
        model = type(model)(cfg)
    model.config._attn_implementation = "sdpa"
    return model.to(device)


def _alone(model, examples, idx, amp=None) -> tuple[dict[int, torch.Tensor], dict[str, torch.Tensor]]:
    """Reference: each example alone through the plain model; per-token losses and the summed-loss gradients."""
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    per_token = {}
    for i in idx:
        ids, p = examples[i]
        x = torch.tensor([ids], device=device)
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            logits = model(input_ids=x, use_cache=False).logits.float()[0]
        start = max(p, 1)
        loss = F.cross_entropy(logits[start - 1 : -1], x[0, start:], reduction="none")
        loss.sum().backward()
        per_token[i] = loss.detach()
    return per_token, {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _packed(model, examples, rows, kernels: Kernels | None, amp=None, pad_to=128, grad=True):
    """Per-token losses (by example) and gradients of one packed micro-batch, through the trainer's loss path."""
    from restem_pipeline.training.micro_steps import micro_batch_loss_sum

    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    mb = micro_batch(examples, rows, 0, packed=True, pad_to=pad_to).to(device)
    with torch.no_grad():
        logits = micro_batch_logits(model, mb, amp).float()
        per = F.cross_entropy(logits.flatten(0, 1), mb.targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
    if grad:
        micro_batch_loss_sum(model, mb, amp, kernels).backward()
    seg, tgt = mb.segments.flatten(), mb.targets.flatten().cpu()
    by_example = {i: per.detach().cpu()[(seg == i) & (tgt != IGNORE_INDEX)] for row in rows for i in row}
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()} if grad else {}
    return by_example, grads


def _assert_same_grads(a, b, rtol=1e-4, rel_atol=1e-5):
    for name in a:
        scale = float(a[name].abs().max())
        torch.testing.assert_close(b[name], a[name], rtol=rtol, atol=rel_atol * scale, msg=name)


def _rows(examples, idx, capacity=700):
    return [[idx[j] for j in r] for r in pack_rows([len(examples[i][0]) for i in idx], capacity)]


# ------------------------------------------------------------------------------------------ the block mask


def _positions(lengths_per_row: list[list[int]], width: int) -> torch.Tensor:
    rows = []
    for lengths in lengths_per_row:
        pos = [p for n in lengths for p in range(n)]
        rows.append(pos + list(range(width - len(pos))))  # padding restarts at 0: an example of its own
    return torch.tensor(rows)


def _mask_from_lengths(lengths_per_row: list[list[int]], width: int) -> torch.Tensor:
    """(rows, width, width) document-causal mask written from the examples' lengths."""
    out = torch.zeros(len(lengths_per_row), width, width, dtype=torch.bool)
    for r, lengths in enumerate(lengths_per_row):
        spans, start = [], 0
        for n in [*lengths, width - sum(lengths)]:
            spans.append((start, start + n))
            start += n
        for a, b in spans:
            out[r, a:b, a:b] = torch.ones(b - a, b - a, dtype=torch.bool).tril()
    return out


@pytest.mark.parametrize("width", [128, 300, 640])
def test_block_mask_is_the_document_mask_and_torchs_own_block_layout(width):
    rng = random.Random(width)
    lengths = []
    for _ in range(3):
        row: list[int] = []
        while sum(row) < width - 20:
            row.append(min(rng.choice([1, 3, 40, 127, 128, 129, 200]), width - 20 - sum(row)))
        lengths.append([n for n in row if n > 0])
    pos = _positions(lengths, width)
    bm = document_block_mask(pos)
    dense = create_mask(bm.mask_mod, len(lengths), 1, width, width, device="cpu")[:, 0]
    assert torch.equal(dense, _mask_from_lengths(lengths, width))
    ref = create_block_mask(bm.mask_mod, len(lengths), None, width, width, device="cpu")
    assert torch.equal(bm.to_dense(), ref.to_dense())  # the same tiles computed, partial and full
    assert torch.equal(bm.kv_num_blocks, ref.kv_num_blocks)
    assert torch.equal(bm.full_kv_num_blocks, ref.full_kv_num_blocks)


def test_block_mask_computes_only_the_diagonal_for_tile_sized_examples():
    pos = torch.arange(128).repeat(64)[None]  # 64 examples of exactly one 128-token tile each
    bm = document_block_mask(pos)
    assert bm.kv_num_blocks.tolist() == [[[1] * 64]]  # one partial tile per query tile: its own diagonal
    assert bm.full_kv_num_blocks.tolist() == [[[0] * 64]]
    assert bm.kv_indices[0, 0, :, 0].tolist() == list(range(64))
    one = document_block_mask(torch.arange(1024)[None])  # one example: causal, whole tiles below the diagonal
    assert one.full_kv_num_blocks.tolist() == [[list(range(8))]] and one.kv_num_blocks.tolist() == [[[1] * 8]]


# ------------------------------------------------------------------------------------ attention on CPU


def test_flex_forward_equals_one_example_at_a_time(data):
    """FlexAttention's own forward (unfused on CPU), mask from the decoder hook or passed in."""
    tok, examples = data
    model = _model(tok).eval()
    idx = list(range(14))
    alone, _ = _alone(model, examples, idx)
    rows = _rows(examples, idx)
    assert any(len(r) > 1 for r in rows)
    with packed_attention(model, "flex") as on, torch.no_grad():
        assert on and model.config._attn_implementation == NAME
        packed, _ = _packed(model, examples, rows, None, grad=False)
        mb = micro_batch(examples, rows, 0, packed=True, pad_to=128)
        given = model(**mb.inputs, attention_mask=document_block_mask(mb.inputs["position_ids"])).logits
        hooked = micro_batch_logits(model, mb)
    assert model.config._attn_implementation == "sdpa" and not model.get_decoder()._forward_pre_hooks
    torch.testing.assert_close(given, hooked, rtol=0, atol=0)
    for i in idx:
        torch.testing.assert_close(packed[i], alone[i], rtol=1e-5, atol=1e-6)


def test_flex_path_gradients_equal_one_example_at_a_time(data):
    """Per-token loss and gradients of packed rows (flex wiring, element mask, chunked loss) vs one at a time."""
    tok, examples = data
    model = _model(tok)
    idx = list(range(14))
    alone, ref_grads = _alone(model, examples, idx)
    rows = _rows(examples, idx)
    kernels = Kernels(attention="flex_dense", chunked_loss=True, chunk_tokens=100)
    with training_kernels(model, kernels) as used:
        assert used == kernels and model.config._attn_implementation == DENSE_NAME
        packed, grads = _packed(model, examples, rows, used)
    for i in idx:
        torch.testing.assert_close(packed[i], alone[i], rtol=1e-5, atol=1e-6)
    _assert_same_grads(ref_grads, grads)


# ---------------------------------------------------------------------------------------- chunked loss


@pytest.mark.parametrize("chunk", [1, 7, 64, 333, 5000])
def test_chunked_cross_entropy_equals_the_full_logits_fp32(chunk):
    torch.manual_seed(chunk)
    n, hidden, vocab = 333, 48, 1000
    h = torch.randn(n, hidden, requires_grad=True)
    w = (0.2 * torch.randn(vocab, hidden)).requires_grad_()
    t = torch.randint(0, vocab, (n,))
    ref = F.cross_entropy(h @ w.t(), t, reduction="sum")
    ref_gh, ref_gw = torch.autograd.grad(3.0 * ref, (h, w))
    ref = float(ref.detach())
    got = linear_cross_entropy_sum(h, w, t, chunk_tokens=chunk)
    gh, gw = torch.autograd.grad(3.0 * got, (h, w))  # an outer factor: backward scales the kept gradients
    assert got.dtype == torch.float32 and float(got.detach()) == pytest.approx(ref, rel=1e-6)
    _assert_same_grads({"h": ref_gh, "w": ref_gw}, {"h": gh, "w": gw}, rtol=1e-5, rel_atol=1e-6)
    with torch.no_grad():  # evaluation: the loss alone
        assert float(linear_cross_entropy_sum(h, w, t, chunk_tokens=chunk)) == pytest.approx(ref, rel=1e-6)
    frozen = linear_cross_entropy_sum(h, w.detach(), t, chunk_tokens=chunk)  # LoRA: the head is frozen
    torch.testing.assert_close(torch.autograd.grad(frozen, h)[0], ref_gh / 3.0, rtol=1e-5, atol=1e-6)


def test_chunked_cross_entropy_in_bf16_matches_autocast_logits():
    torch.manual_seed(0)
    n, hidden, vocab = 256, 64, 3000
    h = torch.randn(n, hidden, requires_grad=True)
    w = (0.1 * torch.randn(vocab, hidden)).requires_grad_()
    t = torch.randint(0, vocab, (n,))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the model's own output layer under autocast
        logits = F.linear(h, w)
    ref = F.cross_entropy(logits.float(), t, reduction="sum")
    ref_g = dict(zip("hw", torch.autograd.grad(ref, (h, w)), strict=True))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy_sum(h, w, t, chunk_tokens=100)
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-4)  # same bf16 logits, fp32 log-sum-exp
    got_g = dict(zip("hw", torch.autograd.grad(got, (h, w)), strict=True))
    assert got_g["h"].dtype == got_g["w"].dtype == torch.float32
    _assert_same_grads(ref_g, got_g, rtol=2e-2, rel_atol=2e-2)


def test_chunked_cross_entropy_rejects_bad_shapes():
    with pytest.raises(ValueError, match="hidden must be \\(tokens, hidden\\) and targets \\(tokens,\\)"):
        linear_cross_entropy_sum(torch.zeros(2, 3, 4), torch.zeros(5, 4), torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_tokens must be >= 1, got 0"):
        linear_cross_entropy_sum(torch.zeros(2, 4), torch.zeros(5, 4), torch.zeros(2, dtype=torch.long), 0)


# ------------------------------------------------------------------------------- kernels and the trainer


def test_kernels_default_to_the_gpu_path_on_cuda_and_the_cpu_path_elsewhere():
    cfg = TrainConfig()
    assert resolve(cfg, "cuda") == Kernels(attention="flex", chunked_loss=True, compile=True)
    assert resolve(cfg, "cpu") == Kernels(attention="varlen", chunked_loss=True, compile=False)
    assert resolve(TrainConfig(loss="full", compile="on"), "cpu") == Kernels("varlen", False, True)
    assert resolve(TrainConfig(attention="varlen", compile="off"), "cuda") == Kernels("varlen", True, False)
    with pytest.raises(ValueError, match="attention='flex' trains on CUDA only"):
        resolve(TrainConfig(attention="flex"), "cpu")
    for field, bad in (("attention", "flash"), ("loss", "fused"), ("compile", "yes")):
        with pytest.raises(ValueError, match=f"{field} must be one of .*, got '{bad}'"):
            TrainConfig(**{field: bad})


def test_a_training_run_through_the_gpu_path_trains_like_the_cpu_path(data):
    """flex wiring + chunked loss on CPU: the same losses step by step as varlen + full logits, and it learns."""
    tok, examples = data
    runs = {}
    for name, kw in {"gpu": {"attention": "flex_dense", "loss": "chunked"}, "cpu": {"loss": "full"}}.items():
        model = _model(tok, kv_heads=None)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        cfg = TrainConfig(max_steps=12, batch_size=16, learning_rate=1e-2, dtype="float32", **kw)
        stats = train_causal_lm(model, tok, examples[:64], cfg)
        changed = max(float((model.state_dict()[k] - v).abs().max()) for k, v in init.items())
        runs[name] = (stats, changed, model)
    (gpu, gpu_changed, model), (cpu, _, _) = runs["gpu"], runs["cpu"]
    assert gpu.kernels == "attention=flex_dense loss=chunked compile=off"
    assert cpu.kernels == "attention=varlen loss=full compile=off"
    assert gpu.varlen_attention and gpu.tokens == cpu.tokens and gpu.target_tokens == cpu.target_tokens
    assert gpu.computed_tokens % 128 == 0 and gpu.computed_tokens >= gpu.tokens  # rows padded to whole tiles
    assert gpu.loss_history == pytest.approx(cpu.loss_history, rel=1e-4)
    assert gpu_changed > 1e-3 and gpu.final_loss < gpu.first_loss - 0.3
    # the model is left as it was: its own attention, no hook, the class's forward everywhere
    assert model.config._attn_implementation == "sdpa" and not model.get_decoder()._forward_pre_hooks
    assert all("forward" not in m.__dict__ for m in model.modules())


@pytest.mark.slow
def test_compiled_layers_compute_the_same_loss_and_gradients(data):
    """``compile="on"`` on CPU (inductor, about a minute here): the same per-step loss and gradients as eager."""
    tok, examples = data
    batch = examples[:16]
    out = {}
    for mode in ("off", "on"):
        model = _model(tok)
        # padded rows (the model's own sdpa): one graph per layer; varlen's per-example loop would break it up
        cfg = TrainConfig(batch_size=len(batch), dtype="float32", compile=mode, packing=False)
        with training_kernels(model, resolve(cfg, "cpu"), cfg.packing) as kernels:
            compiled = [m for m in model.modules() if "forward" in m.__dict__]
            runner = StepRunner(model, batch, cfg.step_layout(), tok.pad_token_id, False, kernels=kernels)
            loss = runner.step(list(range(len(batch))), {})
        out[mode] = (loss, {n: p.grad.clone() for n, p in model.named_parameters()}, len(compiled))
        assert all("forward" not in m.__dict__ for m in model.modules())  # restored
    assert out["off"][2] == 0 and out["on"][2] == SPEC.num_layers
    assert out["on"][0] == pytest.approx(out["off"][0], rel=1e-5)
    _assert_same_grads(out["off"][1], out["on"][1])


def test_bench_mstep_cpu_smoke(data):
    """Every candidate trains the same batches from the same weights: the same first loss; TRL where installed."""
    tok, examples = data
    model = _model(tok, kv_heads=None)
    rows = bench_mstep(model, examples[:48], 3, "cpu", 1.0, ("restem", "restem_loop", "trl", "trl_hf_flex"), tok, 16)
    by = {r["candidate"]: r for r in rows}
    schedule = step_batches(examples[:48], 16, 3)
    tokens = sum(len(examples[i][0]) for b in schedule for i in b)
    flops, attention = model_flops(model, examples[:48], schedule)
    assert flops == 6 * sum(p.numel() for p in model.parameters()) * tokens
    squares = sum(len(examples[i][0]) ** 2 for b in schedule for i in b)
    assert attention == 6 * SPEC.num_layers * SPEC.hidden_size * squares  # heads x head dim = hidden here
    trained = ["restem", "restem_loop"] + (["trl"] if importlib.util.find_spec("trl") else [])
    for name in trained:
        r = by[name]
        assert "error" not in r and r["steps"] == 3 and r["tokens"] == tokens and r["tokens_per_s"] > 0
        assert 0 < r["mfu"] < 1 and math.isclose(r["achieved_tflops"] * 1e12 / r["mfu"], 1e12, rel_tol=1e-2)
        assert r["first_loss"] == pytest.approx(by["restem"]["first_loss"], rel=1e-4)
    assert by["restem"]["kernels"] == "attention=varlen loss=chunked compile=off"
    assert "trl" in trained or "not importable" in by["trl"]["skipped"]
    assert "CUDA only" in by["trl_hf_flex"]["skipped"]
    assert model.config._attn_implementation == "sdpa"  # the caller's model is copied, not changed


# ------------------------------------------------------------------------------------------- CUDA only


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_cuda_flex_kernel_equals_one_example_at_a_time(data, amp):
    """The compiled FlexAttention kernel, forward and backward, fp32 and bf16 autocast."""
    tok, examples = data
    model = _model(tok, device="cuda", spec=GPU_SPEC)
    idx = list(range(14))
    alone, ref_grads = _alone(model, examples, idx)  # fp32 reference, model's own sdpa
    rows = _rows(examples, idx)
    with training_kernels(model, Kernels(attention="flex", chunked_loss=True, compile=False)) as used:
        packed, grads = _packed(model, examples, rows, used, amp=amp)
    tol = 1e-4 if amp is None else 2e-2  # bf16: against the fp32 reference
    for i in idx:
        torch.testing.assert_close(packed[i].cuda(), alone[i], rtol=tol, atol=tol)
    _assert_same_grads(ref_grads, grads, rtol=tol if amp is None else 5e-2, rel_atol=tol if amp is None else 5e-2)


@pytest.mark.gpu
@cuda_only
def test_cuda_training_run_uses_the_gpu_path_and_learns(data):
    tok, examples = data
    runs = {}
    for name, kw in {"gpu": {}, "loop": {"attention": "varlen", "loss": "full", "compile": "off"}}.items():
        model = _model(tok, device="cuda", spec=GPU_SPEC)
        cfg = TrainConfig(max_steps=15, batch_size=16, learning_rate=1e-2, **kw)
        runs[name] = train_causal_lm(model, tok, examples[:96], cfg)
    gpu, loop = runs["gpu"], runs["loop"]
    assert gpu.kernels == "attention=flex loss=chunked compile=on" and gpu.dtype == "bfloat16"
    assert gpu.final_loss < gpu.first_loss - 0.3
    assert gpu.first_loss == pytest.approx(loop.first_loss, rel=2e-2)  # bf16 on both
