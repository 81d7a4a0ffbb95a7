"""The candidate's side of the sandbox: a clean pre-imported parent (the zygote) and the program's process.

Runs inside the sandbox image (standard library only). The runner starts the zygote with ``execv``
before it reads any test, so the zygote's memory never holds a test, an expected output or a
reference solution, and neither does any process forked from it. For each test the runner sends
the zygote a job (the program and how to run it) with the test's descriptors; the zygote forks
twice so the program's process is re-parented to the runner, which waits for it (exit status, CPU
time) itself. The program's process drops to uid 65534 (when the runner is root), sets its
limits and runs the program:

* ``stdio``: the program runs as ``__main__``; its stdout goes to the runner; exit status 0 = ran.
* ``serve`` (call-based and assert-style tests): the program runs, then its process answers calls
  from the checker on descriptor 3 with replies on 4 (:mod:`plaindata` frames): call a name the
  program defined (or ``Solution().name``) or a handle it returned, with plain-data arguments, and
  reply with the plain-data return value or the exception's type name. The program's own names are
  left alone (no wrapper), and what it returns is data; the verdict is computed elsewhere.

The process ends like an interpreter that finishes (:func:`_finish`): non-daemon threads joined,
``atexit`` handlers run, ``sys.stdout``/``sys.stderr`` flushed, the program's own files and writers
finalized, then ``sys.__stdout__``/``sys.__stderr__`` flushed, so output written at exit reaches the
runner as on a host. Threads: the main thread keeps the runner's 256 MiB stack limit (deep
recursion); a new thread gets 8 MiB, as on a host, unless the program asks ``threading.stack_size``
for more, and malloc keeps one arena (:func:`_thread_defaults`), so dozens of threads fit the
address-space limit, which still counts all the program allocates.

Exit codes (all but 0 are failures; the program can choose them, so none of them can mean "pass" or
"infrastructure"): 1 exception, 2 ``SystemExit`` other than 0, 3 ``MemoryError``, 4 file-size or
disk limit.
"""

from __future__ import annotations

# Pre-imported (some only for that) so a forked program pays no import cost for the usual suspects.
import bisect  # noqa: F401
import builtins
import collections  # noqa: F401
import contextlib
import copy  # noqa: F401
import errno
import functools  # noqa: F401
import gc
import heapq  # noqa: F401
import itertools  # noqa: F401
import json
import math  # noqa: F401
import os
import random  # noqa: F401
import re  # noqa: F401
import resource
import socket
import statistics  # noqa: F401
import string  # noqa: F401
import struct
import sys
import threading
import traceback
import types
import typing  # noqa: F401

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plaindata  # noqa: E402

ZYGOTE_FD = 3  # the zygote's socket to the runner (closed in every program process)
THREAD_STACK = 8 << 20  # a new thread's stack: glibc's default on a host with the usual 8 MiB RLIMIT_STACK
M_ARENA_MAX = -8  # mallopt(3)
CALL_FD, REPLY_FD = 3, 4  # in the program's process
CANDIDATE_UID = 65534
EXIT_ERROR, EXIT_SYSEXIT, EXIT_MEMORY, EXIT_OUTPUT = 1, 2, 3, 4
MAX_CALL = 64 << 20
PID = struct.Struct(">i")

# What APPS' harness puts before call-based (LeetCode-style) programs (hendrycks/apps
# eval/testing_util.py), minus numpy, which the image does not have.
CALL_PREAMBLE = compile(
    (
        "import sys, time, itertools, collections, math, fractions, random, heapq\n"
        "from itertools import accumulate, product, permutations, combinations\n"
        "from collections import Counter, OrderedDict, deque, defaultdict, ChainMap\n"
        "from functools import lru_cache\n"
        "from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2\n"
        "from typing import List, Tuple, Dict, Optional\n"
        "from heapq import *\n"
    ),
    "<preamble>",
    "exec",
)


# ------------------------------------------------------------------------------------------ zygote


def zygote() -> None:
    _thread_defaults()
    gc.freeze()  # what we imported is never garbage: a program's collections (and its exit) skip it
    sock = socket.socket(fileno=ZYGOTE_FD)
    buf = bytearray()
    while True:
        fds: list[int] = []
        while len(buf) < 4:
            data, got, _, _ = socket.recv_fds(sock, 1 << 16, 8)
            if not data:
                return
            buf += data
            fds += got
        (n,) = PID.unpack_from(buf)
        while len(buf) < 4 + n:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return
            buf += chunk
        job = json.loads(bytes(buf[4 : 4 + n]))
        del buf[: 4 + n]
        if job.get("op") == "ping":
            sock.sendall(PID.pack(os.getpid()))
            continue
        sock.sendall(PID.pack(_spawn(job, fds, sock.fileno())))
        for fd in fds:
            os.close(fd)


