"""The Dagster webserver (what `dagster dev` serves) loads workspace.yaml and shows the unrolled lineage."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUERY = "{ assetNodes { assetKey { path } dependencyKeys { path } groupName } }"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_webserver_serves_the_asset_graph(tmp_path):
    port = _free_port()
    exps = tmp_path / "experiments"  # one experiment of two iterations, read when the server loads the code
    exps.mkdir()
    (exps / "restem.yaml").write_text("description: two iterations\niterations: 2\n")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "RESTEM_EXPERIMENTS": str(exps)}
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        nodes = None
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                nodes = _graphql(port, QUERY)["data"]["assetNodes"]
                if nodes:
                    break
            except (OSError, KeyError, TypeError):
                pass
            time.sleep(1)
        assert nodes, "the webserver did not serve the asset graph within 180 s"
        deps = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes}
        groups = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}
        assert deps["restem/iter_2/raw_samples"] == {"restem/iter_1/checkpoint", "problem_set"}
        assert deps["restem/iter_2/checkpoint"] == {"restem/iter_2/training_set", "base_model", "problem_set"}
        assert groups["restem/iter_2/eval_report"] == "restem_iter_2"
        assert "restem/iter_3/raw_samples" not in deps  # the experiment file is read when the server loads the code
        assert not any(k.startswith("rest/") for k in deps)  # only the experiments of that folder
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
