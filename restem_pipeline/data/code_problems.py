"""Loaders for code problem sets (APPS, HumanEval(+), MBPP(+)) into :class:`Problem`, and prompts.

Each loader keeps upstream semantics and cites its source:

* APPS (hendrycks/apps): the original folder layout (``NNNN/question.txt``, ``input_output.json``,
  ``solutions.json``, ``metadata.json``, optional ``starter_code.py``) and the Hugging Face
  ``codeparrot/apps`` JSON lines (``problem_id, question, solutions`` (JSON string), ``input_output``
  (JSON string), ``difficulty, url, starter_code``). ``tests`` is the ``input_output`` object; level is
  1/2/3 for introductory/interview/competition. Problems without tests are skipped (some APPS test
  problems have none). Prompts follow APPS' ``QUESTION: ... ANSWER:`` format with its
  "Use Standard Input format" / "Use Call-Based format" line.
* HumanEval (openai/human-eval): ``tests = {"test_code": test, "entry_point": ...}``; the runner calls
  ``check(entry_point)``. ``solution`` is prompt + canonical solution.
* MBPP (google-research/mbpp; full jsonl or sanitized json): asserts after ``test_setup_code`` (or
  ``test_imports``); the entry point is the function the first assert calls. Splits by task id as
  in the paper: 1-10 few-shot prompts (train here), 11-510 test, 511-600 validation, 601-974 train.
* HumanEval+ / MBPP+ (evalplus): test code that runs the reference solution on ``base_input`` +
  ``plus_input`` inside the sandbox and compares as evalplus does (see :mod:`code_plus`).

The embedded generated task is in :mod:`restem_pipeline.data.code_tasks`, which builds on the APPS
prompt format here (the arrow runs one way). Nothing here runs code.
"""

from __future__ import annotations

import builtins
import json
import re
from pathlib import Path

from restem_pipeline.data.code_plus import plus_test_code
from restem_pipeline.data.jsonl import iter_jsonl
from restem_pipeline.data.schema import Problem, ProblemFormatError

APPS_LEVELS = {"introductory": 1, "interview": 2, "competition": 3}


def _need(row: dict, key: str, path, record, kind=str):
    value = row.get(key)
    if not isinstance(value, kind):
        raise ProblemFormatError(str(path), record, key, f"missing or not a {kind.__name__}")
    return value


# ------------------------------------------------------------------------------------------ APPS


def apps_prompt(question: str, starter_code: str, call_based: bool) -> str:
    """APPS' generation prompt (hendrycks/apps ``eval/generate_gpt_codes.py``)."""
    parts = ["\nQUESTION:\n", question.strip(), "\n"]
    if starter_code.strip():
        parts += [starter_code.rstrip(), "\n"]
    parts.append("\nUse Call-Based format\n" if call_based else "\nUse Standard Input format\n")
    parts.append("\nANSWER:\n")
    return "".join(parts)


def _apps_problem(
    pid: str, question: str, io_raw, solutions_raw, difficulty: str | None, starter: str, split: str, path, record
) -> Problem | None:
    if isinstance(io_raw, str):
        if not io_raw.strip():
            return None
        try:
            io = json.loads(io_raw)
        except ValueError as e:
            raise ProblemFormatError(str(path), record, "input_output", f"not valid JSON: {e}") from None
    else:
        io = io_raw
    if not isinstance(io, dict) or not io.get("inputs") or "outputs" not in io:
        return None
    if len(io["inputs"]) != len(io["outputs"]):
        raise ProblemFormatError(str(path), record, "input_output", "inputs and outputs differ in length")
    if isinstance(solutions_raw, str):
        try:
            solutions = json.loads(solutions_raw) if solutions_raw.strip() else []
        except ValueError as e:
            raise ProblemFormatError(str(path), record, "solutions", f"not valid JSON: {e}") from None
    else:
        solutions = solutions_raw or []
    if not isinstance(solutions, list):
        raise ProblemFormatError(str(path), record, "solutions", "expected a list of programs")
    fn_name = io.get("fn_name")
    if fn_name is not None and not isinstance(fn_name, str):
        raise ProblemFormatError(str(path), record, "input_output.fn_name", "expected a string")
    return Problem(
        id=f"apps/{pid}",
        domain="code",
        prompt=apps_prompt(question, starter or "", fn_name is not None),
        source="apps",
        split=split,
        tests=json.dumps(io),
        level=APPS_LEVELS.get(difficulty or ""),
        solution=solutions[0] if solutions else None,
        entry_point=fn_name,
    )


