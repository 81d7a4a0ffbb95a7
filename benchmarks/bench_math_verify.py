"""Benchmark restem's math verifier against Math-Verify 0.9.0 on the same labelled inputs.

Measures items/s in one process (one item at a time, as a reward function calls it) and for a
batch over 2 processes (restem: ``verify_batch(workers=2)``; Math-Verify: a 2-process
``multiprocessing.Pool``), and the agreement of each verifier with labels derived by construction
(``benchmarks/math_labelled_set.py``): accuracy, false positives (a non-equivalent answer called
correct) and false negatives. Prints a summary table, a per-family table (each rewrite family of the
labelled set: its label, its size, and how many items each verifier got wrong) and, as its last
line, one JSON object.

Run: ``python benchmarks/bench_math_verify.py [--quick]``. Needs ``pip install -e '.[bench]'``
(Math-Verify is a benchmark extra, never a runtime dependency); without it only restem is timed.
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

from restem_pipeline.mathverify import Status, verify, verify_batch  # noqa: E402
from restem_pipeline.mathverify.api import clear_caches  # noqa: E402
from restem_pipeline.mathverify.workers import default_pool  # noqa: E402


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
    results = [verify(it["prediction"], it["gold"]) for it in items]
    single = time.perf_counter() - start
    default_pool().close()
    verify_batch(["\\boxed{\\sqrt{2}}"] * 2, ["\\sqrt{2}+0"] * 2, workers=2)
    clear_caches()
    start = time.perf_counter()
    batch = verify_batch([it["prediction"] for it in items], [it["gold"] for it in items], workers=2)
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
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
