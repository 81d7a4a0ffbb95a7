"""The Dagster UI in a real browser: the unrolled lineage is visible, and iteration 1 launches from a click.

Headless Chromium (the Debian package, ``/usr/bin/chromium``; ``make browser`` installs it) driven by
Playwright's Python client against the real webserver serving ``tests/tiny_workspace.yaml``. The
upstream assets (``problem_set``, ``base_model``) are materialized beforehand in the same instance, so
the UI launches only the five assets of group ``restem_iter_1`` for partition ``tiny``; the test then
watches the run page until it shows success. Screenshots go to ``test-artifacts/browser/``. The base
model is ``memorized_base`` (tests/conftest.py), so the run finds correct samples by construction and
cannot stop at the blocking ``training_set_not_empty`` by chance.

The temporary instance launches runs at once (``DefaultRunCoordinator``), since no daemon runs here;
``make dev`` (``dagster dev``) queues them and its daemon dequeues them. Not covered: the daemon,
sensors and schedules (tests/test_automation.py), any other UI page.
"""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from restem_pipeline.experiments import Experiment
from restem_pipeline.storage.tables import DataRoot

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("RESTEM_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = REPO / "test-artifacts" / "browser"
LOCATION = "tiny_defs.py"  # the code location name Dagster gives a python_file entry
CHAIN = ["raw_samples", "verified_samples", "training_set", "checkpoint", "eval_report"]
RUN_TIMEOUT_S = 600
INSTANCE_YAML = """\
run_coordinator:
  module: dagster.core.run_coordinator
  class: DefaultRunCoordinator
telemetry:
  enabled: false
"""

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


@pytest.fixture
def served(tmp_path, monkeypatch, memorized_base, tiny_problems):
    """A data root with ``problem_sets/tiny.jsonl``, an instance where partition ``tiny`` exists and its
    upstream assets are materialized, and the webserver on that instance: ``(port, home, root, log)``."""
    from tiny_defs import tiny_resources

    from assets.definitions import build_definitions

    home, root, log = tmp_path / "dagster_home", tmp_path / "data", tmp_path / "webserver.log"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    (root / "problem_sets").mkdir(parents=True)
    with open(root / "problem_sets" / "tiny.jsonl", "w") as f:
        for p in tiny_problems:
            f.write(json.dumps(p.to_row()) + "\n")
    env = {"DAGSTER_HOME": str(home), "RESTEM_DATA_ROOT": str(root), "RESTEM_TINY_BASE": str(memorized_base)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    defs = build_definitions([Experiment("restem", iterations=2)], resources=tiny_resources())
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("problem_set", ["tiny"])
        upstream = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance,
            partition_key="tiny",
            asset_selection=[dg.AssetKey("problem_set"), dg.AssetKey("base_model")],
        )
        assert upstream.success

    port = _free_port()
    cmd = [sys.executable, "-m", "dagster_webserver", "-w", "tests/tiny_workspace.yaml", "-h", "127.0.0.1"]
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [*cmd, "-p", str(port)],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the code server and run workers are in it
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"the webserver exited:\n{_log_tail(log)}"
            try:
                if _graphql(port, "{ assetNodes { id } }")["data"]["assetNodes"]:
                    break
            except (OSError, KeyError, TypeError):
                pass
            assert time.monotonic() < deadline, f"the webserver did not serve assets within 180 s:\n{_log_tail(log)}"
            time.sleep(1)
        yield port, home, root, log
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        except ProcessLookupError:
            pass


@pytest.fixture
def chromium() -> Path:
    """Checked before the slow setup: CI installs Chromium, so a missing one is a failure, not a skip."""
    assert CHROMIUM.exists(), (
        f"Chromium is not installed at {CHROMIUM}: run `make browser` (scripts/setup_browser.sh, as root) "
        "or set RESTEM_CHROMIUM to a Chromium binary"
    )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        pytest.fail(f"Playwright's Python client is missing ({e}): pip install -e '.[dev]'")
    return CHROMIUM


@pytest.fixture
def page(chromium):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            pg = browser.new_page(viewport={"width": 1600, "height": 1000})
            pg.set_default_timeout(30_000)
            # Dagster shows "Join the Dagster community" once per instance, on whichever page comes first
            community = pg.get_by_role("dialog").filter(has_text="Join the Dagster community")
            pg.add_locator_handler(community, lambda d: d.get_by_role("button", name="Skip").click())
            yield pg
        finally:
            browser.close()


def _dismiss_community_modal(pg, wait_ms: int = 8000) -> None:
    """Skip the first-visit modal if it shows within ``wait_ms``; nothing to do when it never shows."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    dialog = pg.get_by_role("dialog").filter(has_text="Join the Dagster community")
    try:
        dialog.wait_for(state="visible", timeout=wait_ms)
    except PlaywrightTimeout:  # absent: this instance has already seen it
        return
    # The page's locator handler may click Skip first (it runs before any action, this click's own
    # included); then the button is gone and this click has nothing to wait for.
    with contextlib.suppress(PlaywrightTimeout):
        dialog.get_by_role("button", name="Skip").click(timeout=5000)
    dialog.wait_for(state="hidden")


def _shot(pg, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    pg.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def _lineage_links(pg, direction: str) -> set[str]:
    """Hrefs listed under "Upstream assets" / "Downstream assets" on an asset's overview page."""
    column = pg.get_by_text(f"{direction} assets", exact=True).locator("xpath=..")
    column.locator("a").first.wait_for()
    return {a.get_attribute("href") for a in column.locator("a").all()}


def test_lineage_is_visible_and_iteration_1_launches_from_the_ui(chromium, served, page):
    port, home, root, log = served
    base = f"http://127.0.0.1:{port}"
    pg = page

    # the global lineage: one group per iteration of the experiment
    pg.goto(f"{base}/asset-groups")
    _dismiss_community_modal(pg)
    for group in ("inputs", "baselines", "restem_iter_1", "restem_iter_2"):
        pg.get_by_text(group, exact=True).first.wait_for()
    _shot(pg, "01_global_lineage")

    # each stage of iteration 1 names the next as its downstream; iteration 2 samples from checkpoint 1
    for up, down in zip(CHAIN, CHAIN[1:], strict=False):
        pg.goto(f"{base}/assets/restem/iter_1/{up}")
        assert f"/assets/restem/iter_1/{down}" in _lineage_links(pg, "Downstream"), (up, down)
        if up == "training_set":
            _shot(pg, "02_training_set_lineage")
    pg.goto(f"{base}/assets/restem/iter_1/checkpoint")
    assert {"/assets/restem/iter_1/training_set", "/assets/base_model"} <= _lineage_links(pg, "Upstream")
    pg.goto(f"{base}/assets/restem/iter_2/raw_samples")
    assert "/assets/restem/iter_1/checkpoint" in _lineage_links(pg, "Upstream")

    # the group page draws the five stages of iteration 1 as one graph
    pg.goto(f"{base}/locations/{LOCATION}/asset-groups/restem_iter_1")
    for name in CHAIN:
        pg.get_by_text(name, exact=True).first.wait_for()
    _shot(pg, "03_iteration_1_graph")

    # launch: Materialize all -> partition `tiny` -> Launch 1 run
    pg.get_by_role("button", name="Materialize all…").click()
    launch = pg.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    launch.get_by_text("Launch runs to materialize 5 assets").wait_for()
    launch.get_by_text("Select a partition or create one").click()
    picker = pg.get_by_role("dialog").filter(has_text="Select all").filter(has_not_text="Launch runs")
    picker.get_by_role("menuitem").filter(has=pg.get_by_text("tiny", exact=True)).click()
    pg.keyboard.press("Escape")  # closes the partition picker, not the launch dialog
    picker.wait_for(state="hidden")
    button = launch.get_by_role("button", name="Launch 1 run", exact=True)
    button.wait_for()
    _shot(pg, "04_launch_dialog")
    button.click()

    # the toast links to the run; its page updates itself until the run ends
    pg.get_by_role("link", name="View", exact=True).click()
    pg.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = pg.url.rstrip("/").split("/runs/")[1].split("?")[0]
    status = None
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while status is None:
        for word in ("Success", "Failure", "Canceled"):
            if pg.get_by_text(word, exact=True).first.is_visible():
                status = word
        assert status or time.monotonic() < deadline, f"run {run_id} not finished in {RUN_TIMEOUT_S} s"
        pg.wait_for_timeout(2000)
    _shot(pg, "05_run_page")
    assert status == "Success", f"run {run_id} ended {status}; webserver log:\n{_log_tail(log)}"

    # the same facts from the webserver and the instance
    run = _graphql(
        port,
        "query($id: ID!) { runOrError(runId: $id) { ... on Run { status tags { key value } } } }",
        {"id": run_id},
    )["data"]["runOrError"]
    assert run["status"] == "SUCCESS"
    assert {"key": "dagster/partition", "value": "tiny"} in run["tags"]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for name in CHAIN:
            mats = instance.fetch_materializations(dg.AssetKey(["restem", "iter_1", name]), limit=10).records
            assert [m.run_id for m in mats] == [run_id], name
            assert mats[0].partition_key == "tiny"
        assert not instance.fetch_materializations(dg.AssetKey(["restem", "iter_2", "raw_samples"]), limit=1).records
    data = DataRoot(root)
    assert data.of("restem").read_table("training_set", "tiny", "iter_1").height > 0
    assert data.of("restem").report_path("tiny", "iter_1", ".json").exists()

    pg.goto(f"{base}/locations/{LOCATION}/asset-groups/restem_iter_1")
    pg.get_by_text("eval_report", exact=True).first.wait_for()
    pg.wait_for_timeout(2000)
    _shot(pg, "06_iteration_1_materialized")
