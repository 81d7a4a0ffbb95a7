"""Re-read the earlier `restem experiment paper` sections of benchmarks/RESULTS.md under today's verdict rule.

The sections written before 2026-12-07 gave verdicts by a z-like rule (reproduced when m - 2 se > 0), which at
n = 2 or 3 seeds is far too lenient (a 95% t interval needs 12.7 se at n = 2, 4.3 se at n = 3). Their
findings tables keep every seed's paired difference (rounded to 0.1 points), so the verdicts can be redone
from the file alone: per finding, the 95% Student's t interval (n - 1 degrees of freedom) of the per-seed
differences and the verdict ``restem_pipeline.evaluation.paper.verdict`` gives. All of those sections are
exploratory (their settings were chosen with test results in view). Prints a markdown table, then one JSON line.

    python studies/reread_verdicts.py [benchmarks/RESULTS.md]
"""

import json
import re
import sys
from pathlib import Path

from restem_pipeline.evaluation.paper import interval, verdict

SECTION = re.compile(r"<!-- paper:(?P<name>[^ ]+) -->(?P<body>.*?)<!-- /paper:(?P=name) -->", re.S)


def findings(body: str) -> list[tuple[str, list[float], str]]:
    """(finding, per-seed differences, the verdict written then) for each finding row that has them."""
    out = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not re.fullmatch(r"[+-]?\d+(\.\d+)?(, [+-]?\d+(\.\d+)?)+", cells[3]):
            continue
        out.append((cells[0], [float(x) for x in cells[3].split(", ")], cells[4].strip("*")))
    return out


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/RESULTS.md")
    rows, changed = [], 0
    print("| section | finding | n | mean | 95% t interval | then (m - 2 se) | now (t, n - 1 df) |")
    print("|---|---|---:|---:|---|---|---|")
    for m in SECTION.finditer(path.read_text()):
        for finding, diffs, then in findings(m["body"]):
            lo, hi = interval(diffs)
            now = verdict(diffs)
            changed += now != then
            mean = sum(diffs) / len(diffs)
            ci = f"[{lo:+.1f}, {hi:+.1f}]"
            print(f"| {m['name']} | {finding} | {len(diffs)} | {mean:+.1f} | {ci} | {then} | **{now}** |")
            rows.append({"section": m["name"], "finding": finding, "diffs": diffs, "then": then, "now": now,
                         "interval": [round(lo, 2), round(hi, 2)]})  # fmt: skip
    counts = {v: sum(r["now"] == v for r in rows) for v in ("reproduced", "not reproduced", "inconclusive")}
    print(json.dumps({"findings": len(rows), "verdicts_changed": changed, "now": counts, "rows": rows}))


if __name__ == "__main__":
    main()
