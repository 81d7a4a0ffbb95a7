"""Training batches for a causal LM: tokenized (prompt, completion) pairs laid out as padded or packed rows.

A *padded* row holds one example, right-padded, with an attention mask. A *packed* row holds several
examples back to back with ``position_ids`` restarting at 0 for each; given position ids and no
attention mask, transformers builds a block-diagonal causal mask (sdpa, eager, flex; flash-attention
uses the same ids for varlen), so no token attends to another example. Targets are shifted per example
(position j predicts token j + 1 of the *same* example), so no label crosses an example boundary and
prompt tokens are never predicted. Micro-batches are planned against a token budget (rows x width).
``rank_shards`` cuts one global batch into disjoint, token-balanced shards for the ranks of a
data-parallel step.
An example longer than ``max_length`` loses prompt tokens from the left (after its BOS), never
completion tokens: the loss is on the completion. Not covered: the training loop (``training``),
streaming data sets, dropping whole few-shot exemplars (the cut is by tokens).
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100

Example = tuple[list[int], int]  # (input_ids, prompt_length)
Rows = list[list[int]]  # example indices, one list per row of a micro-batch


def tokenize_pairs(
    tokenizer, prompts: list[str], completions: list[str], max_length: int, add_bos: bool = True
) -> list[Example]:
    """(input_ids, prompt_length) per pair: BOS + prompt + completion + EOS, at most ``max_length`` tokens.

    A longer pair keeps its BOS, its completion and EOS whole and loses prompt tokens from the left;
    one whose completion cannot fit with one prompt token raises ``ValueError`` naming the length needed
    (``training.lengths.check_lengths`` catches that before a run starts). ``max_length = 0``: no limit.
    ``add_bos=False`` for prompts that carry their own opening tokens (a rendered chat template).
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    bos_id = tokenizer.bos_token_id if add_bos else None
    out = []
    for p, c in zip(p_ids, c_ids, strict=True):
        bos = [] if bos_id is None or p[:1] == [bos_id] else [bos_id]  # as modeling.prompt_input_ids
        if tokenizer.bos_token_id is not None and p[:1] == [tokenizer.bos_token_id]:
            bos, p = p[:1], p[1:]  # the prompt's own BOS stays first whatever is cut
        tail = c + [tokenizer.eos_token_id]
        if max_length and len(bos) + len(p) + len(tail) > max_length:
            keep = max_length - len(bos) - len(tail)
            if keep < 1:
                raise ValueError(
                    f"a completion of {len(c)} tokens does not fit max_length {max_length} with its BOS, EOS and one "
                    f"prompt token: max_length must be at least {len(bos) + len(tail) + 1}"
                )
            p = p[len(p) - keep :]
        out.append((bos + p + tail, len(bos) + len(p)))
    return out