def _thread_defaults() -> None:
    """Threads get the host's default stack, not the main thread's; malloc keeps one arena.

    The runner raises RLIMIT_STACK to 256 MiB before it starts us, for the main thread's deep
    recursions; glibc takes a new thread's default stack size from that limit at start-up, so every
    thread would reserve 256 MiB of the program's address-space limit and the second or third
    ``Thread.start()`` would fail ("can't start new thread"). We set glibc's default for new threads
    back to 8 MiB (what a thread gets on a host; ``threading.stack_size(n)`` still sets any size, and
    ``threading.stack_size()`` still answers 0). glibc also gives each thread that allocates its own
    malloc arena, each reserving 64 MiB of address space (128 MiB while it is aligned): with one
    arena the limit counts what the program allocates, not reservations. Forked programs inherit both.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        set_default = libc.pthread_setattr_default_np
    except (OSError, AttributeError):  # not glibc (the unsafe-local backend on another libc)
        threading.stack_size(THREAD_STACK)
        return
    attr = ctypes.create_string_buffer(256)  # a pthread_attr_t is 56 bytes on x86-64, 64 on arm64
    if libc.pthread_attr_init(attr) != 0:
        raise OSError("pthread_attr_init failed")
    try:
        if libc.pthread_attr_setstacksize(attr, ctypes.c_size_t(THREAD_STACK)) != 0 or set_default(attr) != 0:
            raise OSError("could not set the default thread stack size")
    finally:
        libc.pthread_attr_destroy(attr)
    if libc.mallopt(M_ARENA_MAX, 1) != 1:
        raise OSError("mallopt(M_ARENA_MAX, 1) failed")


def _spawn(job: dict, fds: list[int], sock_fd: int) -> int:
    r, w = os.pipe()
    mid = os.fork()
    if mid == 0:  # the intermediate: fork the program's process and exit, so the runner adopts it
        try:
            os.close(r)
            pid = os.fork()
            if pid == 0:
                os.close(w)
                _program_process(job, fds, sock_fd)
            os.write(w, PID.pack(pid))
        finally:
            os._exit(0)
    os.close(w)
    data = os.read(r, 4)
    os.close(r)
    os.waitpid(mid, 0)
    return PID.unpack(data)[0] if len(data) == 4 else -1


# ---------------------------------------------------------------------------------- the program


def _program_process(job: dict, fds: list[int], sock_fd: int) -> None:
    """Runs in the forked program process; never returns."""
    code = EXIT_ERROR
    ns: dict = {"__name__": "__main__", "__builtins__": builtins}  # the program's globals
    try:
        os.setsid()
        os.close(sock_fd)
        plaindata.place_fds(fds[3:], CALL_FD, stdio=fds[:3])
        if job.get("switch_user"):
            _drop_privileges()
        _limits(job)
        os.chdir(job["workdir"])
        os.environ.clear()
        os.environ.update(PATH="/usr/local/bin:/usr/bin:/bin", HOME=job["workdir"], LANG="C.UTF-8")
        sys.argv = ["main.py"]
        sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
        code = _run(job, ns)
    except BaseException as e:  # noqa: BLE001 - every way the program ends maps to an exit code
        code = _exit_code(e, job["mode"])
    _finish(code, ns)


def _drop_privileges() -> None:
    os.setgroups([])
    os.setgid(CANDIDATE_UID)
    os.setuid(CANDIDATE_UID)


def _limits(job: dict) -> None:
    lim = job["limits"]
    for which, val in (
        (resource.RLIMIT_AS, int(lim["mem_mb"]) << 20),
        (resource.RLIMIT_CPU, int(lim["cpu_s"]) + 1),
        (resource.RLIMIT_FSIZE, int(lim["file_limit"])),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, 256),
    ):
        resource.setrlimit(which, (val, val))
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")  # under memory pressure the kernel kills the program, not the runner


def _compile(source: str, wrap_return: bool):
    try:
        return compile(source, "<program>", "exec", dont_inherit=True)
    except SyntaxError as e:
        if not wrap_return or "'return' outside function" not in str(e):
            raise
    # APPS' harness runs stdin/stdout programs inside a function, and some reference solutions
    # rely on a top-level ``return``; only for those do we wrap the same way.
    body = "".join("    " + ln for ln in source.splitlines(keepends=True))
    return compile(f"def _restem_main():\n{body}\n_restem_main()\n", "<program>", "exec", dont_inherit=True)


def _run(job: dict, ns: dict) -> int:
    if job["mode"] == "stdio":
        exec(_compile(job["program"], True), ns)
        return 0
    if job.get("preamble"):
        exec(CALL_PREAMBLE, ns)
    program = _compile(job["program"], False)
    exec(program, ns)
    names = sorted(k for k, v in ns.items() if isinstance(k, str) and callable(v) and not k.startswith("__"))
    modules = {k: v.__name__ for k, v in ns.items() if isinstance(k, str) and isinstance(v, types.ModuleType)}
    plaindata.write_frame(REPLY_FD, {"loaded": names, "modules": modules})
    _serve(ns)
    return 0


def _serve(ns: dict) -> None:
    handles: dict = {}
    while True:
        try:
            msg = plaindata.read_frame(CALL_FD, MAX_CALL)
        except plaindata.FrameError:
            return
        if msg is None:
            return
        try:
            target = _target(ns, handles, msg)
            if msg["op"] == "getattr":
                value = getattr(target, msg["name"])
            else:
                args = plaindata.decode(msg.get("args", []), handles.__getitem__, classes=ns)
                kwargs = plaindata.decode(msg.get("kwargs", {"d": []}), handles.__getitem__, classes=ns)
                value = target(*args, **kwargs)
            reply = {"ok": plaindata.encode(value, handles)}
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as e:  # noqa: BLE001 - the program's exception goes back by name
            reply = {"raised": type(e).__name__, "msg": str(e)[:300]}
        plaindata.write_frame(REPLY_FD, reply)


def _target(ns: dict, handles: dict, msg: dict):
    if "ref" in msg:
        return handles[msg["ref"]]
    name = msg["name"]
    if msg.get("solution"):
        sol = ns.get("Solution")
        if isinstance(sol, type) and hasattr(sol, name):
            return getattr(sol(), name)
    if name not in ns or not callable(ns[name]):
        raise NameError(f"program defines no function {name!r}")
    return ns[name]


def _exit_code(e: BaseException, mode: str) -> int:
    if isinstance(e, SystemExit):
        if e.code in (None, 0):
            return 0 if mode == "stdio" else EXIT_SYSEXIT
        _report(f"program exited (SystemExit {e.code!r}) before the end")
        return EXIT_SYSEXIT
    if isinstance(e, MemoryError):
        return EXIT_MEMORY
    if isinstance(e, OSError) and e.errno in (errno.EFBIG, errno.ENOSPC):
        return EXIT_OUTPUT
    with contextlib.suppress(BaseException):
        traceback.print_exception(e, limit=8)
    _report(f"{type(e).__name__}: {e}"[:500])
    return EXIT_ERROR


def _report(line: str) -> None:
    with contextlib.suppress(BaseException):
        sys.stderr.write(line + "\n")


def _finish(code: int, ns: dict) -> None:
    """End like a finishing interpreter (CPython's ``Py_FinalizeEx``), so output written at exit
    reaches the runner as on a host: join non-daemon threads, run ``atexit`` handlers, flush
    ``sys.stdout`` and ``sys.stderr`` (unless closed or ``None``; a failed flush is an error, as
    CPython's exit status 120), clear the program's globals and collect garbage (its own files and
    writers are finalized: ``IOBase.__del__`` flushes them; their errors are reported, not raised,
    as on a host), then flush the original ``sys.__stdout__``/``sys.__stderr__`` (the fast-output
    template prints into a ``StringIO`` and writes it to ``sys.__stdout__`` from an ``atexit``
    handler). Nothing here reaches the runner but the program's own stdout and stderr."""
    steps = (
        threading._shutdown,
        _run_atexit,
        lambda: _flush(sys.stdout),  # looked up now: a handler may have replaced it
        lambda: _flush(sys.stderr),
        lambda: _collect(ns),
        lambda: _flush(sys.__stdout__),
        lambda: _flush(sys.__stderr__),
    )
    for step in steps:
        try:
            step()
        except BaseException as e:  # noqa: BLE001 - every way the program ends maps to an exit code
            code = code or _exit_code(e, "stdio") or EXIT_ERROR
    os._exit(code)


def _flush(stream) -> None:
    if stream is not None and not getattr(stream, "closed", False):  # CPython skips these too
        stream.flush()


def _collect(ns: dict) -> None:
    ns.clear()  # as CPython clears ``__main__`` at exit: what only the program held is finalized
    gc.collect()


def _run_atexit() -> None:
    import atexit

    atexit._run_exitfuncs()


if __name__ == "__main__":
    zygote()
