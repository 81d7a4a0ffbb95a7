"""What restem's automation decides, without Dagster: new problem-set files and whether to run another iteration.

- **Problem-set files**: ``scan_problem_sets`` lists ``<data root>/problem_sets/*.jsonl`` (and ``.jsonl.gz``),
  fingerprints each file (size, mtime_ns and a SHA-256 of its content; the hash is reused while size and
  mtime are unchanged), compares with what a cursor (JSON) saw last, and validates every new or changed file
  with the project loaders: a ``ProblemFormatError`` names the file, the line and the field. Both valid and
  invalid files are recorded in the cursor, so a file is judged once per content and a fixed file is judged
  again. ``find_problem_set_file`` is how the ``problem_set`` asset finds the same file.
- **Early stopping**: ``continue_decision`` says whether validation pass@1 rose by more than a margin from
  iteration t-1 to t; ``next_iteration_decision`` adds "iteration t is the last unrolled one".
- **Settings**: ``min_improvement_from_env`` parses ``RESTEM_MIN_IMPROVEMENT`` with a message naming the value.

Not covered: sensors, schedules and run requests (``assets/automation.py``), loading the data itself
(``problems``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from restem_pipeline.data.problems import BUILTIN_SETS, load_jsonl_auto
from restem_pipeline.data.schema import ProblemFormatError

SUFFIXES = (".jsonl.gz", ".jsonl")  # longest first: "x.jsonl.gz" is named "x"
PARTITION_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
MIN_IMPROVEMENT_ENV = "RESTEM_MIN_IMPROVEMENT"
DEFAULT_MIN_IMPROVEMENT = 0.0


# --- problem-set files ---------------------------------------------------------------------------


def problem_set_name(path: str | Path) -> str | None:
    """``x`` for ``x.jsonl`` or ``x.jsonl.gz``; None for any other file (and hidden or temporary ones)."""
    name = Path(path).name
    if name.startswith((".", "~")):
        return None
    for suffix in SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def find_problem_set_file(folder: str | Path, name: str) -> Path | None:
    """``folder/name.jsonl``, else ``folder/name.jsonl.gz``, else None."""
    for suffix in (".jsonl", ".jsonl.gz"):
        path = Path(folder) / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


@dataclass(frozen=True)
class Fingerprint:
    size: int
    mtime_ns: int
    sha256: str

    @property
    def short(self) -> str:
        return self.sha256[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint_of(path: Path, seen: dict | None = None) -> Fingerprint:
    """The file's fingerprint; the content hash is reused from ``seen`` while size and mtime match it."""
    st = path.stat()
    if seen and seen.get("size") == st.st_size and seen.get("mtime_ns") == st.st_mtime_ns and seen.get("sha256"):
        return Fingerprint(st.st_size, st.st_mtime_ns, seen["sha256"])
    return Fingerprint(st.st_size, st.st_mtime_ns, file_sha256(path))


def problem_set_file_error(path: Path, name: str) -> str | None:
    """Why ``path`` cannot become problem set ``name`` (file, line and field for a bad record), or None."""
    if not PARTITION_KEY.match(name):
        return f"{path}: the name {name!r} must be letters, digits, '-' or '_' (it becomes the partition key)"
    if name in BUILTIN_SETS:
        return f"{path}: {name!r} is a built-in problem set, which takes precedence over a file; rename the file"
    if path.name.endswith(".gz") and (path.parent / f"{name}.jsonl").exists():
        return f"{path}: {name}.jsonl exists too and is the one read; remove one of them"
    try:
        report = load_jsonl_auto(path)
    except ProblemFormatError as err:
        return str(err)
    except (OSError, EOFError, UnicodeDecodeError) as err:  # unreadable, truncated gzip, not UTF-8
        return f"{path}: cannot be read: {err}"
    if not report.problems:
        return f"{path}: no usable problem ({len(report.rejected)} set aside for an unparseable gold answer)"
    if not any(p.split == "train" for p in report.problems):
        return f"{path}: field 'split': no problem is in the train split, so there is nothing to train on"
    return None