def target_count(example: Example) -> int:
    """Completion tokens that are predicted (the first token of a sequence never is)."""
    ids, prompt_len = example
    return max(0, len(ids) - max(prompt_len, 1))


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of indices whose lengths are close (sorted within chunks of 50 batches)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lengths.__getitem__)
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def shuffled_batches(n: int, batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of uniformly shuffled batches (packing removes the padding cost of mixed lengths)."""
    order = list(range(n))
    rng.shuffle(order)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    batches.reverse()  # the loop pops from the end
    return batches


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with Hugging Face-style (unshifted) ``labels``, for ``model(**batch).loss``."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Positions in ``lengths`` grouped into as few rows of at most ``capacity`` tokens as balancing allows.

    Longest first, each into the currently shortest row (LPT scheduling) over k rows, k growing from
    ceil(total / capacity) until every row fits: rows come out nearly equal, so little padding is left
    when they are stacked into one micro-batch.
    """
    if not lengths:
        return []
    if max(lengths) > capacity:
        raise ValueError(f"an example of {max(lengths)} tokens does not fit in a row of {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    k = max(1, math.ceil(sum(lengths) / capacity))
    while True:
        heap = [(0, r) for r in range(k)]
        rows: list[list[int]] = [[] for _ in range(k)]
        for i in order:
            load, r = heapq.heappop(heap)
            rows[r].append(i)
            heapq.heappush(heap, (load + lengths[i], r))
        if max(load for load, _ in heap) <= capacity:
            return [r for r in rows if r]
        k += 1


@dataclass
class MicroBatch:
    """Model inputs plus shifted targets; ``segments`` maps each position to its example (-1: padding)."""

    rows: Rows
    inputs: dict[str, torch.Tensor]
    targets: torch.Tensor
    segments: torch.Tensor
    real_tokens: int
    target_tokens: int

    @property
    def cells(self) -> int:
        """Positions computed, padding included."""
        return int(self.targets.numel())

    def to(self, device: torch.device | str) -> MicroBatch:
        inputs = {k: v.to(device) for k, v in self.inputs.items()}
        targets = self.targets.to(device)
        return MicroBatch(self.rows, inputs, targets, self.segments, self.real_tokens, self.target_tokens)


def micro_batch(examples: list[Example], rows: Rows, pad_id: int, packed: bool, pad_to: int = 1) -> MicroBatch:
    """Lay ``rows`` (example indices) out as tensors; packed rows restart ``position_ids`` per example.

    The width is rounded up to a multiple of ``pad_to``: few distinct shapes, for kernels that cache
    per shape (bf16 matmul and attention on CPU).
    """
    if not packed and any(len(r) != 1 for r in rows):
        raise ValueError("padded micro-batches hold one example per row")
    width = max(sum(len(examples[i][0]) for i in row) for row in rows)
    width = -(-width // pad_to) * pad_to
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    segments = torch.full((len(rows), width), -1, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    real = 0
    for r, row in enumerate(rows):
        offset = 0
        for i in row:
            ids, prompt_len = examples[i]
            n = len(ids)
            input_ids[r, offset : offset + n] = torch.tensor(ids)
            first = offset + max(prompt_len, 1) - 1  # predicts the first completion token
            targets[r, first : offset + n - 1] = torch.tensor(ids[max(prompt_len, 1) :], dtype=torch.long)
            segments[r, offset : offset + n] = i
            positions[r, offset : offset + n] = torch.arange(n)
            offset += n
        positions[r, offset:] = torch.arange(width - offset)  # padding: its own segment, never a target
        real += offset
    if packed:
        inputs = {"input_ids": input_ids, "position_ids": positions}
    else:
        inputs = {"input_ids": input_ids, "attention_mask": (segments >= 0).long()}
    n_targets = int((targets != IGNORE_INDEX).sum())
    return MicroBatch(rows, inputs, targets, segments, real, n_targets)


def plan_micro_batches(
    examples: list[Example], indices: list[int], budget: int, packed: bool, capacity: int
) -> list[Rows]:
    """Group ``indices`` into micro-batches of at most ``budget`` cells (rows x width), longest rows first.

    Packed: examples go into rows of at most ``capacity`` tokens first. A row longer than the budget
    becomes a micro-batch of its own (the caller rejects examples that cannot fit).
    """
    lengths = [len(examples[i][0]) for i in indices]
    packed_rows = pack_rows(lengths, capacity) if packed else [[j] for j in range(len(indices))]
    sized = sorted(
        ((sum(lengths[j] for j in row), [indices[j] for j in row]) for row in packed_rows), key=lambda x: -x[0]
    )
    plan: list[Rows] = []
    current: Rows = []
    width = 0
    for size, row in sized:
        new_width = max(width, size)
        if current and (len(current) + 1) * new_width > budget:
            plan.append(current)
            current, new_width = [], size
        current.append(row)
        width = new_width
    if current:
        plan.append(current)
    return plan


def halves(rows: Rows) -> list[Rows] | None:
    """Two smaller micro-batches from ``rows``, or None when it is a single example."""
    if len(rows) > 1:
        h = len(rows) // 2
        return [rows[:h], rows[h:]]
    if len(rows[0]) > 1:
        h = len(rows[0]) // 2
        return [[rows[0][:h]], [rows[0][h:]]]
    return None


def split_evenly(indices: list[int], parts: int) -> list[list[int]]:
    """``indices`` in ``parts`` contiguous chunks whose sizes differ by at most one (empty ones dropped)."""
    size, extra = divmod(len(indices), parts)
    out, start = [], 0
    for p in range(parts):
        end = start + size + (p < extra)
        if end > start:
            out.append(indices[start:end])
        start = end
    return out


def rank_shards(examples: list[Example], batch: list[int], world: int) -> list[list[int]]:
    """``batch`` cut into ``world`` disjoint shards of nearly equal token counts, the same on every rank.

    Longest example first, each to the shard with the fewest tokens so far (ties: the lower rank), so
    ranks do about the same work; a shard keeps the batch's order. A shard may be empty when the batch
    has fewer examples than ranks (the last batch of an epoch).
    """
    heap = [(0, r) for r in range(world)]
    owner: dict[int, int] = {}
    for i in sorted(batch, key=lambda i: (-len(examples[i][0]), i)):
        load, r = heapq.heappop(heap)
        owner[i] = r
        heapq.heappush(heap, (load + len(examples[i][0]), r))
    return [[i for i in batch if owner[i] == r] for r in range(world)]
