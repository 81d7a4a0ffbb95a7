"""One batch of restem's decode loop: bucketed prefill, per-step sampling, dropping finished rows.

``decode_batch`` is what ``engine.CachedSampler`` runs per batch of jobs (sorted by prompt
length). Columns form one grid: the longest prompt ends at column P, every row's prompt is
right-aligned to P (left padding) and step s writes column P + s for all rows. Distinct prompts
are prefilled once, in buckets of similar length (each bucket padded only to its own longest
prompt), and the N samples of a prompt copy its cache rows. Rows that end (EOS, or a stop string
found by decoding only rows whose new token could complete one) are dropped together once they are
an eighth of the live batch: the cache is copied down to the live rows and to the columns they
still use. ``sample_next`` is the sampling rule. Not covered: memory policy, retries and dtype
choice (``engine``), the forward pass itself (``engine_llama``).
"""

from __future__ import annotations

import torch

from restem_pipeline.engine_llama import KVCache, Window, prefill_mask
from restem_pipeline.sampling import Completion, SamplingParams

PREFILL_SLACK = (1.1, 2)  # a prefill bucket's longest prompt is at most 1.1 x its shortest + 2 tokens
WINDOW_SLACK = (1.25, 4)  # rows sharing one decode attention window: 1.25 x + 4
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
        window = Window(slice(0, b - a), end - width, prefill_mask(lens, width).to(fw.device))
        ids, positions = ids.to(fw.device), positions.to(fw.device)
        logits[a:b] = fw.forward(ids, positions, view, slice(end - width, end), [window])
        stats["prefill_tokens"] += (b - a) * width
    return cache, logits


def decode_windows(row_len: list[int], end: int) -> list[tuple[slice, int, bool]]:
    """(rows, first grid column, needs a mask) per group of similar-length rows (``row_len`` ascending).

    Each group attends only from its own longest prompt's first column, so short prompts do not pay
    for the long ones' left padding.
    """
    groups = length_buckets(row_len, WINDOW_SLACK)
    return [(slice(a, b), end - row_len[b - 1], row_len[a] != row_len[b - 1]) for a, b in groups]


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
    order: list[int] = []  # distinct prompt indices in this batch; jobs of one prompt are adjacent
    row_prompt = []
    for _, i, _ in chunk:
        if not order or order[-1] != i:
            order.append(i)
        row_prompt.append(len(order) - 1)
    end = len(seqs[order[-1]])  # prompts ascend: the last is the longest
    cache, logits = _prefill(fw, [seqs[i] for i in order], end + n_new, tok.pad_token_id, stats)
    if len(order) < len(chunk):  # N samples per prompt share its prefill
        rows = torch.tensor(row_prompt, device=dev)
        cache = KVCache([k.index_select(0, rows) for k in cache.k], [v.index_select(0, rows) for v in cache.v])
        logits = logits.index_select(0, rows)

    # per live slot, in batch order (ascending prompt length); slots are dropped together
    batch = len(chunk)
    live = list(range(batch))  # original row of each slot
    live_len = [length for length, _, _ in chunk]
    key_mask = torch.arange(end + n_new, device=dev)[None] >= (end - torch.tensor(live_len, device=dev))[:, None]
    positions = torch.tensor(live_len, device=dev)[:, None]
    uniforms = None if params.greedy else sampler.job_uniforms(params, [(i, j) for _, i, j in chunk]).to(dev)
    tokens = torch.zeros(batch, n_new, dtype=torch.long, device=dev)
    n_tok = [n_new] * batch
    hit_eos = [False] * batch
    open_ = torch.ones(batch, dtype=torch.bool, device=dev)  # not ended yet
    ended_slots: list[int] = []
    results: dict[int, tuple[list[int], bool]] = {}
    stops = _StopCheck(sampler)
    groups = decode_windows(live_len, end)
    base = 0  # grid column of the cache's column 0 (moves right when left padding is dropped)
    step = 0
    for step in range(n_new):
        nxt = sample_next(logits, params, None if uniforms is None else uniforms[:, step])
        tokens[:, step] = nxt
        now: list[int] = []
        if eos is not None:
            is_eos = nxt == eos
            if ended_slots:
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
        ended_slots += now
        if len(ended_slots) == len(live) or step == n_new - 1:
            break
        if ended_slots and len(ended_slots) >= COMPACT_FRACTION * len(live):
            for r in ended_slots:
                results[live[r]] = (tokens[r, : n_tok[r]].tolist(), hit_eos[r])
            gone = set(ended_slots)
            kept = [r for r in range(len(live)) if r not in gone]
            keep = torch.tensor(kept, device=dev)
            live, live_len = [live[r] for r in kept], [live_len[r] for r in kept]
            n_tok, hit_eos = [n_tok[r] for r in kept], [hit_eos[r] for r in kept]
            positions, nxt, key_mask, tokens = positions[keep], nxt[keep], key_mask[keep], tokens[keep]
            uniforms = None if uniforms is None else uniforms[keep]
            open_ = torch.ones(len(live), dtype=torch.bool, device=dev)
            new_base = end - live_len[-1]
            cache = cache.keep(keep, new_base - base, end + step - base)
            base, groups, ended_slots = new_base, decode_windows(live_len, end), []
            stats["compactions"] += 1
        col = end + step
        windows = [
            Window(rows, first - base, key_mask[rows, None, None, first : col + 1] if masked else None)
            for rows, first, masked in groups
        ]
        logits = fw.forward(nxt[:, None], positions, cache, slice(col - base, col - base + 1), windows)
        positions = positions + 1
        stats["decode_row_steps"] += len(live)

    for r, row in enumerate(live):
        results[row] = (tokens[r, : min(n_tok[r], step + 1)].tolist(), hit_eos[r])
    stats["batches"] += 1
    return [sampler.finish(*results[row]) for row in range(batch)]