def apps_solutions(problem_dir: str | Path) -> list[str]:
    """All reference solutions of one APPS problem folder (for tests and mutation checks)."""
    p = Path(problem_dir) / "solutions.json"
    return json.loads(p.read_text()) if p.exists() else []


def load_apps_folder(path: str | Path, split: str = "train") -> list[Problem]:
    """APPS original layout: ``path/NNNN/{question.txt,input_output.json,solutions.json,...}``."""
    root = Path(path)
    if not root.is_dir():
        raise ProblemFormatError(str(root), "<folder>", "<path>", "not a directory")
    problems = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        q = d / "question.txt"
        if not q.exists():
            raise ProblemFormatError(str(d), d.name, "question.txt", "missing")
        io_path, meta_path, starter_path = d / "input_output.json", d / "metadata.json", d / "starter_code.py"
        io_raw = io_path.read_text() if io_path.exists() else ""
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        sols_path = d / "solutions.json"
        sols = sols_path.read_text() if sols_path.exists() else ""
        starter = starter_path.read_text() if starter_path.exists() else ""
        prob = _apps_problem(
            d.name, q.read_text(), io_raw, sols, meta.get("difficulty"), starter, split, io_path, d.name
        )
        if prob:
            problems.append(prob)
    return problems


def load_apps_jsonl(path: str | Path, split: str = "train") -> list[Problem]:
    """APPS as Hugging Face ``codeparrot/apps`` JSON lines."""
    problems = []
    for lineno, row in iter_jsonl(path):
        pid = row.get("problem_id")
        if not isinstance(pid, int | str):
            raise ProblemFormatError(str(path), lineno, "problem_id", "missing or not an int/string")
        question = _need(row, "question", path, lineno)
        prob = _apps_problem(
            str(pid),
            question,
            row.get("input_output", ""),
            row.get("solutions", ""),
            row.get("difficulty"),
            row.get("starter_code") or "",
            split,
            path,
            lineno,
        )
        if prob:
            problems.append(prob)
    return problems


# ------------------------------------------------------------------------------------- HumanEval


def load_humaneval(path: str | Path) -> list[Problem]:
    """openai/human-eval ``HumanEval.jsonl(.gz)``; split ``test`` (it is the transfer set)."""
    problems = []
    for lineno, row in iter_jsonl(path):
        tid, prompt = _need(row, "task_id", path, lineno), _need(row, "prompt", path, lineno)
        entry, test = _need(row, "entry_point", path, lineno), _need(row, "test", path, lineno)
        canonical = row.get("canonical_solution")
        problems.append(
            Problem(
                id=tid,
                domain="code",
                prompt=prompt,
                source="humaneval",
                split="test",
                # the prompt is trusted setup: the helpers its tests call (encode_cyclic, poly...) are
                # the data set's, run by the checker, never the program's redefinitions
                tests=json.dumps({"test_code": test, "entry_point": entry, "setup_code": prompt}),
                solution=prompt + canonical if isinstance(canonical, str) else None,
                entry_point=entry,
            )
        )
    return problems


def _plus_inputs(row: dict, key: str, path, lineno) -> list:
    raw = row.get(key, "[]")
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as e:
        raise ProblemFormatError(str(path), lineno, key, f"not valid JSON: {e}") from None
    if value == {}:
        return []  # Mbpp/793 stores an empty plus_input as {}
    if not isinstance(value, list) or not all(isinstance(v, list) for v in value):
        raise ProblemFormatError(str(path), lineno, key, "expected a list of argument lists")
    return value


