"""Math problem-set loaders, all producing the normalized ``Problem`` schema.

Formats: the embedded arithmetic set; Hendrycks MATH as JSONL (``unique_id, problem, level, type,
solution``) or in its original ``split/subject/N.json`` layout; MATH-500 (``answer`` field);
GSM8K (``question``, ``answer`` ending in ``#### N``); and restem's own normalized JSONL. A file
whose records are malformed (bad JSON, a missing or mistyped field) raises ``ProblemFormatError``
naming the file, the line and the field, before anything is written. A gold answer that cannot be
parsed is not an error of the file: that problem is set aside in ``LoadReport.rejected`` with its
id and reason, and never reaches training. Code problem sets are loaded by ``code_problems``
(named here by ``load_builtin``).
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from restem_pipeline.data import arith
from restem_pipeline.data.jsonl import iter_jsonl
from restem_pipeline.data.schema import Problem, ProblemFormatError
from restem_pipeline.rewards.mathverify import InvalidGoldError, parse_gold

MATH_SETS = ("arith", "arith_ood", "math", "math500", "gsm8k")
CODE_SETS = ("code", "humaneval", "humanevalplus", "mbpp", "mbppplus", "apps")
BUILTIN_SETS = MATH_SETS + CODE_SETS


@dataclass
class LoadReport:
    problems: list[Problem]
    rejected: list[dict] = field(default_factory=list)  # {"id", "field", "reason"}
    source_files: list[str] = field(default_factory=list)


def external_data_root() -> Path:
    """Real data sets (MATH, GSM8K, ...): ``$RESTEM_EXTERNAL_DATA`` or ``../shared/data``."""
    return Path(os.environ.get("RESTEM_EXTERNAL_DATA", Path.cwd().parent / "shared" / "data")).resolve()


def require(rec: dict, key: str, path: Path, record: int | str, kind: type = str):
    if key not in rec:
        raise ProblemFormatError(path, record, key, "missing")
    value = rec[key]
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise ProblemFormatError(path, record, key, f"expected a non-empty {kind.__name__}, got {value!r:.60}")
    return value


def _math_level(value: object) -> int | None:
    m = re.fullmatch(r"(?:Level )?([1-5])", str(value).strip())
    return int(m.group(1)) if m else None  # MATH has two "Level ?" rows


def _gold_or_reject(text: str, fmt: str, pid: str, report: LoadReport) -> str | None:
    try:
        return parse_gold(text, fmt)
    except InvalidGoldError as err:
        report.rejected.append({"id": pid, "field": "answer", "reason": str(err)})
        return None


def _math_problem(rec: dict, path: Path, rec_id: int | str, split: str, source: str, report: LoadReport) -> None:
    problem = require(rec, "problem", path, rec_id)
    solution = require(rec, "solution", path, rec_id)
    pid = str(rec.get("unique_id") or f"{path.stem}/{rec_id}")
    gold = (
        _gold_or_reject(rec["answer"], "answer", pid, report)
        if "answer" in rec
        else _gold_or_reject(solution, "math_solution", pid, report)
    )
    if gold is not None:
        report.problems.append(
            Problem(
                id=pid,
                domain="math",
                prompt=problem,
                source=source,
                split=split,
                answer=gold,
                level=_math_level(rec.get("level")),
                solution=solution,
            )
        )


def load_math_jsonl(path: str | Path, split: str, source: str = "math") -> LoadReport:
    path = Path(path)
    report = LoadReport([], source_files=[str(path)])
    for lineno, rec in iter_jsonl(path):
        _math_problem(rec, path, lineno, split, source, report)
    return report


def load_math_layout(root: str | Path, source: str = "math") -> LoadReport:
    """The original MATH layout: ``root/{train,test}/<subject>/<N>.json``."""
    root = Path(root)
    report = LoadReport([])
    for split in ("train", "test"):
        for path in sorted((root / split).glob("*/*.json")):
            try:
                rec = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ProblemFormatError(path, 1, "<json>", f"not valid JSON: {err.msg}") from err
            rec.setdefault("unique_id", f"{split}/{path.parent.name}/{path.name}")
            _math_problem(rec, path, 1, split, source, report)
            report.source_files.append(str(path))
    return report


def load_gsm8k(path: str | Path, split: str, source: str = "gsm8k") -> LoadReport:
    path = Path(path)
    report = LoadReport([], source_files=[str(path)])
    for lineno, rec in iter_jsonl(path):
        question = require(rec, "question", path, lineno)
        answer = require(rec, "answer", path, lineno)
        pid = f"gsm8k/{split}/{lineno - 1}"
        gold = _gold_or_reject(answer, "gsm8k", pid, report)
        if gold is not None:
            solution = re.sub(r"<<[^>]*>>", "", answer).split("####")[0].strip() + f" The answer is \\boxed{{{gold}}}."
            report.problems.append(
                Problem(
                    id=pid, domain="math", prompt=question, source=source, split=split, answer=gold, solution=solution
                )
            )
    return report


def load_normalized_jsonl(path: str | Path) -> LoadReport:
    """restem's own schema, one ``Problem`` per line (what ``problems.parquet`` holds)."""
    path = Path(path)
    report = LoadReport([], source_files=[str(path)])
    for lineno, rec in iter_jsonl(path):
        for key in ("id", "domain", "prompt", "source"):
            require(rec, key, path, lineno)
        try:
            report.problems.append(Problem.from_row(rec))
        except (ValueError, TypeError) as err:
            fld = "answer" if "answer" in str(err) else "tests" if "tests" in str(err) else "split"
            raise ProblemFormatError(path, lineno, fld, str(err)) from err
    return report


