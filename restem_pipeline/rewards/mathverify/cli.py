"""``restem verify math IN.jsonl [-o OUT.jsonl]``: grade your own model outputs from the shell.

Each input line is a JSON object with ``prediction`` (a full model output or a bare answer) and
``gold`` (a bare answer, a MATH solution, or a GSM8K answer; ``--gold-format auto`` picks per line:
``####`` means GSM8K, a ``\\boxed{}`` means a MATH solution, anything else a bare answer) and,
optionally, ``problem`` (the problem's text: an answer restating its expression is incorrect). Each line
is written back with ``status``, ``reason``, ``predicted_answer``, ``predicted_answers`` and
``gold_answer`` added; a per-status summary goes to stderr. Bad input (invalid JSON, a missing or
non-text field) stops before anything is graded, with an error naming the file, line and field.

Does not cover: the ``restem`` entry point itself (``restem_pipeline.cli`` registers this command).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from restem_pipeline.rewards.mathverify.api import Status, verify_batch

CHUNK = 512


class InputError(ValueError):
    """A line of the input file is not a valid record."""


def add_parser(verify_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``math`` under ``restem verify``."""
    p = verify_subparsers.add_parser(
        "math",
        help="grade math answers in a JSONL file (fields: prediction, gold)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("input", type=Path, help="JSON lines with 'prediction' and 'gold'")
    p.add_argument("-o", "--output", type=Path, default=None, help="output JSONL (default: stdout)")
    p.add_argument(
        "--gold-format",
        choices=["auto", "answer", "math_solution", "gsm8k"],
        default="auto",
        help="how to read 'gold' (default: auto, per line)",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per item for symbolic checks")
    p.add_argument("--workers", type=int, default=1, help="worker processes for symbolic checks")
    p.add_argument(
        "--last-number-fallback",
        action="store_true",
        help="take the last number of an output that has no marked final answer",
    )
    p.set_defaults(func=run_verify_math)
    return p


def gold_format_of(gold: str) -> str:
    """The gold format ``auto`` picks for one gold text."""
    if "####" in gold:
        return "gsm8k"
    if "\\boxed" in gold or "\\fbox" in gold:
        return "math_solution"
    return "answer"


def records_of(path: Path) -> list[dict]:
    """The input records; raises ``InputError`` naming the file, line and field at the first bad one."""
    records = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            for field in ("prediction", "gold"):
                if field not in record:
                    raise InputError(f"{path}:{lineno}: missing field {field!r}")
                value = record[field]
                if isinstance(value, bool) or not isinstance(value, str | int | float):
                    raise InputError(f"{path}:{lineno}: field {field!r} must be a string, got {type(value).__name__}")
            records.append(record)
    return records


def run_verify_math(args: argparse.Namespace) -> int:
    """Grade the file; exit code 0 on success, 2 on bad input."""
    try:
        records = records_of(args.input)
    except (InputError, OSError, UnicodeDecodeError) as err:
        print(f"restem verify math: error: {err}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    counts: Counter[str] = Counter()
    out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    try:
        with tqdm(total=len(records), file=sys.stderr, unit="item", disable=len(records) < 1000) as bar:
            for start in range(0, len(records), CHUNK):
                chunk = records[start : start + CHUNK]
                for record, result in zip(chunk, _results_of(chunk, args), strict=True):
                    counts[result.status.value] += 1
                    record.update(
                        status=result.status.value,
                        reason=result.reason,
                        predicted_answer=result.predicted,
                        predicted_answers=list(result.candidates),
                        gold_answer=result.gold,
                    )
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                bar.update(len(chunk))
    finally:
        if out is not sys.stdout:
            out.close()
    total = len(records)
    summary = ", ".join(f"{s.value} {counts[s.value]}" for s in Status)
    accuracy = counts[Status.CORRECT.value] / total if total else 0.0
    print(f"{args.input}: {total} items, accuracy {accuracy:.2%} ({summary})", file=sys.stderr)
    return 0


def _results_of(chunk: list[dict], args: argparse.Namespace):
    preds = [str(r["prediction"]) for r in chunk]
    golds = [str(r["gold"]) for r in chunk]
    problems = [r["problem"] if isinstance(r.get("problem"), str) else None for r in chunk]
    formats = [args.gold_format if args.gold_format != "auto" else gold_format_of(g) for g in golds]
    results = [None] * len(chunk)
    for fmt in sorted(set(formats)):
        idx = [i for i, f in enumerate(formats) if f == fmt]
        graded = verify_batch(
            [preds[i] for i in idx],
            [golds[i] for i in idx],
            problems=[problems[i] for i in idx],
            gold_format=fmt,
            timeout_s=args.timeout,
            workers=args.workers,
            last_number_fallback=args.last_number_fallback,
        )
        for i, r in zip(idx, graded, strict=True):
            results[i] = r
    return results
