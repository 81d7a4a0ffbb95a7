"""Atomic checkpoints (``restem_pipeline.storage.atomic``): a model directory is whole at its path or the old one is."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from restem_pipeline.generation.modeling import train_tokenizer
from restem_pipeline.storage.atomic import commit_file, write_dir
from restem_pipeline.training.finetune import save_checkpoint


def _files(d):
    return {p.name: p.read_text() for p in d.iterdir()}


def test_write_dir_replaces_a_directory_whole(tmp_path):
    out = tmp_path / "ckpt"
    write_dir(out, lambda d: (d / "a.txt").write_text("one"))
    assert _files(out) == {"a.txt": "one"}
    write_dir(out, lambda d: (d / "b.txt").write_text("two"))
    assert _files(out) == {"b.txt": "two"}  # nothing of the old version left inside
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary or old directories beside it


def test_a_failed_write_leaves_the_previous_version(tmp_path):
    out = tmp_path / "ckpt"
    write_dir(out, lambda d: (d / "model.bin").write_text("v1"))

    def half_then_fail(d):
        (d / "model.bin").write_text("v2, half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_dir(out, half_then_fail)
    assert _files(out) == {"model.bin": "v1"} and [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_a_killed_writer_leaves_the_previous_version_and_the_next_write_cleans_up(tmp_path):
    out = tmp_path / "ckpt"
    write_dir(out, lambda d: (d / "model.bin").write_text("v1"))
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom restem_pipeline.storage.atomic import write_dir\n"
        "def w(d):\n    (d / 'model.bin').write_text('v2, half')\n    print('written', flush=True)\n"
        "    time.sleep(60)\n"
        f"write_dir(Path({str(out)!r}), w)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "written"
    os.kill(child.pid, signal.SIGKILL)  # a crash mid-save
    child.wait()
    assert _files(out) == {"model.bin": "v1"}
    assert any(p.name.startswith(".ckpt.tmp-") for p in tmp_path.iterdir())  # the crashed writer's leftovers
    write_dir(out, lambda d: (d / "model.bin").write_text("v3"))
    assert _files(out) == {"model.bin": "v3"} and [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_a_crash_between_the_renames_is_recovered(tmp_path):
    # as if a writer died after moving the old version aside and before renaming the new one in
    old = tmp_path / ".ckpt.old-x1"
    old.mkdir()
    (old / "model.bin").write_text("v1")
    (tmp_path / ".ckpt.tmp-x2").mkdir()
    write_dir(tmp_path / "ckpt", lambda d: (d / "model.bin").write_text("v2"))
    assert _files(tmp_path / "ckpt") == {"model.bin": "v2"} and len(list(tmp_path.iterdir())) == 1


def test_commit_file(tmp_path):
    commit_file(tmp_path, "x.json", lambda p: p.write_text("{}"))
    assert _files(tmp_path) == {"x.json": "{}"}


def test_save_checkpoint_is_atomic_and_reloads(tmp_path, monkeypatch):
    tok = train_tokenizer(["1 + 2 = 3"] * 4, 300)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    first = LlamaForCausalLM(cfg)
    out = save_checkpoint(first, tok, tmp_path / "iter_1")
    second = LlamaForCausalLM(cfg)  # other weights
    monkeypatch.setattr(type(tok), "save_pretrained", lambda *a, **k: (_ for _ in ()).throw(OSError("quota")))
    with pytest.raises(OSError, match="quota"):
        save_checkpoint(second, tok, out)  # the model was written, the tokenizer failed
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), first.parameters(), strict=True))
    assert [p.name for p in tmp_path.iterdir()] == ["iter_1"]