def load_jsonl_auto(path: str | Path, split: str = "train") -> LoadReport:
    """Detect the format from the first record's fields and load the whole file with it."""
    path = Path(path)
    first = next(iter_jsonl(path), None)
    if first is None:
        raise ProblemFormatError(path, 1, "<file>", "the file holds no records")
    keys = set(first[1])
    if {"id", "domain", "prompt"} <= keys:
        return load_normalized_jsonl(path)
    if {"problem", "solution"} <= keys:
        return load_math_jsonl(path, split, source="math500" if "answer" in keys else "math")
    if {"question", "answer"} <= keys:
        return load_gsm8k(path, split)
    raise ProblemFormatError(
        path,
        first[0],
        "<record>",
        f"unrecognized fields {sorted(keys)}; expected restem, "
        "MATH (problem, solution), MATH-500 (+answer) or GSM8K (question, answer)",
    )


def with_validation_split(problems: list[Problem], fraction: float, seed: int) -> list[Problem]:
    """Move a seeded ``fraction`` of train problems to validation when a set ships none."""
    if any(p.split == "validation" for p in problems) or fraction <= 0:
        return problems
    train_ids = sorted(p.id for p in problems if p.split == "train")
    chosen = set(random.Random(seed).sample(train_ids, int(len(train_ids) * fraction)))
    return [Problem(**{**p.to_row(), "split": "validation"}) if p.id in chosen else p for p in problems]


def load_builtin(
    name: str,
    seed: int = 0,
    arith_sizes: tuple[int, int, int] = (600, 200, 400),
    exclude: set[str] | frozenset[str] | None = None,
) -> LoadReport:
    """A problem set by name: ``arith``, ``arith_ood`` (embedded; the second a transfer set), ``math``,
    ``math500``, ``gsm8k`` (external data).

    ``exclude``: problem texts the embedded sets never draw (``arith.embedded_problem_set``); a real data
    set is a fixed file, so it takes none (a held-out slice of one is a list of ids: ``data/holdout.py``).
    """
    if exclude and name not in ("arith", "arith_ood"):
        raise ValueError(f"problem set {name!r}: only the embedded sets (arith, arith_ood) draw around exclude")
    if name == "arith":
        n_train, n_val, n_test = arith_sizes
        problems = arith.embedded_problem_set(seed, n_train, n_val, n_test, exclude=exclude)
        return LoadReport(problems, source_files=["<embedded>"])
    if name == "arith_ood":  # the held-out transfer set: evaluation splits a quarter and half of arith's (50 / 200)
        n_train, n_val, n_test = arith_sizes
        problems = arith.embedded_problem_set(seed, min(n_train, 20), n_val // 4, n_test // 2, name, exclude)
        return LoadReport(problems, source_files=["<embedded>"])
    root = external_data_root()
    if name in CODE_SETS:
        return LoadReport(code_problem_set(name, root, seed), source_files=[str(root)])
    if name == "math":
        parts = [load_math_jsonl(root / "math" / f"{s}.jsonl", s) for s in ("train", "test")]
    elif name == "math500":
        parts = [load_math_jsonl(root / "math500" / "test.jsonl", "test", source="math500")]
    elif name == "gsm8k":
        parts = [load_gsm8k(root / "gsm8k" / f"{s}.jsonl", s) for s in ("train", "test")]
    else:
        raise ValueError(f"unknown problem set {name!r}; built-in sets are {', '.join(BUILTIN_SETS)}")
    merged = LoadReport(
        [p for r in parts for p in r.problems],
        [x for r in parts for x in r.rejected],
        [f for r in parts for f in r.source_files],
    )
    merged.problems = with_validation_split(merged.problems, 0.05, seed)
    return merged


def code_problem_set(name: str, root: Path, seed: int) -> list[Problem]:
    """Code sets by name. HumanEval(+) is test-only (the paper's transfer set); APPS is the sample."""
    from restem_pipeline.data import code_problems as C

    if name == "code":
        from restem_pipeline.data.code_tasks import embedded_code_problems

        return embedded_code_problems(seed=seed, n=60)
    loaders = {
        "humaneval": lambda: C.load_humaneval(root / "humaneval" / "HumanEval.jsonl.gz"),
        "humanevalplus": lambda: C.load_humanevalplus(root / "humanevalplus" / "HumanEvalPlus.jsonl.gz"),
        "mbpp": lambda: C.load_mbpp(root / "mbpp" / "mbpp.jsonl"),
        "mbppplus": lambda: C.load_mbppplus(root / "mbppplus" / "MbppPlus.jsonl.gz"),
        "apps": lambda: C.load_apps_folder(root / "apps" / "original_layout"),
    }
    return with_validation_split(loaders[name](), 0.1, seed)
