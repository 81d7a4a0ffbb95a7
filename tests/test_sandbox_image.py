"""Image tagging and the container's isolation settings, checked on the real engine."""

from __future__ import annotations

import socket

import docker
import pytest

from restem_pipeline.sandbox import SandboxPool, image
from restem_pipeline.sandbox.workers import LABEL, OWNER_LABEL, remove_stale_containers


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
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] == 64 and host["Memory"] > 0 and host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 10**9 and host["IpcMode"] == "none" and host["AutoRemove"] is True
    assert host["Privileged"] is False and "/tmp" in host["Tmpfs"] and "noexec" in host["Tmpfs"]["/tmp"]
    assert cfg["User"] == "65534:65534" and cfg["StdinOnce"] is True
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