def _load_plus(path, source: str, split_of) -> list[Problem]:
    problems = []
    for lineno, row in iter_jsonl(path):
        tid, prompt = _need(row, "task_id", path, lineno), _need(row, "prompt", path, lineno)
        entry = _need(row, "entry_point", path, lineno)
        canonical = _need(row, "canonical_solution", path, lineno)
        reference = prompt + canonical if source == "humanevalplus" else canonical
        inputs = _plus_inputs(row, "base_input", path, lineno) + _plus_inputs(row, "plus_input", path, lineno)
        try:
            atol = float(row.get("atol") or 0)
        except ValueError:
            raise ProblemFormatError(str(path), lineno, "atol", "not a number") from None
        mbpp_task = int(tid.split("/")[-1]) if source == "mbppplus" else None
        test = plus_test_code(reference, entry, inputs, atol, mbpp_task)
        problems.append(
            Problem(
                id=tid,
                domain="code",
                prompt=prompt,
                source=source,
                split=split_of(tid),
                tests=json.dumps({"test_code": test, "entry_point": entry}),
                solution=reference,
                entry_point=entry,
            )
        )
    return problems


def load_humanevalplus(path: str | Path) -> list[Problem]:
    """evalplus ``HumanEvalPlus.jsonl.gz`` (base + plus inputs, reference-compared)."""
    return _load_plus(path, "humanevalplus", lambda _tid: "test")


# ------------------------------------------------------------------------------------------ MBPP

_CALL_RE = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\s*\(")
_NOT_ENTRY = set(dir(builtins)) | {"math", "re"}


def mbpp_split(task_id: int) -> str:
    if 11 <= task_id <= 510:
        return "test"
    if 511 <= task_id <= 600:
        return "validation"
    return "train"


def mbpp_prompt(text: str, test_list: list[str]) -> str:
    """The MBPP paper's prompt: description plus "Your code should pass these tests:"."""
    return f"{text.strip()}\nYour code should pass these tests:\n\n" + "\n".join(test_list) + "\n"


def mbpp_entry_point(test_list: list[str], code: str | None = None) -> str | None:
    """The function the asserts test: the first one they call that ``code`` defines, else the first
    non-builtin (``assert int(f(5)) == 3`` gives ``f``), else the first call (MBPP 126 tests ``sum``)."""
    calls = [n for t in test_list for n in _CALL_RE.findall(t) if n not in ("assert", "not", "and", "or")]
    defined = set(re.findall(r"^\s*def\s+([A-Za-z_]\w*)", code or "", re.M))
    for pool in ([n for n in calls if n in defined], [n for n in calls if n not in _NOT_ENTRY], calls):
        if pool:
            return pool[0]
    return None


def load_mbpp(path: str | Path) -> list[Problem]:
    """MBPP: ``mbpp.jsonl`` (full, 974) or ``sanitized-mbpp.json`` (427)."""
    path = Path(path)
    rows = list(enumerate(json.loads(path.read_text()), 1)) if path.suffix == ".json" else list(iter_jsonl(path))
    problems = []
    for record, row in rows:
        tid = row.get("task_id")
        if not isinstance(tid, int):
            raise ProblemFormatError(str(path), record, "task_id", "missing or not an int")
        text = row.get("text", row.get("prompt"))
        if not isinstance(text, str):
            raise ProblemFormatError(str(path), record, "text", "missing or not a string")
        tests = _need(row, "test_list", path, record, list)
        setup = row.get("test_setup_code") or "\n".join(row.get("test_imports") or [])
        entry = mbpp_entry_point(tests, row.get("code"))
        problems.append(
            Problem(
                id=f"mbpp/{tid}",
                domain="code",
                prompt=mbpp_prompt(text, tests),
                source="mbpp",
                split=mbpp_split(tid),
                solution=row.get("code"),
                entry_point=entry,
                # setup (classes, fixtures, imports) is trusted: it runs in the sandbox's checker
                tests=json.dumps(
                    {"test_code": "\n".join(tests), "entry_point": entry, **({"setup_code": setup} if setup else {})}
                ),
            )
        )
    return problems


def load_mbppplus(path: str | Path) -> list[Problem]:
    """evalplus ``MbppPlus.jsonl.gz``: reference-compared base + plus inputs."""
    return _load_plus(path, "mbppplus", lambda tid: mbpp_split(int(tid.split("/")[-1])))

