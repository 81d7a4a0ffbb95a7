"""The normalized problem record every loader produces, and the error raised for bad input.

One schema for math and code: ``answer`` holds a math gold (a bare answer string), ``tests`` holds a
code problem's tests as a JSON string (an APPS ``input_output`` object, or
``{"test_code": ..., "entry_point": ...}``). Loaders live in ``problems`` (math) and
``code_problems`` (code); nothing here reads files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Literal

Domain = Literal["math", "code"]
SPLITS = ("train", "validation", "test")


class ProblemFormatError(ValueError):
    """Bad input: names the file, the record (line or id) and the field."""

    def __init__(self, path: str, record: str | int, field: str, message: str):
        self.path, self.record, self.field = str(path), record, field
        where = f"line {record}" if isinstance(record, int) else f"record {record!r}"
        super().__init__(f"{path}: {where}: field {field!r}: {message}")


@dataclass(frozen=True)
class Problem:
    id: str
    domain: Domain
    prompt: str
    source: str
    split: str = "train"
    answer: str | None = None
    tests: str | None = None
    level: int | None = None
    solution: str | None = None
    entry_point: str | None = None

    def __post_init__(self) -> None:
        if self.domain not in ("math", "code"):
            raise ValueError(f"problem {self.id!r}: domain must be 'math' or 'code', got {self.domain!r}")
        if self.split not in SPLITS:
            raise ValueError(f"problem {self.id!r}: split must be one of {SPLITS}, got {self.split!r}")
        if self.domain == "math" and not self.answer:
            raise ValueError(f"problem {self.id!r}: a math problem needs an answer")
        if self.domain == "code":
            if not self.tests:
                raise ValueError(f"problem {self.id!r}: a code problem needs tests")
            json.loads(self.tests)

    def to_row(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict) -> Problem:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})
