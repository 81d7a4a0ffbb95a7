"""One batch of restem's decode loop: bucketed prefill, per-step sampling, dropping finished rows.

``decode_batch`` is what ``engine.CachedSampler`` runs per batch of jobs (sorted by prompt
length). The batch's rows go through every matrix product together but are split into groups of
similar prompt length, each with its own KV cache: a group's prompts are right-aligned to its
longest (left padding) and step s writes column ``end + s``, so attention never reads another
group's padding. Distinct prompts are prefilled once, in tighter buckets, and the N samples of a
prompt copy its cache rows. Rows that end (EOS, or a stop string, found by decoding only rows whose
new token could complete one) are dropped together once they are an eighth of the live batch: each
group's cache is copied down to its live rows and the columns they still use. ``sample_next`` is
the sampling rule. Not covered: memory policy, retries and dtype choice (``engine``), the forward
pass itself (``engine_llama``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from restem_pipeline.engine_llama import KVCache, Part, prefill_mask
from restem_pipeline.sampling import Completion, SamplingParams

PREFILL_SLACK = (1.1, 2)  # a prefill bucket's longest prompt is at most 1.1 x its shortest + 2 tokens
GROUP_SLACK = (4.0, 64)  # one decode group (one cache): longest <= 4 x shortest + 64 (bigger groups measured faster)
BUCKET_TOKENS = 16384  # a prefill bucket holds at most this many padded tokens (bounds its activations)
COMPACT_FRACTION = 0.125  # drop finished rows once they are this share of the live batch


def sample_next(logits: torch.Tensor, params: SamplingParams, uniforms: torch.Tensor | None) -> torch.Tensor:
    """Next token per row: argmax when greedy, else inverse-CDF sampling with one uniform per row.

    Temperature, then top-k, then top-p (keep the smallest head of the sorted distribution whose
    mass reaches ``top_p``), in the order transformers' warpers apply them.
    """
    if params.greedy or uniforms is None:
        return logits.argmax(-1)
    scores = logits / params.temperature
    top_p = params.top_p if params.top_p is not None and params.top_p < 1 else None
    index = None
    if params.top_k is not None and params.top_k < scores.shape[-1]:
        scores, index = scores.topk(params.top_k, dim=-1)
    elif top_p is not None:
        scores, index = scores.sort(dim=-1, descending=True)
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


def length_buckets(lengths: list[int], slack: tuple[float, int] = PREFILL_SLACK) -> list[tuple[int, int]]:
    """[start, end) ranges over ascending ``lengths`` whose padding stays small."""
    out, a = [], 0
    ratio, extra = slack
    for b in range(1, len(lengths) + 1):
        if b == len(lengths) or lengths[b] > ratio * lengths[a] + extra or (b + 1 - a) * lengths[b] > BUCKET_TOKENS:
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
    """Live rows ``rows`` of similar prompt length and their cache: prompts right-aligned to ``end``,
    decoding step s writes column ``end + s``."""

    rows: slice
    cache: KVCache
    end: int
    lengths: list[int]
    real: torch.Tensor  # (rows, columns): True from the row's first prompt column on
    dense_mask: torch.Tensor | None  # dense decode: (rows, 1, 1, columns), 0 where visible, else -inf

    def part(self, step: int) -> Part:
        col = self.end + step
        write = slice(col, col + 1)
        if self.dense_mask is not None:
            self.dense_mask[:, :, :, col] = 0.0
            return Part(self.rows, self.cache, write, None, self.dense_mask)
        mask = self.real[:, None, None, : col + 1] if self.lengths[0] != self.lengths[-1] else None
        return Part(self.rows, self.cache, write, slice(0, col + 1), mask)

    def keep(self, local: list[int], start: int, step: int) -> _Group:
        """Only rows ``local`` (renumbered from ``start``), with the left padding they all share cut off."""
        lengths = [self.lengths[r] for r in local]
        trim = self.end - max(lengths)
        index = torch.tensor(local, device=self.real.device)
        mask = None if self.dense_mask is None else self.dense_mask[index][..., trim:]
        cache = self.cache.keep(index, trim, self.end + step)
        rows = slice(start, start + len(local))
        return _Group(rows, cache, self.end - trim, lengths, self.real[index][:, trim:], mask)


def _groups(fw, seqs, chunk, n_new: int, pad: int, stats: dict) -> tuple[list[_Group], torch.Tensor]:
    """The prefilled decode groups of ``chunk`` (jobs sorted by prompt length) and first-token logits."""
    groups, logits = [], []
    lengths = [length for length, _, _ in chunk]
    for a, b in length_buckets(lengths, GROUP_SLACK):
        order: list[int] = []  # distinct prompts; the jobs of one prompt are adjacent
        row_prompt = []
        for _, i, _ in chunk[a:b]:
            if not order or order[-1] != i:
                order.append(i)
            row_prompt.append(len(order) - 1)
        end = lengths[b - 1]
        cache, first = _prefill(fw, [seqs[i] for i in order], end + n_new, pad, stats)
        if len(order) < b - a:  # the N samples of a prompt share its prefill
            index = torch.tensor(row_prompt, device=fw.device)
            cache = KVCache([k.index_select(0, index) for k in cache.k], [v.index_select(0, index) for v in cache.v])
            first = first.index_select(0, index)
        cols = torch.arange(end + n_new, device=fw.device)[None]
        real = cols >= (end - torch.tensor(lengths[a:b], device=fw.device))[:, None]
        dense = None
        if fw.dense_decode:
            dense = torch.zeros(b - a, 1, 1, end + n_new, device=fw.device)
            dense.masked_fill_(~(real & (cols < end))[:, None, None], float("-inf"))
        groups.append(_Group(slice(a, b), cache, end, lengths[a:b], real, dense))
        logits.append(first)
    return groups, torch.cat(logits)


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
                    survivors.append(g.keep(local, survivors[-1].rows.stop if survivors else 0, step))
            keep = torch.tensor(kept, device=dev)
            live, n_tok, hit_eos = [live[r] for r in kept], [n_tok[r] for r in kept], [hit_eos[r] for r in kept]
            positions, nxt, tokens = positions[keep], nxt[keep], tokens[keep]
            uniforms = None if uniforms is None else uniforms[keep]
            open_ = torch.ones(len(live), dtype=torch.bool, device=dev)
            groups, ended = survivors, []
            stats["compactions"] += 1
        logits = fw.forward(nxt[:, None], positions, [g.part(step) for g in groups])
        positions = positions + 1
        stats["decode_row_steps"] += len(live)

    for r, row in enumerate(live):
        results[row] = (tokens[r, : min(n_tok[r], step + 1)].tolist(), hit_eos[r])
    stats["batches"] += 1
    return [sampler.finish(*results[row]) for row in range(batch)]
