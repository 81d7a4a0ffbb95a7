"""LoRA fine-tuning through ``peft``: adapters on the chosen linear layers, merged back into the weights.

``lora_adapters(model, ...)`` is a context manager around a training run: it freezes the model, adds
rank-``r`` adapters ``W + (alpha / r) * B @ A`` to every linear layer whose name ends in one of the
targets (by default the attention and MLP projections), and on a normal exit merges them into the
weights with ``merge_and_unload``, so the same ``model`` object is again a plain transformers model
whose checkpoint samplers and ``AutoModelForCausalLM`` load like any other, with no adapter keys. The
previous ``requires_grad`` flags are restored. If the block raises, the adapters are dropped unmerged
(the weights stay as they were before training).

Why ``peft`` rather than restem's own LoRA layers: it is the standard, well-kept implementation (the
one transformers itself integrates), its layers keep the base layer's forward exactly and merge back
cleanly, and it handles the details a hand-rolled version gets wrong (initialisation with ``B = 0``
so training starts at the base model, scaling, dropout placement, tied and fused weights). It is an
optional dependency: asking for LoRA without it installed raises ``PeftNotInstalled`` naming
``pip install peft``.
Not covered: QLoRA / quantized bases, saving adapters on their own, DoRA and other peft variants.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
INSTALL_HINT = "pip install peft"
MISSING_PEFT = f"finetune='lora' needs the peft library, which is not installed: {INSTALL_HINT}"


class PeftNotInstalled(ImportError):
    """``finetune='lora'`` was asked for but the ``peft`` library is not installed."""


def peft_available() -> bool:
    return importlib.util.find_spec("peft") is not None


def _import_peft():
    try:
        import peft
    except ImportError as err:
        raise PeftNotInstalled(MISSING_PEFT) from err
    return peft


@dataclass
class LoraInfo:
    """What ``lora_adapters`` set up: trainable (adapter) parameters and the layers adapted."""

    trainable_parameters: int
    total_parameters: int  # of the model with adapters (base + adapters)
    adapted_layers: int


def target_layers(model: torch.nn.Module, targets: tuple[str, ...]) -> list[str]:
    """Names of the ``nn.Linear`` modules whose last name component is one of ``targets``.

    Raises ValueError naming any target that matches no linear layer (and the names that would).
    """
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    short = {n.rsplit(".", 1)[-1] for n in linear}
    missing = [t for t in targets if t not in short]
    if missing:
        raise ValueError(
            f"lora_targets {missing} match no linear layer of this model; its linear layers are named {sorted(short)}"
        )
    return [n for n in linear if n.rsplit(".", 1)[-1] in targets]


@contextmanager
def lora_adapters(
    model: torch.nn.Module, rank: int, alpha: float, dropout: float, targets: tuple[str, ...]
) -> Iterator[LoraInfo]:
    """Train LoRA adapters on ``model`` inside the block; merge them into its weights on exit."""
    layers = target_layers(model, targets)
    peft = _import_peft()
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    with warnings.catch_warnings():  # peft probes the deprecated ``is_gradient_checkpointing``
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = peft.get_peft_model(model, config)
    trainable, total = wrapped.get_nb_trainable_parameters()
    info = LoraInfo(trainable_parameters=trainable, total_parameters=total, adapted_layers=len(layers))
    merged = False
    try:
        yield info
        unloaded = wrapped.merge_and_unload()
        merged = True
    finally:
        if not merged:
            unloaded = wrapped.unload()
        if unloaded is not model:  # peft edits the model in place and hands the same object back
            raise RuntimeError("peft returned a different model object than it was given")
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
