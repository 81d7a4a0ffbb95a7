"""Atomic writes: a file or a whole directory (a checkpoint) is either complete at its path or absent.

``commit_file`` writes a temporary file beside the target, fsyncs it, renames it into place and
fsyncs the directory (E-step shards, plots). ``write_dir`` does the same for a directory: everything
is written into a temporary sibling, every file and the directory are fsynced, then it is renamed
into place. A directory that already exists is first renamed aside and removed after the swap, so a
reader (the next E-step, an evaluation) never sees a half-written model at the live path; a crash
between the two renames leaves the previous version complete under ``.<name>.old-*`` beside it, and
the next ``write_dir`` of that path puts it back first and clears what crashed writers left.
Not covered: writers racing on the same path (the callers hold a lock or own the path), and
filesystems without atomic rename.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(directory: Path, name: str, write: Callable[[Path], None]) -> Path:
    """``write`` a temporary file in ``directory``, fsync it, rename it to ``name``, fsync the directory."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        fsync_path(Path(tmp))
        os.replace(tmp, directory / name)
        fsync_path(directory, directory=True)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return directory / name


def write_dir(out: str | Path, write: Callable[[Path], None]) -> Path:
    """``write`` into a temporary directory beside ``out``, fsync it all, then rename it to ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    olds = sorted(out.parent.glob(f".{out.name}.old-*"))
    if olds and not out.exists():  # a crash between the two renames below: the old version is whole
        os.replace(olds.pop(), out)
    for stale in [*olds, *out.parent.glob(f".{out.name}.tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        write(tmp)
        for f in tmp.rglob("*"):
            fsync_path(f, directory=f.is_dir())
        fsync_path(tmp, directory=True)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old)  # an empty directory is replaced by the rename
        os.replace(tmp, out)
        fsync_path(out.parent, directory=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
