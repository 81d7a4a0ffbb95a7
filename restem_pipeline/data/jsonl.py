"""Reading JSON-lines input: one object per line, ``.gz`` or ``-`` (stdin) too, errors that name the line.

Every loader and ``restem verify`` command reads through :func:`iter_jsonl`; checking the fields of
each record is the caller's job.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from restem_pipeline.data.schema import ProblemFormatError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-blank line; ``ProblemFormatError`` at the first bad one."""
    name = str(path)
    if name == "-":
        f = sys.stdin
    elif name.endswith(".gz"):
        f = gzip.open(name, "rt", encoding="utf-8")  # noqa: SIM115 - closed below
    else:
        f = open(name, encoding="utf-8")  # noqa: SIM115 - closed below (stdin is not ours to close)
    try:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ProblemFormatError(name, lineno, "<json>", f"not valid JSON: {err.msg}") from None
            if not isinstance(rec, dict):
                raise ProblemFormatError(name, lineno, "<json>", f"expected an object, got {type(rec).__name__}")
            yield lineno, rec
    finally:
        if f is not sys.stdin:
            f.close()
