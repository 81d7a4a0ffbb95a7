"""Trusted supervisor that runs INSIDE the sandbox container (PID 1; Python standard library only).

It reads length-prefixed JSON requests on stdin and answers each with what the program did; it
never runs a program itself. Three kinds of process per test, each with one job:

* the **program's process**, forked from the zygote (:mod:`zygote`), a clean interpreter started
  before any test was read, so no test, expected output or reference is in its memory; it runs as
  uid 65534 with rlimits, in a fresh working directory, and is re-parented to this runner, which
  waits for it itself (exit status and CPU time cannot be forged);
* for call-based and assert-style tests, the **checker** (:mod:`checker`), forked from this runner
  as uid 65533: it runs the test code and talks to the program only through plain data, and sends
  its verdict on a pipe only it holds;
* this **runner**, root without any capability beyond changing uid, killing and cleaning ``/tmp``:
  it enforces the wall-clock backstop and the output cap, and after every test kills every process
  but itself and the zygote and wipes ``/tmp``, so nothing outlives a test.

stdin/stdout tests send stdout to the host, which compares it; call-based tests send the decoded
return value; assert-style tests send ``done``. Time: the program's CPU time is limited
(``cpu_s``, rlimit); the wall clock is a generous backstop (``wall_s``) whose expiry is a timeout
if the program used the CPU or slept, and an infrastructure error (``host overloaded``, retried by
the host) if it was waiting for a CPU. ``--unsafe-local`` runs the same loop as an ordinary host
process (no uid change, process-group kills only): for development, never for model output.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checker  # noqa: E402
import plaindata  # noqa: E402

HDR = struct.Struct(">I")
PID = struct.Struct(">i")
MAX_REQUEST = 64 << 20
IDLE_EXIT_S = float(os.environ.get("RESTEM_RUNNER_IDLE_S", "1800"))
STDERR_TAIL = 4096
PID1 = os.getpid() == 1
UNSAFE_LOCAL = "--unsafe-local" in sys.argv
if not PID1 and not UNSAFE_LOCAL:
    sys.exit("runner.py must be PID 1 of a sandbox container (or run with --unsafe-local)")
ROOT = os.getuid() == 0
# The checker (forked from us) and the program (forked from the zygote) must iterate sets of strings
# in the same order, as they did when they shared a process: one hash seed, drawn per container.
# ``-I`` would ignore PYTHONHASHSEED, so we re-exec once with ``-s -P`` and an environment we build.
SAFE_FLAGS = ["-s", "-P", "-B"]
if "PYTHONHASHSEED" not in os.environ or os.environ.get("RESTEM_SEEDED") != "1":
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "RESTEM_RUNNER_TMP", "RESTEM_RUNNER_IDLE_S") if k in os.environ}
    seed = str(int.from_bytes(os.urandom(4), "big") % 4294967295 + 1)
    env = {**keep, "PYTHONHASHSEED": seed, "RESTEM_SEEDED": "1"}
    os.execve(sys.executable, [sys.executable, *SAFE_FLAGS, os.path.abspath(__file__), *sys.argv[1:]], env)
SWITCH_USERS = ROOT and not UNSAFE_LOCAL  # unsafe-local runs everything as the calling user
WORK_ROOT = os.environ.get("RESTEM_RUNNER_TMP", "/tmp") if UNSAFE_LOCAL else "/tmp"
ZYGOTE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zygote.py")
CANDIDATE_UID = 65534
SERVE_CPU_CAP = checker.Harness.HARD_CAP
EXIT_MEANING = {2: "runtime_error", 3: "memory_exceeded", 4: "output_limit"}
_LIBC = None


def _prctl(option: int, value: int) -> None:
    if _LIBC is not None:
        _LIBC.prctl(option, value, 0, 0, 0)


# ------------------------------------------------------------------------------------------ zygote


class Zygote:
    """The clean parent of every program process (see :mod:`zygote`); restarted if it dies."""

    def __init__(self):
        self.pid = 0
        self.sock: socket.socket | None = None

    def ensure(self) -> None:
        if self.pid:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                done = self.pid
            if not done:
                return
            self.stop()
        if self.sock is not None:
            self.stop()
        parent, child = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            try:
                plaindata.place_fds([child.fileno()], 3)  # 0-2 become /dev/null: the zygote never holds our channel
                os.execv(sys.executable, [sys.executable, *SAFE_FLAGS, ZYGOTE_PATH])  # our seed, inherited
            finally:
                os._exit(127)
        child.close()
        self.pid, self.sock = pid, parent
        self._ask({"op": "ping"}, [], 30.0)

    def spawn(self, job: dict, fds: list[int]) -> int:
        pid = self._ask(job, fds, 10.0)
        if pid <= 0:
            raise RuntimeError("the zygote could not fork")
        return pid

    def _ask(self, job: dict, fds: list[int], timeout_s: float) -> int:
        data = json.dumps(job).encode()
        frame = PID.pack(len(data)) + data
        try:
            self.sock.settimeout(timeout_s)
            sent = socket.send_fds(self.sock, [frame[: 1 << 16]], fds)
            self.sock.sendall(frame[sent:])
            answer = b""
            while len(answer) < 4:
                chunk = self.sock.recv(4 - len(answer))
                if not chunk:
                    raise OSError("the zygote closed its socket")
                answer += chunk
        except OSError as e:
            self.stop()
            raise RuntimeError(f"zygote: {e}") from None
        return PID.unpack(answer)[0]

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
        self.pid, self.sock = 0, None


ZYGOTE = Zygote()


# ---------------------------------------------------------------------------------------- a test


def kill_all(groups: list[int]) -> dict[int, tuple[int, float]]:
    """SIGKILL every process but ourselves and the zygote; reap them; return {pid: (status, cpu_s)}."""
    reaped: dict[int, tuple[int, float]] = {}
    keep = {os.getpid(), ZYGOTE.pid}
    for _ in range(200):
        if PID1:
            victims = [int(d) for d in os.listdir("/proc") if d.isdigit() and int(d) not in keep]
            for p in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        else:
            victims = []
            for g in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(g, signal.SIGKILL)
        _reap(reaped)
        if not victims:
            return reaped
        time.sleep(0.002)
    raise RuntimeError("processes survived SIGKILL for 0.4 s")


def _reap(reaped: dict, block_for: int | None = None) -> None:
    while True:
        try:
            p, st, ru = os.wait4(block_for or -1, 0 if block_for else os.WNOHANG)
        except ChildProcessError:
            return
        if p == 0:
            return
        if p == ZYGOTE.pid:
            ZYGOTE.pid = 0
        reaped[p] = (st, ru.ru_utime + ru.ru_stime)
        if block_for:
            return


def wipe(path: str) -> None:
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            _rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _rmtree(path: str) -> None:
    os.chmod(path, 0o700)
    wipe(path)
    os.rmdir(path)


def run_test(req: dict, counter: int) -> dict:
    base = os.path.join(WORK_ROOT, f"restem-w{os.getpid()}-{counter}") if UNSAFE_LOCAL else "/tmp/w"
    os.mkdir(base, 0o700)
    if SWITCH_USERS:
        os.chown(base, CANDIDATE_UID, CANDIDATE_UID)
    cpu_s, wall_s = float(req["timeout_s"]), float(req.get("wall_s") or max(3 * float(req["timeout_s"]), 5.0))
    stdin_fd = os.memfd_create("stdin")
    view = memoryview(req.get("stdin", "").encode())
    while view:
        view = view[os.write(stdin_fd, view) :]
    os.lseek(stdin_fd, 0, os.SEEK_SET)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    serve = req["mode"] != "stdio"
    job = {
        "mode": "serve" if serve else "stdio",
        "preamble": req["mode"] == "call",
        "program": req["program"],
        "workdir": base,
        "switch_user": SWITCH_USERS,
        # with a checker, it enforces the CPU budget (a harness may raise it); the rlimit is a cap
        "limits": {
            "mem_mb": req["mem_mb"],
            "cpu_s": cpu_s * (SERVE_CPU_CAP if serve else 1),
            "file_limit": req["file_limit"],
        },
    }
    fds = [stdin_fd, out_w, err_w]
    theirs = list(fds)
    if serve:
        call_r, call_w = os.pipe()
        reply_r, reply_w = os.pipe()
        verdict_r, verdict_w = os.pipe()
        fds += [call_r, reply_w]
        theirs += [call_r, reply_w, call_w, reply_r, verdict_w]
    ZYGOTE.ensure()
    t0 = time.monotonic()
    groups: list[int] = []
    try:
        try:
            cpid = ZYGOTE.spawn(job, fds)
            groups.append(cpid)
            chk = 0
            if serve:
                chk = os.fork()
                if chk == 0:
                    plaindata.place_fds([call_w, reply_r, verdict_w], 3)
                    checker.run({**req, "wall_s": wall_s, "switch_user": SWITCH_USERS}, 3, 4, 5, cpid)
                groups.append(chk)
        finally:
            for fd in theirs:
                os.close(fd)
        return _watch(req, cpid, chk, t0, cpu_s, wall_s, out_r, err_r, verdict_r if serve else None, groups)
    finally:
        if UNSAFE_LOCAL:
            _rmtree(base)
        else:
            wipe("/tmp")


def _watch(req, cpid, chk, t0, cpu_s, wall_s, out_r, err_r, verdict_r, groups) -> dict:
    limit = int(req["output_limit"])
    deadline = t0 + (SERVE_CPU_CAP * wall_s + 10 if verdict_r is not None else wall_s)
    pidfd = os.pidfd_open(cpid)
    bufs = {out_r: bytearray(), err_r: bytearray()}
    if verdict_r is not None:
        bufs[verdict_r] = bytearray()
    open_fds = set(bufs)
    total, verdict, exited, drain_until = 0, None, None, None
    reaped: dict[int, tuple[int, float]] = {}
    try:
        while True:
            now = time.monotonic()
            if verdict_r is not None and verdict_r not in open_fds:
                break  # the checker wrote its verdict (or died) and closed the pipe
            if exited is None:
                if now >= deadline:
                    verdict = _backstop(cpid, now - t0, verdict_r is not None)
                    break
                watch, wait = [*open_fds, pidfd], deadline - now
            else:
                if verdict_r is None and (not open_fds or now >= drain_until):
                    break
                if verdict_r is not None and now >= deadline:
                    verdict = {"status": "infra_error", "detail": "the checker ran past its time limit"}
                    break
                watch, wait = list(open_fds), (drain_until - now if verdict_r is None else deadline - now)
            ready, _, _ = select.select(watch, [], [], max(wait, 0))
            if exited is None and pidfd in ready:
                _reap(reaped, block_for=cpid)
                exited = time.monotonic() - t0
                if verdict_r is None:
                    reaped.update(kill_all(groups))  # nothing the program started outlives it
                drain_until = time.monotonic() + 2.0
            for fd in ready:
                if fd == pidfd:
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    open_fds.discard(fd)
                    continue
                bufs[fd] += chunk
                if fd == verdict_r:
                    continue
                total += len(chunk)
                if fd == err_r and len(bufs[fd]) > 2 * STDERR_TAIL:
                    del bufs[fd][:-STDERR_TAIL]
                if total > limit:
                    verdict = {"status": "output_limit", "detail": f"over {limit} bytes of output"}
            if verdict:
                break
    finally:
        if exited is None and verdict is None and verdict_r is not None:
            # the checker is done: give a finished program a moment to exit, for its status
            with contextlib.suppress(ChildProcessError):
                if select.select([pidfd], [], [], 0.2)[0]:
                    _reap(reaped, block_for=cpid)
        reaped.update(kill_all(groups))
        os.close(pidfd)
        for fd in bufs:
            os.close(fd)
    elapsed = exited or time.monotonic() - t0
    resp = {"elapsed": round(elapsed, 4), "stderr": bytes(bufs[err_r][-STDERR_TAIL:]).decode("utf-8", "replace")}
    if verdict is None and verdict_r is not None:
        verdict = _checker_verdict(bytes(bufs[verdict_r]), reaped.get(cpid), cpu_s * SERVE_CPU_CAP)
    if verdict is None:
        verdict = _exit_verdict(reaped.get(cpid), cpu_s, req["mode"])
        if verdict["status"] == "ok":
            verdict["stdout"] = bytes(bufs[out_r]).decode("utf-8", "replace")
    return {**resp, **verdict}


def _backstop(cpid: int, wall: float, serve: bool) -> dict:
    if serve:  # the checker bounds every call; past this, the checker itself (test code) hung
        return {"status": "infra_error", "detail": f"the checker ran past {wall:.1f}s"}
    v = checker.timeout_or_overload(cpid, wall, checker.program_cpu_seconds(cpid, PID1), "the test")
    if v["status"] == "overloaded":
        return {"status": "infra_error", "detail": v["detail"]}
    return v


def _checker_verdict(raw: bytes, exit_info, cpu_s: float) -> dict:
    try:
        v = json.loads(raw[HDR.size :]) if len(raw) > HDR.size else None
    except ValueError:
        v = None
    if not isinstance(v, dict):
        return {"status": "infra_error", "detail": "the checker ended without a verdict"}
    status = v.get("status")
    if status == "gone":
        out = _exit_verdict(exit_info, cpu_s, "serve")
        if out["status"] == "ok":
            return {"status": "runtime_error", "detail": "program exited before the test finished"}
        return out
    if status in ("overloaded", "unsupported"):
        return {"status": "infra_error", "detail": str(v.get("detail", status))}
    if status not in ("ok", "fail", "runtime_error", "timeout", "output_limit"):
        return {"status": "infra_error", "detail": f"checker verdict {status!r}"}
    return v


def _exit_verdict(exit_info, cpu_s: float, mode: str) -> dict:
    if exit_info is None:
        return {"status": "runtime_error", "detail": "program still running when the test ended"}
    wstatus, used = exit_info
    if used >= cpu_s:
        return {"status": "timeout", "detail": f"CPU time limit {cpu_s:.1f}s"}
    if os.WIFSIGNALED(wstatus):
        sig = os.WTERMSIG(wstatus)
        if sig == signal.SIGXCPU:
            return {"status": "timeout", "detail": "CPU time limit"}
        if sig == signal.SIGKILL:
            return {"status": "memory_exceeded", "detail": "killed by SIGKILL (out of memory)"}
        if sig == signal.SIGXFSZ:
            return {"status": "output_limit", "detail": "file size limit"}
        return {"status": "runtime_error", "detail": f"killed by signal {signal.Signals(sig).name}"}
    code = os.WEXITSTATUS(wstatus)
    if code == 0 and mode == "stdio":
        return {"status": "ok"}
    status = EXIT_MEANING.get(code, "runtime_error")
    return {"status": status, "detail": f"program exited with code {code}"}


# ------------------------------------------------------------------------------------------ loop


def read_exact(n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        ready, _, _ = select.select([0], [], [], IDLE_EXIT_S)
        if not ready:
            return None
        chunk = os.read(0, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def send(obj: dict) -> None:
    data = json.dumps(obj).encode()
    view = memoryview(HDR.pack(len(data)) + data)
    while view:
        view = view[os.write(1, view) :]


def main() -> None:
    global _LIBC
    try:
        import ctypes

        _LIBC = ctypes.CDLL(None)
    except (OSError, AttributeError):
        _LIBC = None
    _prctl(4, 0)  # PR_SET_DUMPABLE = 0: no ptrace, no /proc/1/mem (the checker inherits it)
    _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: program processes are re-parented to us (unsafe-local)
    # A deep recursion needs C stack in the program's process; the zygote's stack limit is inherited
    # by the program's main thread (its other threads get 8 MiB: zygote._thread_defaults).
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    want = 256 << 20 if hard == resource.RLIM_INFINITY else min(256 << 20, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_STACK, (max(soft, want) if soft != resource.RLIM_INFINITY else soft, hard))
    ZYGOTE.ensure()  # before any request is read: nothing of a test is ever in its memory
    counter = 0
    while True:
        head = read_exact(HDR.size)
        if head is None:
            return
        (n,) = HDR.unpack(head)
        if n > MAX_REQUEST:
            send({"status": "infra_error", "detail": f"request of {n} bytes is too large"})
            return
        body = read_exact(n)
        if body is None:
            return
        req = json.loads(body)
        del body
        op = req.get("op")
        if op == "ping":
            send({"status": "ok", "pid": os.getpid(), "python": sys.version.split()[0], "root": ROOT})
        elif op == "run":
            counter += 1
            try:
                send(run_test(req, counter))
            except (RuntimeError, plaindata.FrameError) as e:
                send({"status": "infra_error", "detail": f"runner: {e}"})
                ZYGOTE.stop()
        elif op == "exit":
            return
        else:
            send({"status": "infra_error", "detail": f"unknown op {op!r}"})


if __name__ == "__main__":
    main()
