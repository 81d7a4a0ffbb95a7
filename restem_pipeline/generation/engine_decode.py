"""One batch of restem's decode loop: bucketed prefill, per-step sampling, dropping finished rows.

``decode_batch`` is what ``engine.CachedSampler`` runs per batch of jobs (sorted by prompt
length). The batch's rows go through every matrix product together but are split into groups of
similar prompt length, each with its own KV cache: a group's prompts are right-aligned to its
longest (left padding), so attention never reads another group's padding. Distinct prompts are
prefilled once, in tighter buckets. Float32 keeps a cache row per sequence (the N samples of a
prompt copy its rows; step s writes column ``end + s``). Half precision keeps a prompt's cache once
for up to ``SHARED_SLOTS`` of its samples, their new tokens interleaved after it (``_SharedGroup``,
``engine_llama.SharedPart``): each decode step reads a prompt's keys/values once instead of N
times, in one attention problem per prompt instead of one per sample. Rows that end (EOS, or a stop
string, found by decoding only rows whose new token could complete one) are dropped together once
they are an eighth of the live batch: float32 groups copy their cache down to the live rows and the
columns they still use; shared groups only once a quarter of their prompts have no live sample.
``sample_next`` is the sampling rule (blockwise argmax / top-k on CPU: torch's row argmax and topk
over a 49k vocabulary are ~10x and ~2x slower); ``ThreadTuner`` picks the thread count. Not covered:
memory policy, retries and dtype choice (``engine``), the forward pass itself (``engine_llama``).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from restem_pipeline.generation.engine_llama import KVCache, Part, SharedPart, prefill_mask
from restem_pipeline.generation.sampling import Completion, SamplingParams

PREFILL_SLACK = (1.1, 2)  # a prefill bucket's longest prompt is at most 1.1 x its shortest + 2 tokens
GROUP_SLACK = (4.0, 64)  # one decode group (one cache): longest <= 4 x shortest + 64 (bigger groups measured faster)
BUCKET_TOKENS = 16384  # a prefill bucket holds at most this many padded tokens (bounds its activations)
COMPACT_FRACTION = 0.125  # drop finished rows once they are this share of the live batch
SHARED_SLOTS = 8  # half precision: samples of one prompt per cache row (each also reads the others' new tokens)
VOCAB_BLOCK = 128  # greedy argmax and top-k on CPU reduce the vocabulary in blocks of this many first
SHARED_DROP_FRACTION = 0.25  # copy a shared cache down once this share of its prompts has no live sample


def argmax_rows(x: torch.Tensor) -> torch.Tensor:
    """``x.argmax(-1)`` (the first maximum of each row). On CPU, torch's row argmax is ~10x slower
    than ``amax``, so the vocabulary is reduced in blocks first: the first block holding the row's
    maximum, then the first maximum inside it (the same index)."""
    b, v = x.shape
    if x.device.type != "cpu" or v % VOCAB_BLOCK or v < 8 * VOCAB_BLOCK:
        return x.argmax(-1)
    blocks = x.view(b, v // VOCAB_BLOCK, VOCAB_BLOCK)
    first = blocks.amax(-1).argmax(-1)
    inner = blocks[torch.arange(b, device=x.device), first].argmax(-1)
    return first * VOCAB_BLOCK + inner


def topk_rows(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x.topk(k, -1)``: the k largest of each row, in descending order. On CPU, only the k blocks
    with the largest maxima are searched (every one of the k largest lies in one of them); entries
    tied in value may come in another order than torch's."""
    b, v = x.shape
    if x.device.type != "cpu" or v % VOCAB_BLOCK or k * 8 > v // VOCAB_BLOCK:
        return x.topk(k, -1)
    blocks = x.view(b, v // VOCAB_BLOCK, VOCAB_BLOCK)
    top = blocks.amax(-1).topk(k, -1, sorted=False).indices
    candidates = blocks.gather(1, top[:, :, None].expand(b, k, VOCAB_BLOCK)).view(b, k * VOCAB_BLOCK)
    values, pos = candidates.topk(k, -1)
    return values, top.gather(1, pos // VOCAB_BLOCK) * VOCAB_BLOCK + pos % VOCAB_BLOCK


def sample_next(logits: torch.Tensor, params: SamplingParams, uniforms: torch.Tensor | None) -> torch.Tensor:
    """Next token per row: argmax when greedy, else inverse-CDF sampling with one uniform per row.

    ``logits`` may be half precision (the lm_head's own output): the argmax and the top-k are taken
    on them as they are (widening to float32 changes neither); the distribution is float32.

    Temperature, then top-k, then top-p (keep the smallest head of the sorted distribution whose
    mass reaches ``top_p``), in the order transformers' warpers apply them (top-k is taken before
    dividing by the temperature, which keeps the order).
    """
    if params.greedy or uniforms is None:
        return argmax_rows(logits)
    top_p = params.top_p if params.top_p is not None and params.top_p < 1 else None
    index = None
    if params.top_k is not None and params.top_k < logits.shape[-1]:
        scores, index = topk_rows(logits, params.top_k)
        scores = scores.float() / params.temperature
    elif top_p is not None:
        scores, index = (logits.float() / params.temperature).sort(dim=-1, descending=True)
    else:
        scores = logits.float() / params.temperature
    probs = torch.softmax(scores, dim=-1)
    if top_p is not None:
        probs = probs * ((probs.cumsum(-1) - probs) < top_p)
    cdf = probs.double().cumsum(-1)
    targets = (uniforms * cdf[:, -1]).unsqueeze(1)
    choice = torch.searchsorted(cdf, targets, right=True).clamp_(max=cdf.shape[1] - 1)
    zero = probs.gather(1, choice) == 0  # only if u * total rounded up to the total
    if zero.any():
        choice = torch.where(zero, probs.argmax(-1, keepdim=True), choice)
    return (choice if index is None else index.gather(1, choice)).squeeze(1)


def length_buckets(
    lengths: list[int], slack: tuple[float, int] = PREFILL_SLACK, max_tokens: int | None = BUCKET_TOKENS
) -> list[tuple[int, int]]:
    """[start, end) ranges over ascending ``lengths`` whose padding stays small (and, with
    ``max_tokens``, whose rows x longest stays under it)."""
    out, a = [], 0
    ratio, extra = slack
    for b in range(1, len(lengths) + 1):
        if (
            b == len(lengths)
            or lengths[b] > ratio * lengths[a] + extra
            or (max_tokens is not None and (b + 1 - a) * lengths[b] > max_tokens)
        ):
            out.append((a, b))
            a = b
    return out


def _prefill(fw, prompts: list[list[int]], columns: int, pad: int, stats: dict) -> tuple[KVCache, torch.Tensor]:
    """Cache (len(prompts), columns) with each prompt right-aligned to its longest, and first-token logits."""
    lengths = [len(p) for p in prompts]
    end = max(lengths)
    cache = fw.new_cache(len(prompts), columns)
    logits = torch.empty(len(prompts), fw.vocab_size, device=fw.device)
    for a, b in length_buckets(lengths):
        width = lengths[b - 1]
        ids = torch.full((b - a, width), pad, dtype=torch.long)
        for r, p in enumerate(prompts[a:b]):
            ids[r, width - len(p) :] = torch.tensor(p)
        lens = torch.tensor(lengths[a:b])
        positions = (torch.arange(width)[None] - (width - lens)[:, None]).clamp(min=0)
        view = KVCache([k[a:b] for k in cache.k], [v[a:b] for v in cache.v])
        cols = slice(end - width, end)
        part = Part(slice(0, b - a), view, cols, cols, prefill_mask(lens, width).to(fw.device))
        logits[a:b] = fw.forward(ids.to(fw.device), positions.to(fw.device), [part])
        stats["prefill_tokens"] += (b - a) * width
    return cache, logits


@dataclass
class _Group:
    """Live rows ``rows`` of similar prompt length and their cache, a row per sequence (float32):
    prompts right-aligned to ``end``, decoding step s writes column ``end + s``."""

    rows: slice
    cache: KVCache
    end: int
    lengths: list[int]
    real: torch.Tensor  # (rows, columns): True from the row's first prompt column on

    def part(self, step: int) -> Part:
        col = self.end + step
        mask = self.real[:, None, None, : col + 1] if self.lengths[0] != self.lengths[-1] else None
        return Part(self.rows, self.cache, slice(col, col + 1), slice(0, col + 1), mask)

    def keep(self, fw, local: list[int], start: int, step: int) -> _Group:
        """Only rows ``local`` (renumbered from ``start``), with the left padding they all share cut off."""
        lengths = [self.lengths[r] for r in local]
        trim = self.end - max(lengths)
        index = torch.tensor(local, device=self.real.device)
        cache = self.cache.keep(index, trim, self.end + step)
        rows = slice(start, start + len(local))
        return _Group(rows, cache, self.end - trim, lengths, self.real[index][:, trim:])


def _shared_mask(lengths: list[int], end: int, slots: int, columns: int, per_kv: int, dtype, device) -> torch.Tensor:
    """(units, 1, slots * per_kv, columns) additive mask: a slot sees its prompt and its own tokens."""
    cols = torch.arange(columns, device=device)[None]
    lens = torch.tensor(lengths, device=device)[:, None]
    prompt = (cols >= end - lens) & (cols < end)  # (units, columns)
    own = (cols >= end) & ((cols - end) % slots == torch.arange(slots, device=device)[:, None])  # (slots, columns)
    visible = (prompt[:, None] | own[None]).repeat_interleave(per_kv, dim=1)
    return torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill_(~visible, float("-inf")).unsqueeze(1)


@dataclass
class _SharedGroup:
    """Live rows ``rows`` and a cache holding each prompt once, for up to ``slots`` of its samples
    (half precision; layout in ``engine_llama.SharedPart``). Row r is in unit ``unit[r]``, slot ``slot[r]``."""

    rows: slice
    cache: KVCache
    end: int
    slots: int
    lengths: list[int]  # prompt length per unit
    unit: torch.Tensor
    slot: torch.Tensor
    mask: torch.Tensor
    flat: torch.Tensor | None

    @classmethod
    def make(cls, fw, rows: slice, cache: KVCache, end: int, slots: int, lengths, unit, slot) -> _SharedGroup:
        per_kv = fw.num_heads // fw.num_kv_heads
        mask = _shared_mask(lengths, end, slots, cache.k[0].shape[2], per_kv, fw.dtype, fw.device)
        flat = unit * slots + slot
        if len(flat) == len(lengths) * slots and bool((flat == torch.arange(len(flat), device=flat.device)).all()):
            flat = None
        return cls(rows, cache, end, slots, lengths, unit, slot, mask, flat)

    def part(self, step: int) -> SharedPart:
        kv, columns = self.cache.k[0].shape[1], self.cache.k[0].shape[2]
        col = self.end + step * self.slots + self.slot
        heads = torch.arange(kv, device=col.device)
        write = ((self.unit[:, None] * kv + heads) * columns + col[:, None]).view(-1)
        read = self.end + (step + 1) * self.slots
        return SharedPart(self.rows, self.cache, write, read, self.mask, self.slots, self.flat)

    def keep(self, fw, local: list[int], start: int, step: int) -> _SharedGroup:
        """Only rows ``local`` (renumbered from ``start``); once a share of the units has no live row left,
        the cache is copied down to the live units, with the left padding they all share cut off."""
        index = torch.tensor(local, device=self.unit.device)
        unit, slot = self.unit[index], self.slot[index]
        live = sorted(set(unit.tolist()))
        cache, end, lengths = self.cache, self.end, self.lengths
        if len(lengths) - len(live) >= SHARED_DROP_FRACTION * len(lengths):
            trim = end - max(lengths[u] for u in live)
            kept = torch.tensor(live, device=unit.device)
            cache = cache.keep(kept, trim, end + step * self.slots)
            renumber = torch.full((len(lengths),), -1, dtype=torch.long, device=unit.device)
            renumber[kept] = torch.arange(len(live), device=unit.device)
            unit, end, lengths = renumber[unit], end - trim, [lengths[u] for u in live]
        return _SharedGroup.make(fw, slice(start, start + len(local)), cache, end, self.slots, lengths, unit, slot)


def _groups(fw, seqs, chunk, n_new: int, pad: int, stats: dict) -> tuple[list, torch.Tensor]:
    """The prefilled decode groups of ``chunk`` (jobs sorted by prompt length) and first-token logits."""
    groups, logits = [], []
    lengths = [length for length, _, _ in chunk]
    for a, b in length_buckets(lengths, GROUP_SLACK, None if fw.shared_decode else BUCKET_TOKENS):
        order: list[int] = []  # distinct prompts; the jobs of one prompt are adjacent
        row_prompt, rank = [], []  # per row: its prompt (in order) and its place among that prompt's rows
        for _, i, _ in chunk[a:b]:
            if not order or order[-1] != i:
                order.append(i)
                rank.append(0)
            else:
                rank.append(rank[-1] + 1)
            row_prompt.append(len(order) - 1)
        end = lengths[b - 1]
        prompts = [seqs[i] for i in order]
        if fw.shared_decode:  # a cache row (unit) per prompt and up to SHARED_SLOTS of its samples
            slots = min(SHARED_SLOTS, max(rank) + 1)
            units: list[int] = []  # prompt of each unit
            row_unit = []
            for p, k in zip(row_prompt, rank, strict=True):
                if k % slots == 0:
                    units.append(p)
                row_unit.append(len(units) - 1)
            cache, first = _prefill(fw, prompts, end + slots * n_new, pad, stats)
            if len(units) > len(order):  # more samples than slots: the prompt's cache is copied per unit
                cache = cache.select(torch.tensor(units, device=fw.device))
            unit = torch.tensor(row_unit, device=fw.device)
            slot = torch.tensor([k % slots for k in rank], device=fw.device)
            unit_lengths = [len(prompts[p]) for p in units]
            groups.append(_SharedGroup.make(fw, slice(a, b), cache, end, slots, unit_lengths, unit, slot))
        else:
            cache, first = _prefill(fw, prompts, end + n_new, pad, stats)
            if len(order) < b - a:  # the N samples of a prompt share its prefill
                cache = cache.select(torch.tensor(row_prompt, device=fw.device))
            cols = torch.arange(end + n_new, device=fw.device)[None]
            real = cols >= (end - torch.tensor(lengths[a:b], device=fw.device))[:, None]
            groups.append(_Group(slice(a, b), cache, end, lengths[a:b], real))
        if len(order) < b - a:
            first = first.index_select(0, torch.tensor(row_prompt, device=fw.device))
        logits.append(first)
    return groups, torch.cat(logits)


def _running_here() -> int:
    """Threads of this process running now (OpenMP workers spin for a while after a parallel region)."""
    count = 0
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError, IndexError):  # a thread that just ended
            count += (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
    return count


def _others_running(samples: int = 5) -> int:
    """Other processes' threads running now (most of a few looks at /proc/stat), or a lot if unknown."""
    most = 0
    for _ in range(samples):
        try:
            with open("/proc/stat") as f:
                running = next(int(line.split()[1]) for line in f if line.startswith("procs_running"))
            mine = _running_here()
        except (OSError, StopIteration, ValueError):
            return 1 << 10
        most = max(most, running - max(mine, 1))
        time.sleep(0.002)
    return most


class ThreadTuner:
    """Picks torch's intra-op thread count for the decode loop (and the next prefill) by timing real steps.

    On a machine shared with other jobs, each parallel region waits for its slowest thread: with one
    other busy process on restem's 2-core sandbox, 2 threads decoded 8x slower than 1, while an idle
    machine runs 1.5x faster on 2 (a short synthetic probe could not tell these apart: it fits in one
    scheduler time slice). So every ``period`` decode steps one other candidate (1, half or all of the
    threads torch was given, in turn) runs up to two steps, and its time per row is compared with the
    current count's last step. More threads are taken only when they beat fewer by ``MARGIN``; the
    period doubles (up to ``MAX_PERIOD``) while the choice holds, jumps to the maximum when the trial
    was over ``HOPELESS`` times slower, and a step twice as slow as the first after the last choice
    (another job started) triggers a trial at once. Starts with all threads only when enough CPUs
    look idle (``/proc/stat``'s running processes), else at 1: too many threads on a busy machine
    cost far more than too few on an idle one. ``fixed`` pins a count instead.
    """

    FIRST_TRIAL, FIRST_PERIOD, MAX_PERIOD, MARGIN, HOPELESS = 2, 16, 256, 0.8, 3.0

    def __init__(self, fixed: int | None = None):
        most = torch.get_num_threads()
        self.candidates = [fixed] if fixed else sorted({1, max(1, most // 2), most})
        self.best = self.candidates[-1] if _others_running() + most <= (os.cpu_count() or 1) else self.candidates[0]
        # from 1 thread, try more soon (the machine may be idle after all); from all, only if steps slow down
        self.period = self.FIRST_PERIOD
        self.countdown = self.FIRST_TRIAL if self.best == self.candidates[0] else self.FIRST_PERIOD
        self.trial: int | None = None  # the count on trial
        self.trial_time, self.trial_steps = float("inf"), 0
        self.best_time: float | None = None  # seconds per row of the current count's last step
        self.baseline: float | None = None  # seconds per row of the first step after the last choice
        self.next_other = 0
        self.switches = 0

    def apply(self, step: int | None = None) -> int:
        """Set torch's thread count for decode step ``step`` (None: a prefill) and return it."""
        threads = self.best
        if step is not None and len(self.candidates) > 1 and self.best_time is not None:
            if self.trial is None and self.countdown <= 0:
                others = [c for c in self.candidates if c != self.best]
                self.trial = others[self.next_other % len(others)]
                self.next_other += 1
                self.trial_time, self.trial_steps = float("inf"), 0
            if self.trial is not None:
                threads = self.trial
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads

    def observe(self, threads: int, seconds: float, rows: int) -> None:
        """The time of a decode step run with ``threads``."""
        per_row = seconds / max(rows, 1)
        if threads != self.trial:
            self.countdown -= 1
            self.best_time = per_row
            if self.baseline is None:
                self.baseline = per_row
            elif per_row > 2 * self.baseline:
                self.countdown = 0  # much slower than just after the last choice: the machine's load changed
            return
        self.trial_time, self.trial_steps = min(self.trial_time, per_row), self.trial_steps + 1
        hopeless = self.trial_time > self.HOPELESS * self.best_time
        if self.trial_steps < 2 and not hopeless:
            return  # a second step: the first after a change of count may pay for warm-up
        better = self.trial_time < (self.MARGIN if self.trial > self.best else 1.0) * self.best_time
        if better:
            self.best, self.best_time, self.period = self.trial, self.trial_time, self.FIRST_PERIOD
            self.switches += 1
        else:
            self.period = self.MAX_PERIOD if hopeless else min(2 * self.period, self.MAX_PERIOD)
        self.countdown, self.trial, self.baseline = self.period, None, None


class _StopCheck:
    """Finds rows whose text now contains a stop string, decoding only rows with a candidate token."""

    def __init__(self, sampler):
        self.table, self.stop, self.tok = sampler._stop_candidates, sampler.stop, sampler.tokenizer

    def hits(self, tokens: torch.Tensor, nxt: torch.Tensor, open_: torch.Tensor, step: int) -> list[int]:
        """Live slots (still ``open_``) whose generated text contains a stop string after ``step``."""
        if self.table is None:
            return []
        hit = []
        for r in (self.table[nxt.cpu()] & open_.cpu()).nonzero().flatten().tolist():
            text = self.tok.decode(tokens[r, : step + 1].tolist(), skip_special_tokens=True)
            if any(s in text for s in self.stop):
                hit.append(r)
        return hit


def decode_batch(sampler, seqs: list[list[int]], chunk: list[tuple[int, int, int]], params) -> list[Completion]:
    """Completions for the jobs ``chunk`` ((prompt length, prompt index, sample index), sorted)."""
    fw, tok, n_new, stats = sampler.forward, sampler.tokenizer, params.max_new_tokens, sampler.stats
    tuner: ThreadTuner = sampler.tuner
    tuner.apply()
    dev, eos = fw.device, tok.eos_token_id
    groups, logits = _groups(fw, seqs, chunk, n_new, tok.pad_token_id, stats)
    # state per live slot, in batch order; ended slots are dropped together
    batch = len(chunk)
    live = list(range(batch))  # original row of each slot
    positions = torch.tensor([length for length, _, _ in chunk], device=dev)[:, None]
    uniforms = None if params.greedy else sampler.job_uniforms(params, [(i, j) for _, i, j in chunk]).to(dev)
    tokens = torch.zeros(batch, n_new, dtype=torch.long, device=dev)
    n_tok, hit_eos = [n_new] * batch, [False] * batch
    open_ = torch.ones(batch, dtype=torch.bool, device=dev)  # not ended yet
    ended: list[int] = []
    results: dict[int, tuple[list[int], bool]] = {}
    stops = _StopCheck(sampler)
    step = 0
    for step in range(n_new):
        nxt = sample_next(logits, params, None if uniforms is None else uniforms[:, step])
        tokens[:, step] = nxt
        now: list[int] = []
        if eos is not None:
            is_eos = nxt == eos
            if ended:
                is_eos &= open_
            if bool(is_eos.any()):
                now = is_eos.nonzero().flatten().tolist()
                for r in now:
                    n_tok[r], hit_eos[r] = step, True
                open_[now] = False
        for r in stops.hits(tokens, nxt, open_, step):
            n_tok[r] = step + 1
            open_[r] = False
            now.append(r)
        ended += now
        if len(ended) == len(live) or step == n_new - 1:
            break
        if ended and len(ended) >= COMPACT_FRACTION * len(live):
            for r in ended:
                results[live[r]] = (tokens[r, : n_tok[r]].tolist(), hit_eos[r])
            gone = set(ended)
            kept = [r for r in range(len(live)) if r not in gone]
            survivors = []
            for g in groups:
                local = [r - g.rows.start for r in range(g.rows.start, g.rows.stop) if r not in gone]
                if local:
                    survivors.append(g.keep(fw, local, survivors[-1].rows.stop if survivors else 0, step))
            keep = torch.tensor(kept, device=dev)
            live, n_tok, hit_eos = [live[r] for r in kept], [n_tok[r] for r in kept], [hit_eos[r] for r in kept]
            positions, nxt, tokens = positions[keep], nxt[keep], tokens[keep]
            uniforms = None if uniforms is None else uniforms[keep]
            open_ = torch.ones(len(live), dtype=torch.bool, device=dev)
            groups, ended = survivors, []
            stats["compactions"] += 1
        threads = tuner.apply(step)
        started = time.perf_counter()
        logits = fw.forward(nxt[:, None], positions, [g.part(step) for g in groups], float_logits=False)
        tuner.observe(threads, time.perf_counter() - started, len(live))
        positions = positions + 1
        stats["decode_row_steps"] += len(live)

    for r, row in enumerate(live):
        results[row] = (tokens[r, : min(n_tok[r], step + 1)].tolist(), hit_eos[r])
    stats["batches"] += 1
    return [sampler.finish(*results[row]) for row in range(batch)]
