"""Benchmark restem's math verifier against Math-Verify 0.9.0 on the same labelled inputs.

Two sets. (1) restem's labelled set (``benchmarks/math_labelled_set.py``, labels derived by
construction, each item with its problem text): items/s in one process (one item at a time, as a
reward function calls it) and for a batch over 2 processes (restem: ``verify_batch(workers=2)``;
Math-Verify: a 2-process ``multiprocessing.Pool``), and agreement with the labels: accuracy, false
positives (a non-equivalent answer called correct) and false negatives, overall and per rewrite
family. (2) Cases written by others: Math-Verify's own test rows (``benchmarks/math_public_cases.jsonl``,
269 (gold, prediction, expected) rows from huggingface/Math-Verify's tests, many of them real model
outputs), graded by restem (golds read like predictions: a boxed gold by ``math_solution``, else the
answer restem's extraction finds in it) and by Math-Verify called as its tests call it; figures for
all rows and for the rows with Math-Verify's default settings. Labels there are Math-Verify's: where
they encode its own conventions (an approximation of an exact gold, rounding settings, a relation
with doubled backslashes), restem's "misses" are disagreements of policy, listed with
``--show-errors`` (and documented, with reasons, in ``tests/test_mathverify_public.py``).

(3) Real texts without any answer marker: the 5,000 MATH test solutions with their boxes unwrapped
(``\\boxed{X}`` becomes ``X``) and the 1,319 GSM8K test solutions without their ``#### N`` line and
calculator annotations, graded against their own gold (how many answers the final-sentence rule
finds, and reads right) and against another problem's gold of a different value (every "correct"
there is a false positive).

Prints the tables and, as its last line, one JSON object. Run: ``python benchmarks/bench_math_verify.py
[--quick] [--show-errors]``. Needs ``pip install -e '.[bench]'`` (Math-Verify is a benchmark extra,
never a runtime dependency); without it only restem is measured.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from math_labelled_set import labelled_set  # noqa: E402

from restem_pipeline.rewards.mathverify import Status, extract_answer, verify, verify_batch  # noqa: E402
from restem_pipeline.rewards.mathverify.api import clear_caches  # noqa: E402
from restem_pipeline.rewards.mathverify.workers import default_pool  # noqa: E402


def _mv_judge(item: tuple[str, str]) -> bool:
    from math_verify import parse
    from math_verify import verify as mv_verify

    prediction, gold = item
    return bool(mv_verify(parse("$" + gold + "$"), parse(prediction)))


def _agreement(judged: list[bool], items: list[dict]) -> dict:
    fp = sum(j and not it["equivalent"] for j, it in zip(judged, items, strict=True))
    fn = sum(not j and it["equivalent"] for j, it in zip(judged, items, strict=True))
    return {"accuracy": round(1 - (fp + fn) / len(items), 4), "false_positives": fp, "false_negatives": fn}


def bench_restem(items: list[dict]) -> dict:
    verify("\\boxed{\\sqrt{2}}", "\\sqrt{2}+0")  # start the symbolic worker outside the timing
    clear_caches()
    start = time.perf_counter()
    results = [verify(it["prediction"], it["gold"], problem=it["problem"]) for it in items]
    single = time.perf_counter() - start
    default_pool().close()
    verify_batch(["\\boxed{\\sqrt{2}}"] * 2, ["\\sqrt{2}+0"] * 2, workers=2)
    clear_caches()
    start = time.perf_counter()
    batch = verify_batch(
        [it["prediction"] for it in items],
        [it["gold"] for it in items],
        workers=2,
        problems=[it["problem"] for it in items],
    )
    batched = time.perf_counter() - start
    assert [r.status for r in batch] == [r.status for r in results]
    judged = [r.status is Status.CORRECT for r in results]
    statuses = {s.value: sum(r.status is s for r in results) for s in Status}
    return {
        "items_per_s": round(len(items) / single, 1),
        "batch_items_per_s": round(len(items) / batched, 1),
        **_agreement(judged, items),
        "statuses": statuses,
        "examples": _errors(judged, items),
        "judged": judged,
    }


def bench_math_verify(items: list[dict]) -> dict | None:
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return None
    pairs = [(it["prediction"], it["gold"]) for it in items]
    _mv_judge(pairs[0])
    start = time.perf_counter()
    judged = [_mv_judge(p) for p in pairs]
    single = time.perf_counter() - start
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_mv_judge, pairs[:4])
        start = time.perf_counter()
        batch = pool.map(_mv_judge, pairs, chunksize=16)
        batched = time.perf_counter() - start
    assert batch == judged
    return {
        "items_per_s": round(len(items) / single, 1),
        "batch_items_per_s": round(len(items) / batched, 1),
        **_agreement(judged, items),
        "examples": _errors(judged, items),
        "judged": judged,
    }


def _families(items: list[dict], restem: dict, mv: dict | None) -> dict[str, dict]:
    """Per rewrite family: label, size, and the items each verifier got wrong."""
    out: dict[str, dict] = {}
    for i, it in enumerate(items):
        row = out.setdefault(
            it["family"], {"equivalent": it["equivalent"], "n": 0, "restem_wrong": 0, "mv_wrong": None}
        )
        row["n"] += 1
        row["restem_wrong"] += restem["judged"][i] != it["equivalent"]
        if mv is not None:
            row["mv_wrong"] = (row["mv_wrong"] or 0) + (mv["judged"][i] != it["equivalent"])
    return dict(sorted(out.items(), key=lambda kv: (not kv[1]["equivalent"], kv[0])))


def _print_families(families: dict[str, dict]) -> None:
    header = f"{'family':<20}{'label':>8}{'n':>6}{'restem wrong':>14}{'math-verify wrong':>19}"
    print()
    print(header)
    print("-" * len(header))
    for name, row in families.items():
        mv_wrong = "-" if row["mv_wrong"] is None else row["mv_wrong"]
        label = "equiv" if row["equivalent"] else "differ"
        print(f"{name:<20}{label:>8}{row['n']:>6}{row['restem_wrong']:>14}{mv_wrong:>19}")


# -- cases written by others: Math-Verify's own test rows -----------------------------------------

PUBLIC_CASES = Path(__file__).resolve().parent / "math_public_cases.jsonl"
_DEFAULTS = {"precision": 6, "strict": True, "allow_set_relation_comp": False}


def public_cases() -> list[dict]:
    """The rows of ``math_public_cases.jsonl`` (comment lines skipped), each marked ``default_setting``."""
    rows = []
    with PUBLIC_CASES.open(encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                row = json.loads(line)
                row["default_setting"] = all(row.get(k, v) == v for k, v in _DEFAULTS.items())
                rows.append(row)
    return rows


def _restem_gold(text: str) -> tuple[str, str]:
    """(gold, gold_format) for a gold text written for Math-Verify (``$9$``, a whole solution)."""
    if "\\boxed" in text or "\\fbox" in text:
        return text, "math_solution"
    return extract_answer(text) or text, "answer"


def public_restem(rows: list[dict]) -> list[tuple[bool, str, str | None, str | None]]:
    """(said correct, status, predicted, gold) per row; golds of several formats, one call each."""
    out = []
    for row in rows:
        gold, fmt = _restem_gold(row["gold"])
        r = verify(row["pred"], gold, gold_format=fmt)  # type: ignore[arg-type]
        out.append((r.status is Status.CORRECT, r.status.value, r.predicted, r.gold))
    return out


def _mv_case(row: dict) -> bool:
    """Math-Verify on one row, called the way its own test calls it."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse
    from math_verify import verify as mv_verify

    if row["call"] == "parse_verify":
        return bool(mv_verify(parse(row["gold"]), parse(row["pred"])))
    targets = [
        LatexExtractionConfig(boxed_match_priority=0) if m == "latex" else ExprExtractionConfig()
        for m in row["match_types"]
    ]
    return bool(
        mv_verify(
            parse(row["gold"], targets),
            parse(row["pred"], targets),
            float_rounding=row["precision"],
            strict=row["strict"],
            allow_set_relation_comp=row["allow_set_relation_comp"],
        )
    )


