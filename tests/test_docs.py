"""The README and the documentation site tell the truth: tables from run records, links that resolve.

- The README's demo table is ``assets.demo.comparison_markdown`` of the committed demo record
  (``docs/records/demo.json``), and that record was made with today's defaults: a changed default makes
  it stale, and this test says so until the demo is run again and the record replaced.
- Every ``<!-- record: PATH -->`` marker of the docs renders (the MkDocs hook's own function).
- ``mkdocs build --strict`` passes: no broken page, link or snippet.
- The README stays short (the rest lives on the site).
"""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from assets.cli import resolved_settings
from assets.demo import comparison_markdown, demo_sampler, demo_settings

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "docs" / "records" / "demo.json"
BEGIN, END = "<!-- demo-table: docs/records/demo.json -->", "<!-- /demo-table -->"


def _hook():
    spec = importlib.util.spec_from_file_location("records_hook", REPO / "docs" / "hooks" / "records.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_is_the_demo_record():
    readme = (REPO / "README.md").read_text()
    assert BEGIN in readme and END in readme, "the README's demo table must sit between its markers"
    block = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert block == comparison_markdown(json.loads(RECORD.read_text())).strip()


def test_demo_record_was_made_with_todays_defaults():
    record = json.loads(RECORD.read_text())
    settings = demo_settings("embedded", quick=False)
    today = resolved_settings(settings["experiment"], settings["trainer"], {}, demo_sampler())
    assert record["model"] == "embedded" and not record["quick"] and record["experiments"] == {"restem": 3}
    stale = {
        f"{part}.{key}": (record["settings"][part].get(key), value)
        for part in ("experiment", "trainer", "distill", "sampler")
        for key, value in today[part].items()
        if record["settings"][part].get(key) != value and (part, key) != ("sampler", "threads")  # the machine's
    }
    assert not stale, f"docs/records/demo.json is stale (recorded, today): {stale}; run `make demo` and replace it"


def test_every_record_marker_renders():
    hook = _hook()
    pages = sorted((REPO / "docs").glob("*.md"))
    markers = [m["path"] for page in pages for m in hook.MARKER.finditer(page.read_text())]
    assert "docs/records/demo.json" in markers
    for path in markers:
        assert "|" in hook.render(path), path


def test_a_marker_naming_a_missing_record_fails(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        _hook().render("docs/records/nope.json")


def test_benchmark_records_flatten_by_hand():
    rows = _hook().flatten({"a": {"b": 1, "c": [1, 2]}, "d": [{"e": "x"}]})
    assert rows == [("a.b", 1), ("a.c", [1, 2]), ("d.0.e", "x")]


def test_readme_is_short_and_links_the_site():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    assert re.search(r"^make demo\b", readme, re.M) and re.search(r"^make test\b", readme, re.M)


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "demo" / "index.html").is_file()


def test_the_one_thread_demo_record_equals_the_two_thread_one():
    """docs/demo.md says so: the same base (pinned pretraining) and, at one thread, the same figures."""
    two = json.loads(RECORD.read_text())
    one = json.loads((REPO / "docs" / "records" / "demo_1thread.json").read_text())
    assert (two["settings"]["sampler"]["threads"], one["settings"]["sampler"]["threads"]) == (2, 1)
    assert one["stages"] == two["stages"]


def test_readme_headline_quotes_the_confirmatory_interval():
    """Each headline sentence in the README is its confirmatory record's ReST-EM-vs-base finding, nothing stronger.

    A sentence sits between ``<!-- headline: RECORD -->`` and ``<!-- /headline -->``; the embedded default's
    record is always among them."""
    readme = (REPO / "README.md").read_text()
    marked = re.findall(r"<!-- headline: (\S+) -->(.*?)<!-- /headline -->", readme, flags=re.S)
    assert "docs/records/paper_embedded_confirmatory_headline.json" in {path for path, _ in marked}
    for path, sentence in marked:
        record = json.loads((REPO / path).read_text())
        assert record["label"] == "confirmatory" and len(record["seeds"]) >= 3, path
        finding = next(f for f in record["report"]["findings"] if f["key"] == "restem_vs_base")
        lo, hi = (100 * x for x in finding["ci"])
        assert sentence == (
            f"ReST-EM's test pass@1 gain over the base is {100 * finding['mean']:+.1f} points, 95% t interval "
            f"[{lo:+.1f}, {hi:+.1f}]: {finding['verdict']}"
        ), path