@dataclass(frozen=True)
class FileVerdict:
    """A new or changed problem-set file and what validating it found (``error`` None when it loads)."""

    path: Path
    name: str
    fingerprint: Fingerprint
    error: str | None

    @property
    def valid(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Scan:
    verdicts: list[FileVerdict]  # new or changed files only, in name order
    cursor: str  # JSON: what was seen, for the next scan
    pending: int  # files left for the next scan because the time budget ran out


def scan_problem_sets(folder: str | Path, cursor: str | None, budget_s: float = 20.0) -> Scan:
    """Judge every file of ``folder`` whose content differs from what ``cursor`` recorded.

    Unchanged files (same hash, even if touched) give no verdict; removed files leave the cursor. Files
    that would not fit in ``budget_s`` are left out of the cursor, so the next scan takes them.
    """
    folder = Path(folder)
    seen: dict[str, dict] = json.loads(cursor).get("files", {}) if cursor else {}
    out: dict[str, dict] = {}
    verdicts: list[FileVerdict] = []
    pending = 0
    t0 = time.monotonic()
    paths = sorted(p for p in folder.iterdir() if p.is_file() and problem_set_name(p)) if folder.is_dir() else []
    for path in paths:
        name = problem_set_name(path)
        assert name is not None
        prev = seen.get(path.name)
        if time.monotonic() - t0 > budget_s:
            pending += 1
            if prev:
                out[path.name] = prev
            continue
        try:
            fp = fingerprint_of(path, prev)
        except FileNotFoundError:  # removed while scanning
            continue
        if prev and prev.get("sha256") == fp.sha256:
            out[path.name] = {**prev, "size": fp.size, "mtime_ns": fp.mtime_ns}
            continue
        verdict = FileVerdict(path, name, fp, problem_set_file_error(path, name))
        verdicts.append(verdict)
        out[path.name] = {**asdict(fp), "valid": verdict.valid, "error": verdict.error}
    return Scan(verdicts, json.dumps({"files": out}, sort_keys=True), pending)


# --- early stopping ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Run iteration t+1 or not, with the numbers: validation pass@1 of t-1 and t, their delta, the margin."""

    continue_: bool
    delta: float
    reason: str
    val_prev: float = math.nan
    val_curr: float = math.nan
    margin: float = DEFAULT_MIN_IMPROVEMENT

    @property
    def label(self) -> str:
        return "continue" if self.continue_ else "stop"


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def continue_decision(val_prev: float | None, val_curr: float | None, margin: float) -> Decision:
    """Continue iff ``val_curr - val_prev > margin`` (fractions: 0.01 is one point); rounded to 1e-9 so
    that 0.53 - 0.48 counts as exactly 0.05."""
    if not (_finite(val_prev) and _finite(val_curr)):
        return Decision(
            False,
            math.nan,
            f"no validation reward to compare (previous {val_prev}, current {val_curr}): stop",
            math.nan if val_prev is None else val_prev,
            math.nan if val_curr is None else val_curr,
            margin,
        )
    assert val_prev is not None and val_curr is not None
    delta = round(val_curr - val_prev, 9)
    go = delta > margin
    verb = "above" if go else "not above"
    reason = (
        f"validation pass@1 {val_prev:.4f} -> {val_curr:.4f}: delta {delta:+.4f} ({delta * 100:+.2f} points) "
        f"is {verb} the margin {margin:.4f}: {'continue' if go else 'stop'}"
    )
    return Decision(go, delta, reason, val_prev, val_curr, margin)


def next_iteration_decision(
    t: int, iterations: int, val_prev: float | None, val_curr: float | None, margin: float
) -> Decision:
    """``continue_decision`` for iteration ``t``, except that the last unrolled iteration always stops."""
    d = continue_decision(val_prev, val_curr, margin)
    if t >= iterations and d.continue_:
        reason = f"{d.reason}; but iteration {t} is the last one unrolled (the experiment has {iterations}): stop"
        return Decision(False, d.delta, reason, d.val_prev, d.val_curr, d.margin)
    return d


def min_improvement_from_env(raw: str | None) -> float:
    """``RESTEM_MIN_IMPROVEMENT``: a float in [-1, 1] (a fraction of pass@1; 0.01 is one point), default 0."""
    if raw is None or not raw.strip():
        return DEFAULT_MIN_IMPROVEMENT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and -1.0 <= value <= 1.0):
        raise ValueError(
            f"{MIN_IMPROVEMENT_ENV} must be a number in [-1, 1] (a fraction of validation pass@1; "
            f"0.01 is one point), got {raw!r}"
        )
    return value