def _counts(judged: list[bool], rows: list[dict]) -> dict:
    fp = sum(j and not r["expected"] for j, r in zip(judged, rows, strict=True))
    fn = sum(not j and r["expected"] for j, r in zip(judged, rows, strict=True))
    return {
        "n": len(rows),
        "accuracy": round(1 - (fp + fn) / len(rows), 4),
        "false_positives": fp,
        "false_negatives": fn,
    }


def bench_public(show_errors: bool) -> dict:
    rows = public_cases()
    restem = public_restem(rows)
    judged = {"restem": [r[0] for r in restem]}
    try:
        import math_verify  # noqa: F401

        judged["math_verify"] = [_mv_case(row) for row in rows]
    except ImportError:
        pass
    default = [i for i, row in enumerate(rows) if row["default_setting"]]
    figures: dict = {"rows": len(rows), "equivalent": sum(r["expected"] for r in rows), "default_setting": len(default)}
    for name, said in judged.items():
        figures[name] = {
            "all": _counts(said, rows),
            "default_setting": _counts([said[i] for i in default], [rows[i] for i in default]),
        }
    statuses: dict[str, int] = {}
    for _, status, _, _ in restem:
        statuses[status] = statuses.get(status, 0) + 1
    figures["restem"]["statuses"] = statuses
    by_test: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        entry = by_test.setdefault(row["source"], [0, 0, 0])
        entry[0] += 1
        entry[1] += judged["restem"][i] != bool(row["expected"])
        if "math_verify" in judged:
            entry[2] += judged["math_verify"][i] != bool(row["expected"])
    figures["by_test"] = by_test
    if show_errors:
        for i, row in enumerate(rows):
            if judged["restem"][i] != bool(row["expected"]):
                kind = "FP" if judged["restem"][i] else "FN"
                _, status, predicted, gold = restem[i]
                print(
                    f"{kind} {row['source']}: pred {row['pred'][-70:]!r} gold {row['gold'][-50:]!r} -> {status}, "
                    f"read {predicted and predicted[:50]!r} vs {gold and gold[:50]!r}"
                )
    return figures


