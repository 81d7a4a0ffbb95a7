"""Trusted test runner that runs INSIDE the sandbox container (Python standard library only).

It is the container's PID 1. It reads length-prefixed JSON requests on stdin, runs each test in a
fresh child forked from this clean, pre-imported interpreter (new session, rlimits, fresh working
directory, scrubbed environment) and answers with what the program did: its stdout (stdin/stdout
tests), its JSON-serialized return value (call-based tests) or whether the test code ran to the end
(assert / ``check(candidate)`` tests). It never sees expected outputs: the host compares, so a
program cannot find them in memory. After every test it SIGKILLs every other process in the
container (``kill(-1)`` from PID 1 cannot hit itself) and wipes ``/tmp``, so nothing outlives a
test and no test sees another's files. The runner is non-dumpable, so a program (same uid) cannot
ptrace it or read its memory, and as PID 1 it ignores signals sent from inside the container.

Not covered: a program that deliberately finds and writes the result pipe of its own process can
forge an assert-style ("code") verdict; stdin/stdout and call-based verdicts are computed on the
host from data the program cannot forge without solving the task. ``--unsafe-local`` runs the same
loop as an ordinary host process (process-group kill only): for development, not isolation.
"""

from __future__ import annotations

# Pre-imported (some only for that) so a forked test pays no import cost for the usual suspects.
import ast
import bisect  # noqa: F401
import builtins
import collections
import contextlib
import copy  # noqa: F401
import decimal
import errno
import fractions
import functools  # noqa: F401
import heapq  # noqa: F401
import itertools  # noqa: F401
import json
import math  # noqa: F401
import operator  # noqa: F401
import os
import random  # noqa: F401
import re  # noqa: F401
import resource
import select
import signal
import statistics  # noqa: F401
import string  # noqa: F401
import struct
import sys
import time
import typing  # noqa: F401

HDR = struct.Struct(">I")
MAX_REQUEST = 64 << 20
IDLE_EXIT_S = float(os.environ.get("RESTEM_RUNNER_IDLE_S", "1800"))
RESULT_FD = 97
_LIBC = None  # libc through ctypes, set in main()
STDERR_TAIL = 4096
PID1 = os.getpid() == 1
UNSAFE_LOCAL = "--unsafe-local" in sys.argv
if not PID1 and not UNSAFE_LOCAL:
    sys.exit("runner.py must be PID 1 of a sandbox container (or run with --unsafe-local)")
WORK_ROOT = os.environ.get("RESTEM_RUNNER_TMP", "/tmp") if UNSAFE_LOCAL else "/tmp"

# Captured before any program runs: a program may rebind these names, not these objects.
_exit, _write, _dumps, _compile, _exec, _type = os._exit, os.write, json.dumps, compile, exec, type
IMMUTABLE_TYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE (3.10+)
PLAIN = (type(None), bool, int, float, complex, str, list, tuple, dict, set, frozenset)
TRUSTED_EQ = {
    c: c.__eq__
    for c in (
        collections.Counter,
        collections.OrderedDict,
        collections.defaultdict,
        collections.deque,
        fractions.Fraction,
        decimal.Decimal,
    )
}


# What APPS' harness puts before call-based (LeetCode-style) programs (hendrycks/apps
# eval/testing_util.py), minus numpy, which the image does not have.
CALL_PREAMBLE = compile(
    "import sys, time, itertools, collections, math, fractions, random, heapq\n"
    "from itertools import accumulate, product, permutations, combinations\n"
    "from collections import Counter, OrderedDict, deque, defaultdict, ChainMap\n"
    "from functools import lru_cache\n"
    "from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2\n"
    "from typing import List, Tuple, Dict, Optional\n"
    "from heapq import *\n",
    "<preamble>",
    "exec",
)


class NotPlainData(BaseException):
    """A candidate returned an object whose equality we cannot trust (e.g. ``__eq__`` always True)."""


