"""Models and tokenizers: build the embedded tiny Llama and its tokenizer, load any HF causal LM.

The embedded base is a small Llama-architecture model with a byte-level BPE tokenizer trained
locally with ``tokenizers`` (digits split one per token, so arithmetic is learnable), both saved
with ``save_pretrained`` so transformers (and vLLM on a GPU) load them like any hub model.
``load_model``/``load_tokenizer`` take a local path or a hub id and are what every stage uses.
Pretraining itself is a call into ``training``; nothing here samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"}


@dataclass(frozen=True)
class TinyLlamaSpec:
    vocab_size: int = 384
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_positions: int = 320

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``texts``; digits are single tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.padding_side = "left"
    return fast


def tiny_llama(spec: TinyLlamaSpec, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerFast:
    """Tokenizer set up for batched decoder-only work: left padding, a pad token."""
    tok = AutoTokenizer.from_pretrained(str(name_or_path))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def prompt_input_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """What every sampler feeds the model for ``prompts``: BOS (when the tokenizer has one) + the prompt.

    A prompt that already opens with the BOS token (a rendered chat template whose first token is
    ``<|im_start|>``, SmolLM2's BOS) gets no second one: the model never saw a doubled BOS in training.
    """
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    bos = tokenizer.bos_token_id
    return [list(ids) if bos is None or ids[:1] == [bos] else [bos, *ids] for ids in encoded]


def load_model(name_or_path: str | Path, device: str = "cpu", dtype: str = "float32"):
    model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=getattr(torch, dtype))
    return model.to(device)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def context_length(name_or_path: str | Path) -> int | None:
    """The longest sequence the model at ``name_or_path`` takes (its config's position limit), if it says."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(name_or_path))
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