def _print_public(figures: dict) -> None:
    print()
    print(
        f"Math-Verify's own test rows ({figures['rows']} rows, {figures['equivalent']} labelled equivalent; "
        f"{figures['default_setting']} with default settings)"
    )
    header = f"{'verifier':<22}{'rows':>14}{'n':>6}{'accuracy':>10}{'FP':>5}{'FN':>5}"
    print(header)
    print("-" * len(header))
    for name, label in (("restem", "restem"), ("math_verify", "math-verify 0.9.0")):
        if name not in figures:
            print(f"{label:<22}  (not installed: pip install -e '.[bench]')")
            continue
        for subset in ("all", "default_setting"):
            row = figures[name][subset]
            print(
                f"{label:<22}{subset:>14}{row['n']:>6}{row['accuracy']:>10.2%}"
                f"{row['false_positives']:>5}{row['false_negatives']:>5}"
            )
    print(f"restem statuses: {figures['restem']['statuses']}")
    print()
    header = f"{'test (source)':<58}{'n':>5}{'restem wrong':>14}{'math-verify wrong':>19}"
    print(header)
    print("-" * len(header))
    for source, (n, restem_wrong, mv_wrong) in figures["by_test"].items():
        mv = mv_wrong if "math_verify" in figures else "-"
        print(f"{source:<58}{n:>5}{restem_wrong:>14}{mv:>19}")


# -- real texts without any answer marker -----------------------------------------------------------

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _unboxed(text: str) -> str:
    """A MATH solution with each ``\\boxed{X}`` replaced by ``X`` (its final answer left in prose)."""
    from restem_pipeline.rewards.mathverify.extraction import _boxed_spans

    out, pos = [], 0
    for start, end, content in _boxed_spans(text):
        if start >= pos:
            out += [text[pos:start], content]
            pos = end
    return "".join([*out, text[pos:]])


def unmarked_texts() -> dict[str, tuple[list[str], list[str], list[str]]]:
    """(texts, golds, wrong golds) per data set; a wrong gold is the next problem's of another value."""
    import re

    from restem_pipeline.rewards.mathverify import parse_gold

    with (DATA / "math" / "test.jsonl").open() as f:
        math_rows = [json.loads(line) for line in f]
    texts = [_unboxed(r["solution"]) for r in math_rows]
    golds = [parse_gold(r["solution"], "math_solution") for r in math_rows]
    wrong = []
    for i, gold in enumerate(golds):
        j = (i + 1) % len(golds)
        while verify(f"\\boxed{{{gold}}}", golds[j]).status is Status.CORRECT:
            j = (j + 1) % len(golds)
        wrong.append(golds[j])
    with (DATA / "gsm8k" / "test.jsonl").open() as f:
        gsm_rows = [json.loads(line) for line in f]
    gsm_texts = [re.sub(r"<<[^>]*>>", "", r["answer"].rpartition("####")[0]).strip() for r in gsm_rows]
    gsm_golds = [r["answer"].rpartition("####")[2].strip().replace(",", "") for r in gsm_rows]
    gsm_wrong = [str(int(g) + 1) for g in gsm_golds]
    return {"math_unboxed": (texts, golds, wrong), "gsm8k_no_marker": (gsm_texts, gsm_golds, gsm_wrong)}


