"""MkDocs hook: result tables rendered from committed run records, never typed by hand.

A page writes ``<!-- record: PATH -->`` (PATH relative to the repository root, a JSON record that a
restem command wrote) and the hook replaces the marker by that record's table at build time:

- ``restem demo --json`` records (``docs/records/demo*.json``): the demo's comparison table, by the same
  function that prints it (``assets.demo.comparison_markdown``);
- ``restem experiment paper --json`` records (``docs/records/paper_*.json``): the report's markdown
  (``restem_pipeline.evaluation.paper.report_markdown``);
- a benchmark's last JSON line (``benchmarks/records/bench_*.json``): every figure as a two-column table.

A marker naming a missing file or a record of no known kind fails the build (``mkdocs build --strict``
runs in CI). Not covered: plots (pages link the PNG files the commands write).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"<!-- record: (?P<path>[\w./-]+\.json) -->")


def flatten(value: object, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, leaf) pairs of a JSON value, in the record's own order."""
    if isinstance(value, dict):
        return [pair for key, v in value.items() for pair in flatten(v, f"{prefix}{key}.")]
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return [pair for i, v in enumerate(value) for pair in flatten(v, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), value)]


def benchmark_table(record: dict) -> str:
    rows = ["| figure | value |", "|---|---|"]
    for key, value in flatten(record):
        shown = json.dumps(value) if isinstance(value, list | bool) or value is None else str(value)
        rows.append(f"| `{key}` | {shown.replace('|', '/')} |")
    return "\n".join(rows)


def render(path: str) -> str:
    """The markdown table of the record at ``path`` (relative to the repository root)."""
    file = REPO / path
    if not file.is_file():
        raise FileNotFoundError(f"record marker names {path}, which does not exist")
    record = json.loads(file.read_text())
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if "stages" in record and "experiments" in record:
        from assets.demo import comparison_markdown

        return comparison_markdown(record)
    if "report" in record and "findings" in record["report"]:
        from restem_pipeline.evaluation.paper import report_markdown

        return report_markdown(record["report"], record.get("title", Path(path).stem)).split("\n", 2)[2]
    if Path(path).name.startswith("bench_"):
        return benchmark_table(record)
    raise ValueError(f"{path}: not a demo, paper or benchmark record")


def on_page_markdown(markdown: str, **_: object) -> str:
    return MARKER.sub(lambda m: render(m["path"]), markdown)
