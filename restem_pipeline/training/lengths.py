"""Length budgets that follow the model and the prompts actually built, checked before any work.

A run needs three lengths to fit: a prompt plus ``max_new_tokens`` within the model's context (the
E-step and evaluation sample that far), an E-step sample within the trainer's ``max_length`` (with its
BOS, EOS and at least one prompt token), and every human solution of the SFT baseline likewise.
``check_lengths`` measures them with the model's own tokenizer on the rendered prompts and raises
``LengthError`` naming the setting and the length it needs; ``effective_max_length`` is what the
trainer cuts at (``max_length = 0``: the model's context). When an example is too long, the trainer cuts
its *prompt* from the left (``batching.tokenize_pairs``), never its completion.

Not covered: tokens a sampler adds beyond BOS (none of restem's do), sliding-window or rope-scaled
contexts (the config's position limit is taken as the context).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from restem_pipeline.generation.modeling import prompt_input_ids


class LengthError(ValueError):
    """A length setting that cannot fit the prompts, samples or solutions of this run."""


@dataclass(frozen=True)
class Lengths:
    longest_prompt: int  # tokens, BOS included
    longest_prompt_id: str
    longest_solution: int  # tokens of the longest human solution (0: none)
    longest_solution_id: str
    context: int | None  # the model's context, when its config says
    max_length: int  # what the trainer cuts at


def effective_max_length(max_length: int, context: int | None, needed: int) -> int:
    """``max_length`` when set (> 0), else the model's context, else the longest example ``needed``."""
    return max_length if max_length > 0 else (context or needed)


def check_lengths(
    tokenizer,
    ids: Sequence[str],
    prompts: Sequence[str],
    solutions: Sequence[str],
    max_new_tokens: int,
    max_length: int,
    context: int | None,
) -> Lengths:
    """Measure the run's lengths; raise ``LengthError`` (naming the setting and the length needed) if one cannot fit.

    ``ids``/``prompts``: every problem's id and rendered prompt; ``solutions``: aligned with them, the human
    solution the SFT baseline trains on ('' where none); ``max_length``: the trainer's (0 = the model's context).
    """
    if not prompts or len(ids) != len(prompts) or (solutions and len(solutions) != len(prompts)):
        raise LengthError(f"{len(ids)} ids, {len(prompts)} prompts and {len(solutions)} solutions: not one per problem")
    p_len = [len(x) for x in prompt_input_ids(tokenizer, list(prompts))]
    s_len = [len(x) for x in tokenizer(list(solutions), add_special_tokens=False)["input_ids"]] if solutions else []
    i = max(range(len(p_len)), key=p_len.__getitem__)
    j = max(range(len(s_len)), key=s_len.__getitem__) if s_len else None
    longest_s, sid = (s_len[j], ids[j]) if j is not None else (0, "")
    if context is not None and p_len[i] + max_new_tokens > context:
        raise LengthError(
            f"max_new_tokens ({max_new_tokens}) does not fit: the longest prompt ({ids[i]}) has {p_len[i]} tokens and "
            f"the model's context is {context}; set max_new_tokens to at most {context - p_len[i]}, or shorten the "
            "prompts (few_shot=false)"
        )
    needed = p_len[i] + max(max_new_tokens, longest_s) + 1
    limit = effective_max_length(max_length, context, needed)
    # a training example is BOS + prompt + completion + EOS; at least one prompt token must stay
    completions = [("an E-step sample", max_new_tokens, "max_new_tokens"), ("a human solution", longest_s, sid)]
    for what, tokens, where in completions:
        if tokens + 3 <= limit:
            continue
        if max_length > 0:
            raise LengthError(
                f"trainer.max_length ({limit}) cannot hold {what} of {tokens} tokens ({where}) with its BOS, EOS and "
                f"a prompt token: set trainer.max_length to at least {tokens + 3}"
            )
        raise LengthError(
            f"the model's context ({limit}) cannot hold {what} of {tokens} tokens ({where}) with its BOS, EOS and "
            f"a prompt token: it needs {tokens + 3}; lower max_new_tokens or use a longer-context model"
        )
    return Lengths(p_len[i], ids[i], longest_s, sid, context, limit)