def bench_unmarked() -> dict | None:
    if not (DATA / "math" / "test.jsonl").exists():
        return None
    figures = {}
    for name, (texts, golds, wrong) in unmarked_texts().items():
        right = verify_batch(texts, golds, workers=2)
        other = verify_batch(texts, wrong, workers=2)
        figures[name] = {
            "n": len(texts),
            "against_gold": {s.value: sum(r.status is s for r in right) for s in Status},
            "false_positives_against_another_gold": sum(r.status is Status.CORRECT for r in other),
        }
    return figures


def _print_unmarked(figures: dict) -> None:
    print()
    print("Real texts without any answer marker (graded against their gold / another problem's gold)")
    for name, row in figures.items():
        print(f"{name:<18}{row['n']:>6}  {row['against_gold']}  FP: {row['false_positives_against_another_gold']}")


def _errors(judged: list[bool], items: list[dict], n: int = 5) -> dict:
    fps = [(it["answer"], it["gold"]) for j, it in zip(judged, items, strict=True) if j and not it["equivalent"]]
    fns = [(it["answer"], it["gold"]) for j, it in zip(judged, items, strict=True) if not j and it["equivalent"]]
    return {"false_positives": fps[:n], "false_negatives": fns[:n]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small subset (about 500 items)")
    parser.add_argument("--show-errors", action="store_true", help="print examples of FP/FN")
    args = parser.parse_args()
    items = labelled_set(seed=0, limit_gsm8k=100 if args.quick else 600)
    if args.quick:
        items = items[::3]
    restem = bench_restem(items)
    mv = bench_math_verify(items)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"{len(items)} labelled items ({sum(it['equivalent'] for it in items)} equivalent); {machine}")
    header = f"{'verifier':<22}{'items/s (1 proc)':>18}{'items/s (batch, 2 proc)':>25}"
    header += f"{'accuracy':>10}{'FP':>5}{'FN':>5}"
    print(header)
    print("-" * len(header))
    for name, row in (("restem", restem), ("math-verify 0.9.0", mv)):
        if row is None:
            print(f"{name:<22}  (not installed: pip install -e '.[bench]')")
            continue
        print(
            f"{name:<22}{row['items_per_s']:>18}{row['batch_items_per_s']:>25}"
            f"{row['accuracy']:>10.2%}{row['false_positives']:>5}{row['false_negatives']:>5}"
        )
    figures = {
        "items": len(items),
        "equivalent": sum(it["equivalent"] for it in items),
        "machine": machine,
        "restem": {k: v for k, v in restem.items() if k not in ("examples", "judged")},
        "math_verify": None if mv is None else {k: v for k, v in mv.items() if k not in ("examples", "judged")},
    }
    if mv is not None:
        figures["speedup_1proc"] = round(restem["items_per_s"] / mv["items_per_s"], 1)
        figures["speedup_batch"] = round(restem["batch_items_per_s"] / mv["batch_items_per_s"], 1)
        print(f"speed-up: {figures['speedup_1proc']}x (1 process), {figures['speedup_batch']}x (batch)")
    families = _families(items, restem, mv)
    _print_families(families)
    figures["families"] = {name: [row["n"], row["restem_wrong"], row["mv_wrong"]] for name, row in families.items()}
    if args.show_errors:
        print(json.dumps({"restem": restem["examples"], "math_verify": mv and mv["examples"]}, indent=1))
    public = bench_public(args.show_errors)
    _print_public(public)
    figures["public_cases"] = public
    unmarked = bench_unmarked()
    if unmarked is not None:
        _print_unmarked(unmarked)
        figures["unmarked_real_texts"] = unmarked
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
