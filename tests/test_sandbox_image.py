"""Image tagging and the container's isolation settings, checked on the real engine."""

from __future__ import annotations

import socket

import docker
import pytest

from restem_pipeline.rewards.sandbox import SandboxPool, image
from restem_pipeline.rewards.sandbox.workers import LABEL, OWNER_LABEL, remove_stale_containers


def test_image_tag_hashes_the_runner_source(tmp_path, monkeypatch):
    before = image.image_tag()
    edited = tmp_path / "runner.py"
    edited.write_text(image.RUNNER_PATH.read_text() + "\n# changed\n")
    monkeypatch.setattr(image, "RUNNER_PATH", edited)
    assert image.image_tag() != before


def test_runner_edit_keeps_the_base_tag(tmp_path, monkeypatch):
    base = image.base_tag()
    edited = tmp_path / "runner.py"
    edited.write_text(image.RUNNER_PATH.read_text() + "\n# changed\n")
    monkeypatch.setattr(image, "RUNNER_PATH", edited)
    assert image.base_tag() == base  # only the fast second step rebuilds


def test_base_tag_hashes_the_package_list(monkeypatch):
    before = image.base_tag()
    monkeypatch.setattr(image, "PACKAGES", ("python3", "curl"))
    assert image.base_tag() != before


@pytest.mark.docker
def test_container_isolation_settings():
    client = docker.from_env()
    with SandboxPool(workers=1) as pool:
        (cid,) = pool.container_ids()
        info = client.api.inspect_container(cid)
    host, cfg = info["HostConfig"], info["Config"]
    assert host["NetworkMode"] == "none" and cfg["NetworkDisabled"] is True
    assert host["ReadonlyRootfs"] is True
    # root without any capability but these: start programs (65534) and checkers (65533), clean up
    assert host["CapDrop"] == ["ALL"]
    assert sorted(host["CapAdd"]) == ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] == 64 and host["Memory"] > 0 and host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 10**9 and host["IpcMode"] == "none" and host["AutoRemove"] is True
    assert host["Privileged"] is False and "/tmp" in host["Tmpfs"] and "noexec" in host["Tmpfs"]["/tmp"]
    assert cfg["User"] == "0:0" and cfg["StdinOnce"] is True
    assert cfg["Labels"][LABEL] == "1" and cfg["Image"] == image.image_ref()


@pytest.mark.docker
def test_stale_containers_are_removed_on_start():
    client = docker.from_env()
    stale = client.api.create_container(
        image.image_ref(),
        command=["sleep", "600"],
        labels={LABEL: "1", OWNER_LABEL: f"{socket.gethostname()}:999999999"},
    )
    client.api.start(stale["Id"])
    assert remove_stale_containers(client) >= 1
    assert client.api.containers(all=True, filters={"id": stale["Id"]}) == []


@pytest.mark.docker
def test_program_and_checker_run_as_two_unprivileged_users():
    """The program sees itself as uid 65534 with no capabilities, and the checker as uid 65533."""
    import json

    prog = (
        "import os\n"
        "def who(x):\n"
        "    caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')]\n"
        "    users = sorted({os.stat(f'/proc/{p}').st_uid for p in os.listdir('/proc') if p.isdigit()})\n"
        "    return [os.getuid(), os.getgid(), caps[0], users]\n"
    )
    tests = json.dumps(
        {"test_code": "assert who(0) == [65534, 65534, '0000000000000000', [0, 65533, 65534]]", "entry_point": "who"}
    )
    with SandboxPool(workers=1) as pool:
        (r,) = pool.run_programs([prog], [tests], timeout_s=5)
    assert r.status == "pass", r.detail
