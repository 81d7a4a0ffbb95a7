"""Workers that hold one trusted runner each: a locked-down Docker container, or an unsafe subprocess.

:class:`DockerWorker` creates a container from the sandbox image with no network, a read-only root,
a small noexec tmpfs on ``/tmp`` and no ``/dev/shm`` (private IPC), every capability dropped but
the six the runner needs to start programs as uid 65534 and checkers as uid 65533 and to clean up
(:mod:`.runner`), ``no-new-privileges``, pids/memory/CPU limits and no log driver; it attaches to the
runner's stdin/stdout through the Docker SDK and exchanges length-prefixed JSON. Containers are
labelled ``restem.sandbox=1`` with their owner (host, pid), use ``StdinOnce`` (the runner sees EOF and
exits when our attach socket closes, e.g. if this process dies) and ``AutoRemove``; stale ones are
removed by :func:`remove_stale_containers` when the next pool starts. Every engine call has a time
bound (the client timeout) and every runner answer a deadline: a miss raises :class:`InfraError`
and the caller replaces the worker.

:class:`LocalWorker` runs the same runner as a plain host subprocess (``--unsafe-local``): NO
isolation (same user, network, files). For quick development only; never for model output.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import docker
import docker.errors
import requests.exceptions

from restem_pipeline.rewards.sandbox.image import RUNNER_IN_IMAGE, RUNNER_PATH

HDR = struct.Struct(">I")
LABEL = "restem.sandbox"
OWNER_LABEL = "restem.owner"
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


class InfraError(RuntimeError):
    """The sandbox (engine, container or runner) failed; says nothing about the program."""


@dataclass(frozen=True)
class Limits:
    """Resource limits. ``mem_mb`` is the program's address-space limit; the checker's is ``mem_mb`` +
    256 MiB; the container's memory (``container_mb``) holds both, the runner and the zygote."""

    mem_mb: int = 512
    output_limit: int = 4 << 20
    file_limit: int = 16 << 20
    tmpfs_mb: int = 64
    pids: int = 64
    cpus: float = 1.0

    @property
    def container_mb(self) -> int:
        return 2 * self.mem_mb + 256 + 160

    def __post_init__(self) -> None:
        for name in ("mem_mb", "output_limit", "file_limit", "tmpfs_mb", "pids"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")
        if self.mem_mb < 64:
            raise ValueError(f"Limits.mem_mb must be at least 64 (for the interpreter), got {self.mem_mb}")


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def remove_stale_containers(client: docker.DockerClient) -> int:
    """Remove labelled containers that are stopped, or whose owning process on this host is gone.

    A running container owned by another host sharing the engine is left alone (its runner exits
    when its owner's attach socket closes, or after ``RESTEM_RUNNER_IDLE_S``). Returns how many.
    """
    removed = 0
    host = socket.gethostname()
    for c in client.api.containers(all=True, filters={"label": f"{LABEL}=1"}):
        owner = c.get("Labels", {}).get(OWNER_LABEL, "")
        owner_host, _, pid = owner.rpartition(":")
        running = c.get("State") == "running"
        if running and (owner_host != host or (pid.isdigit() and _alive(int(pid)))):
            continue
        try:
            client.api.remove_container(c["Id"], force=True)
            removed += 1
        except docker.errors.NotFound:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Framed:
    """Length-prefixed JSON over a byte stream; subclasses supply ``_send`` and ``_recv_some``."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def call(self, msg: dict, timeout_s: float) -> dict:
        data = json.dumps(msg).encode()
        deadline = time.monotonic() + timeout_s
        self._send(HDR.pack(len(data)) + data, timeout_s)
        while True:
            if len(self._buf) >= HDR.size:
                (n,) = HDR.unpack_from(self._buf)
                if len(self._buf) >= HDR.size + n:
                    body = bytes(self._buf[HDR.size : HDR.size + n])
                    del self._buf[: HDR.size + n]
                    try:
                        return json.loads(body)
                    except ValueError as e:
                        raise InfraError(f"unreadable answer from the runner: {e}") from e
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InfraError(f"runner gave no answer within {timeout_s:.1f}s")
            self._recv_some(remaining)

    def _send(self, data: bytes, timeout_s: float) -> None:
        raise NotImplementedError

    def _recv_some(self, timeout_s: float) -> None:
        raise NotImplementedError


class DockerWorker(_Framed):
    def __init__(self, client: docker.DockerClient, image: str, limits: Limits, start_timeout_s: float = 30.0):
        super().__init__()
        self.client, self.id, self._raw, self._sockio = client, None, None, None
        self._frame = bytearray()
        self._stderr = bytearray()
        api = client.api
        host_config = api.create_host_config(
            network_mode="none",
            read_only=True,
            cap_drop=["ALL"],
            # The runner starts as root only to run the program (uid 65534) and the checker (uid
            # 65533) as two users who cannot signal or read each other, and to clean up after them.
            cap_add=["SETUID", "SETGID", "KILL", "CHOWN", "DAC_OVERRIDE", "FOWNER"],
            security_opt=["no-new-privileges"],
            tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={limits.tmpfs_mb}m,mode=1777"},
            ipc_mode="none",
            pids_limit=limits.pids,
            mem_limit=f"{limits.container_mb}m",
            memswap_limit=f"{limits.container_mb}m",
            nano_cpus=int(limits.cpus * 1e9),
            auto_remove=True,
            log_config=docker.types.LogConfig(type="none"),
            ulimits=[
                docker.types.Ulimit(name="core", soft=0, hard=0),
                docker.types.Ulimit(name="nofile", soft=1024, hard=1024),
            ],
        )
        try:
            created = api.create_container(
                image,
                command=["python3", "-I", "-B", RUNNER_IN_IMAGE],
                user="0:0",
                stdin_open=True,
                detach=False,
                tty=False,
                network_disabled=True,
                working_dir="/tmp",
                environment={"LANG": "C.UTF-8"},
                labels={LABEL: "1", OWNER_LABEL: owner_id()},
                host_config=host_config,
                stop_signal="SIGKILL",
            )
            self.id = created["Id"]
            params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            self._sockio = api.attach_socket(self.id, params=params)
            self._raw = self._sockio._sock
            api.start(self.id)
            pong = self.call({"op": "ping"}, start_timeout_s)
        except ENGINE_ERRORS as e:
            self.close()
            raise InfraError(f"could not start a sandbox container from {image}: {e}") from e
        except InfraError:
            self.close()
            raise
        if pong.get("pid") != 1 or pong.get("root") is not True:
            self.close()
            raise InfraError(f"runner is not PID 1 in its container: {pong}")

    def _send(self, data: bytes, timeout_s: float) -> None:
        try:
            self._raw.settimeout(timeout_s)
            self._raw.sendall(data)
        except OSError as e:
            raise InfraError(f"writing to the sandbox runner failed: {e}") from e

    def _recv_some(self, timeout_s: float) -> None:
        """Read one multiplexed frame (8-byte header: stream, 0, 0, 0, size) from the attach socket."""
        header = self._recv_exact(8, timeout_s)
        payload = self._recv_exact(HDR.unpack_from(header, 4)[0], timeout_s)
        if header[0] == 2:
            self._stderr += payload
            del self._stderr[:-4000]
        else:
            self._buf += payload

    def _recv_exact(self, n: int, timeout_s: float) -> bytes:
        while len(self._frame) < n:
            try:
                self._raw.settimeout(max(timeout_s, 0.001))
                chunk = self._raw.recv(max(n - len(self._frame), 1 << 16))
            except TimeoutError as e:
                raise InfraError(f"runner gave no answer within {timeout_s:.1f}s") from e
            except OSError as e:
                raise InfraError(f"reading from the sandbox runner failed: {e}") from e
            if not chunk:
                err = self._stderr.decode("utf-8", "replace")[-500:]
                raise InfraError(f"sandbox runner exited{': ' + err if err else ''}")
            self._frame += chunk
        out = bytes(self._frame[:n])
        del self._frame[:n]
        return out

    def close(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(OSError):
                self._raw.close()
            self._raw = None
        if self.id is not None:
            try:
                self.client.api.remove_container(self.id, force=True)
            except docker.errors.NotFound:
                pass
            except ENGINE_ERRORS:
                pass  # AutoRemove, StdinOnce and the next pool's stale sweep still remove it
            self.id = None


class LocalWorker(_Framed):
    """UNSAFE: the runner as a host subprocess, no isolation. Development only."""

    def __init__(self, limits: Limits, start_timeout_s: float = 30.0):
        super().__init__()
        self._tmp = tempfile.mkdtemp(prefix="restem-unsafe-")
        self._err = open(os.path.join(self._tmp, "runner.stderr"), "w+b")  # noqa: SIM115
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "RESTEM_RUNNER_TMP": self._tmp}
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-B", str(RUNNER_PATH), "--unsafe-local"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=env,
            cwd=self._tmp,
        )
        try:
            pong = self.call({"op": "ping"}, start_timeout_s)
        except InfraError:
            self.close()
            raise
        if pong.get("status") != "ok":
            self.close()
            raise InfraError(f"local runner did not start: {pong}")

    def _send(self, data: bytes, timeout_s: float) -> None:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except OSError as e:
            raise InfraError(f"local runner is gone: {e}") from e

    def _recv_some(self, timeout_s: float) -> None:
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            return
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            self._err.seek(0)
            raise InfraError(f"local runner exited: {self._err.read()[-500:].decode('utf-8', 'replace')}")
        self._buf += chunk

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout, self._err):
            f.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
