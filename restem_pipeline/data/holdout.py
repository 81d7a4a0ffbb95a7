"""Held-out slices of real data sets: a seeded sample of a split's problem ids that no earlier run touched.

A confirmatory run on a real data set (GSM8K's test split: 1,319 problems) scores a slice no earlier run
has scored. The ids earlier seeded subsets took are computed again from their recipes (``Earlier``: the
pipeline's own ``subset`` in ``assets/ingest.py``, ``scripts/experiment_nodagster.py``'s, or the first N
problems of the file, which the sampler benchmark generated on), removed, and ``size`` ids are drawn from
the rest with the slice's own seed. The slice is a text file, committed before the run: a header of
``# key: value`` lines (the set, the split, the recipe), then one id a line. ``ExperimentResource.
test_ids_file`` names it, and that set's split becomes exactly those problems (``apply_holdout``).

Not covered: loading the data set (``problems.py``); the settings file that names the slice and the git
check that it is committed (``assets/paper_settings.py``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from restem_pipeline.data.schema import Problem

KINDS = ("ingest", "nodagster", "first")


@dataclass(frozen=True)
class Earlier:
    """An earlier run's seeded subset of the split: ``kind`` names whose recipe drew it."""

    kind: str  # ingest: assets/ingest.py subset(); nodagster: scripts/experiment_nodagster.py; first: file order
    size: int
    seed: int = 0
    run: str = ""  # which run, in words (where the results log records it)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")

    def ids(self, problems: list[Problem], split: str) -> set[str]:
        """The ids this subset took of ``split`` (``problems`` in the loader's order, the file's)."""
        in_file = [p for p in problems if p.split == split]
        if self.kind == "first":
            return {p.id for p in in_file[: self.size]}
        pool = sorted(in_file, key=lambda p: p.id)
        if self.kind == "ingest":  # assets/ingest.py subset(): Random(f"{seed}-{split}"), the whole split when cap >= n
            picked = random.Random(f"{self.seed}-{split}").sample(pool, self.size) if self.size < len(pool) else pool
        else:  # scripts/experiment_nodagster.py subsets(): Random(f"{seed}/{split}")
            picked = random.Random(f"{self.seed}/{split}").sample(pool, min(self.size, len(pool)))
        return {p.id for p in picked}

    def describe(self) -> str:
        what = f"first {self.size}" if self.kind == "first" else f"{self.kind} seed {self.seed} size {self.size}"
        return f"{what} ({self.run})" if self.run else what


@dataclass(frozen=True)
class HoldoutSpec:
    problem_set: str
    split: str
    seed: int
    size: int
    earlier: tuple[Earlier, ...] = ()


def holdout_ids(problems: list[Problem], spec: HoldoutSpec) -> tuple[list[str], set[str]]:
    """(the slice's ids, sorted; the ids the earlier subsets took). Deterministic in ``spec``."""
    split = [p.id for p in problems if p.split == spec.split]
    if not split:
        raise ValueError(f"{spec.problem_set} has no {spec.split!r} problems")
    taken = set().union(*(e.ids(problems, spec.split) for e in spec.earlier))
    rest = sorted(set(split) - taken)
    if spec.size > len(rest):
        raise ValueError(
            f"{spec.problem_set} {spec.split}: {len(rest)} problems no earlier subset took, fewer than size {spec.size}"
        )
    return sorted(random.Random(f"holdout-{spec.seed}").sample(rest, spec.size)), taken


def holdout_text(spec: HoldoutSpec, ids: list[str], taken: set[str], total: int, made_by: str) -> str:
    """The committed file: a header saying how the slice was drawn, then one id a line."""
    lines = [
        f"# held-out slice, written by {made_by}",
        f"# set: {spec.problem_set}",
        f"# split: {spec.split}",
        f"# seed: {spec.seed}",
        f"# size: {spec.size}",
        f"# of: {total} problems in the split, {len(taken)} of them taken by earlier subsets",
        *(f"# earlier: {e.describe()}" for e in spec.earlier),
    ]
    return "\n".join([*lines, *ids]) + "\n"


def read_holdout(path: str | Path) -> tuple[dict[str, str], list[str]]:
    """(header {key: value}, ids) of a slice file; a malformed one raises ``ValueError`` naming file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the held-out slice: {err.strerror or err}") from None
    header: dict[str, str] = {}
    ids: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep and key.strip() in ("set", "split"):
                header[key.strip()] = value.strip()
        elif line:
            if " " in line or line in ids:
                raise ValueError(f"{path}: line {n}: {line!r} is not one problem id, or is there twice")
            ids.append(line)
    for key in ("set", "split"):
        if key not in header:
            raise ValueError(f"{path}: no '# {key}: ...' header line (which problem set and split the ids are of)")
    if not ids:
        raise ValueError(f"{path}: holds no problem ids")
    return header, ids


def apply_holdout(problems: list[Problem], path: str | Path, name: str) -> list[Problem]:
    """``problems`` of set ``name`` with the slice's split replaced by the slice (unchanged for another set).

    An id the set does not have raises ``ValueError`` naming the file and the id.
    """
    header, ids = read_holdout(path)
    if header["set"] != name:
        return problems
    split = header["split"]
    have = {p.id for p in problems if p.split == split}
    missing = [i for i in ids if i not in have]
    if missing:
        raise ValueError(f"{path}: id {missing[0]!r} is not a {split!r} problem of {name!r} ({len(missing)} missing)")
    keep = set(ids)
    return [p for p in problems if p.split != split or p.id in keep]