def check_plain(value, depth: int = 0) -> None:
    t = _type(value)
    if depth > 200:
        raise NotPlainData("returned value nested deeper than 200 levels")
    # Immutable types (C types such as re.Match) cannot be created or patched from Python code.
    immutable = t.__flags__ & IMMUTABLE_TYPE
    if t not in PLAIN and not immutable and not (t in TRUSTED_EQ and t.__eq__ is TRUSTED_EQ[t]):
        raise NotPlainData(f"returned an object of type {t.__name__!r}, not plain data")
    if t in (list, tuple, set, frozenset, collections.deque):
        for v in value:
            check_plain(v, depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_plain(k, depth + 1)
            check_plain(v, depth + 1)


def to_json_value(value, depth: int = 0):
    """Plain data to JSON (tuples become lists); anything else raises NotPlainData."""
    check_plain(value, depth)
    t = _type(value)
    if t in (list, tuple, collections.deque):
        return [to_json_value(v, depth + 1) for v in value]
    if t in (set, frozenset):
        items = [to_json_value(v, depth + 1) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, dict):
        return {str(k): to_json_value(v, depth + 1) for k, v in value.items()}
    if t is complex or t in TRUSTED_EQ:
        raise NotPlainData(f"returned a {t.__name__}, which has no JSON form")
    return value


# ------------------------------------------------------------------------------------------ child


def _child(req: dict, stdin_fd: int, out_w: int, err_w: int, res_w: int, workdir: str) -> None:
    """Runs in the forked child; never returns."""
    result: dict = {"status": "runtime_error", "detail": "runner child did not finish"}
    try:
        os.setsid()
        os.dup2(stdin_fd, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.dup2(res_w, RESULT_FD)
        os.closerange(3, RESULT_FD)
        os.closerange(RESULT_FD + 1, 4096)
        mem = int(req["mem_mb"]) << 20
        cpu = int(float(req["timeout_s"])) + 2
        for lim, val in (
            (resource.RLIMIT_AS, mem),
            (resource.RLIMIT_CPU, cpu),
            (resource.RLIMIT_FSIZE, int(req["file_limit"])),
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_NOFILE, 256),
        ):
            resource.setrlimit(lim, (val, val))
        if _LIBC is not None:  # /proc/self is root-owned while non-dumpable: lift it for this write
            _LIBC.prctl(4, 1, 0, 0, 0)
            with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")  # under memory pressure the kernel kills the test, not the runner
            _LIBC.prctl(4, 0, 0, 0, 0)
        os.chdir(workdir)
        os.environ.clear()
        os.environ.update(PATH="/usr/local/bin:/usr/bin:/bin", HOME=workdir, LANG="C.UTF-8")
        sys.argv = ["main.py"]
        sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
        result = _run_mode(req)
    except BaseException as e:  # noqa: BLE001 - the trusted side classifies every exit of the program
        result = _classify(e, req["mode"])
    try:
        sys.stdout.flush()
    except BaseException as e:  # noqa: BLE001
        if result.get("status") == "ok":
            result = _classify(e, req["mode"])
    try:
        view = memoryview(_dumps(result).encode())
        while view:
            view = view[_write(RESULT_FD, view) :]
    finally:
        _exit(0)


class _Flags:
    candidate_raised = False


def _run_mode(req: dict) -> dict:
    mode = req["mode"]
    ns: dict = {"__name__": "__main__", "__builtins__": builtins}
    try:
        code = _compile(req["program"], "<program>", "exec", dont_inherit=True, optimize=0)
    except SyntaxError as e:
        if mode != "stdio" or "'return' outside function" not in str(e):
            raise
        # APPS' harness runs stdin/stdout programs inside a function, and some reference solutions
        # rely on a top-level ``return``; only for those do we wrap the same way.
        body = "".join("    " + ln for ln in req["program"].splitlines(keepends=True))
        code = _compile(
            f"def _restem_main():\n{body}\n_restem_main()\n", "<program>", "exec", dont_inherit=True, optimize=0
        )
    if mode == "stdio":
        _exec(code, ns)
        return {"status": "ok"}
    if mode == "call":
        _exec(CALL_PREAMBLE, ns)
        _exec(code, ns)
        fn = _resolve(ns, req["fn_name"])
        value = fn(*req["args"])
        return {"status": "ok", "result": to_json_value(value)}
    if mode == "code":
        tests = _compile(req["test_code"], "<tests>", "exec", dont_inherit=True, optimize=0)
        _exec(code, ns)
        entry = req.get("entry_point")
        wrapper = None
        if entry:
            if not callable(ns.get(entry)):
                return {"status": "runtime_error", "detail": f"program defines no function {entry!r}"}
            wrapper = _wrap(ns[entry])
            ns[entry] = wrapper
        _exec(tests, ns)
        if req.get("call_check"):
            if wrapper is None:
                return {"status": "runtime_error", "detail": "check(candidate) needs an entry_point"}
            ns["check"](wrapper)
        return {"status": "ok", "done": True}
    raise ValueError(f"unknown mode {mode!r}")


def _resolve(ns: dict, fn_name: str):
    sol = ns.get("Solution")
    if isinstance(sol, type) and hasattr(sol, fn_name):
        return getattr(sol(), fn_name)
    fn = ns.get(fn_name)
    if not callable(fn):
        raise NameError(f"program defines no function {fn_name!r} (nor Solution().{fn_name})")
    return fn


def _wrap(fn):
    def candidate(*args, **kwargs):
        try:
            value = fn(*args, **kwargs)
        except BaseException:
            _Flags.candidate_raised = True
            raise
        check_plain(value)
        return value

    return candidate


def _classify(e: BaseException, mode: str) -> dict:
    name = _type(e).__name__
    detail = f"{name}: {e}"[:500]
    if isinstance(e, SystemExit):
        if mode == "stdio" and e.code in (None, 0):
            return {"status": "ok"}
        return {"status": "runtime_error", "detail": f"program exited (SystemExit {e.code!r}) before the end"}
    if isinstance(e, MemoryError):
        return {"status": "memory_exceeded", "detail": detail}
    if isinstance(e, OSError) and e.errno in (errno.EFBIG, errno.ENOSPC):
        return {"status": "output_limit", "detail": detail}
    if isinstance(e, NotPlainData):
        return {"status": "fail", "detail": str(e)}
    if isinstance(e, AssertionError) and mode == "code" and not _Flags.candidate_raised:
        return {"status": "fail", "detail": detail}
    return {"status": "runtime_error", "detail": detail}


# ----------------------------------------------------------------------------------------- parent


def kill_all(pid: int) -> dict[int, int]:
    """SIGKILL every process but ourselves; reap them; return {pid: wait status} of those reaped."""
    reaped: dict[int, int] = {}
    for _ in range(200):
        if PID1:
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        while True:
            try:
                p, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if p == 0:
                break
            reaped[p] = st
        if not PID1:
            return reaped
        if not [d for d in os.listdir("/proc") if d.isdigit() and d != "1"]:
            return reaped
        time.sleep(0.002)
    raise RuntimeError("processes survived SIGKILL for 0.4 s")


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
    stdin_fd = os.memfd_create("stdin")
    data = req.get("stdin", "").encode()
    view = memoryview(data)
    while view:
        view = view[os.write(stdin_fd, view) :]
    os.lseek(stdin_fd, 0, os.SEEK_SET)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(req, stdin_fd, out_w, err_w, res_w, base)
    for fd in (stdin_fd, out_w, err_w, res_w):
        os.close(fd)
    try:
        return _watch(req, pid, t0, out_r, err_r, res_r)
    finally:
        if UNSAFE_LOCAL:
            _rmtree(base)
        else:
            wipe("/tmp")
            if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
                wipe("/dev/shm")


def _watch(req: dict, pid: int, t0: float, out_r: int, err_r: int, res_r: int) -> dict:
    limit = int(req["output_limit"])
    deadline = t0 + float(req["timeout_s"])
    try:
        pidfd = os.pidfd_open(pid)  # readable when the child exits (Linux >= 5.3)
    except (AttributeError, OSError):
        pidfd = None  # older kernels: poll waitpid every 5 ms instead
    bufs = {out_r: bytearray(), err_r: bytearray(), res_r: bytearray()}
    open_fds = set(bufs)
    total = 0
    verdict = None
    wstatus = None
    elapsed = 0.0
    drain_until = None
    try:
        while open_fds or wstatus is None:
            now = time.monotonic()
            if wstatus is None:
                if now >= deadline:
                    verdict = "timeout"
                    break
                if pidfd is None:
                    watch, wait = list(open_fds), min(deadline - now, 0.005)
                else:
                    watch, wait = [*open_fds, pidfd], deadline - now
            else:
                if now >= drain_until:
                    break
                watch, wait = list(open_fds), drain_until - now
            ready, _, _ = select.select(watch, [], [], wait)
            if wstatus is None and (pidfd in ready if pidfd is not None else True):
                done, st = os.waitpid(pid, 0 if pidfd is not None else os.WNOHANG)
                if done:
                    wstatus, elapsed = st, time.monotonic() - t0
                    kill_all(pid)  # nothing the program started outlives it
                    drain_until = time.monotonic() + 2.0
            for fd in ready:
                if fd == pidfd:
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    open_fds.discard(fd)
                    continue
                total += len(chunk)
                buf = bufs[fd]
                buf += chunk
                if fd == err_r and len(buf) > 2 * STDERR_TAIL:
                    del buf[:-STDERR_TAIL]
                if total > limit:
                    verdict = "output_limit"
            if verdict:
                break
    finally:
        reaped = kill_all(pid)
        if wstatus is None:
            wstatus = reaped.get(pid)
            if wstatus is None:
                try:
                    _, wstatus = os.waitpid(pid, 0)
                except ChildProcessError:
                    wstatus = 0
        for fd in (*bufs, *([pidfd] if pidfd is not None else [])):
            os.close(fd)
    elapsed = elapsed or time.monotonic() - t0
    stderr_tail = bytes(bufs[err_r][-STDERR_TAIL:]).decode("utf-8", "replace")
    resp = {"elapsed": round(elapsed, 4), "stderr": stderr_tail}
    if verdict:
        return {**resp, "status": verdict, "detail": f"{verdict} after {elapsed:.2f}s, {total} bytes out"}
    stdout = bytes(bufs[out_r]).decode("utf-8", "replace")
    try:
        child = json.loads(bytes(bufs[res_r])) if bufs[res_r] else None
    except ValueError:
        child = {"status": "runtime_error", "detail": "unreadable result from the test process"}
    if child is None:
        child = _status_without_result(wstatus, req["mode"])
    resp.update(child)
    if req["mode"] == "stdio":
        resp["stdout"] = stdout
    return resp


def _status_without_result(wstatus: int, mode: str) -> dict:
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
    if mode == "stdio" and code == 0:
        return {"status": "ok"}
    return {"status": "runtime_error", "detail": f"program exited with code {code} before the test finished"}


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
        _LIBC.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0: no ptrace, no /proc/1/mem
    except (OSError, AttributeError):
        _LIBC = None
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
            send({"status": "ok", "pid": os.getpid(), "python": sys.version.split()[0]})
        elif op == "run":
            counter += 1
            if req["mode"] == "code":
                req["call_check"] = bool(req.get("entry_point")) and _defines_check(req["test_code"])
            try:
                send(run_test(req, counter))
            except RuntimeError as e:
                send({"status": "infra_error", "detail": f"runner: {e}"})
                return
        elif op == "exit":
            return
        else:
            send({"status": "infra_error", "detail": f"unknown op {op!r}"})


def _defines_check(test_code: str) -> bool:
    try:
        tree = ast.parse(test_code)
    except SyntaxError:
        return False
    return any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body)


if __name__ == "__main__":
    main()
