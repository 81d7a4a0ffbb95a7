"""Hostile programs, each with the status it must get, against the real Docker sandbox.

Afterwards: no container of ours and no process of the programs is left, and a correct program still
passes. ``HOSTILE`` doubles as the table in benchmarks/RESULTS.md (``python tests/test_sandbox_hostile.py``
prints it with observed statuses).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import docker
import pytest

from restem_pipeline.rewards.sandbox import SandboxPool
from restem_pipeline.rewards.sandbox.workers import LABEL

SECRET = "hunter2-restem"
S = json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})
ENV = json.dumps({"inputs": [""], "outputs": [SECRET + "\n"]})
MB = json.dumps({"test_code": "assert add(1, 2) == 3\nassert add(2, 2) == 4", "entry_point": "add"})
HE = json.dumps(
    {
        "test_code": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 4\n",
        "entry_point": "add",
    }
)

# (name, program, tests, expected status)
HOSTILE = [
    ("infinite loop", "while True: pass", S, "timeout"),
    ("sleep forever", "import time; time.sleep(1000)", S, "timeout"),
    (
        "ignore SIGTERM and spin",
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: pass",
        S,
        "timeout",
    ),
    ("fork bomb", "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", S, "timeout"),
    ("memory hog, one block", "x = bytearray(2**34)", S, "memory_exceeded"),
    ("memory hog, gradual", "l = []\nwhile True: l.append(' ' * 10**6)", S, "memory_exceeded"),
    (
        "forked memory hogs (cgroup OOM)",
        "import os\nfor _ in range(3): os.fork()\nl = []\nwhile True: l.append(b'x' * (50 * 2**20))",
        S,
        "memory_exceeded",
    ),
    ("huge stdout", "while True: print('x' * 1000)", S, "output_limit"),
    ("huge stderr", "import sys\nwhile True: sys.stderr.write('x' * 1000)", S, "output_limit"),
    ("huge file write", "with open('big', 'wb') as f:\n    while True: f.write(b'x' * 2**20)", S, "output_limit"),
    (
        "fill /tmp with files",
        "i = 0\nwhile True:\n    open(f'/tmp/f{i}', 'wb').write(b'x' * 8 * 2**20)\n    i += 1",
        S,
        "output_limit",
    ),
    (
        "network: TCP connect",
        "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\nprint(3)",
        S,
        "runtime_error",
    ),
    ("network: DNS", "import socket\nsocket.getaddrinfo('pypi.org', 443)\nprint(3)", S, "runtime_error"),
    ("read a host file", "print(open('/work/shared/data/README.md').read()[:1])", S, "runtime_error"),
    ("read host environment", "import os\nprint(os.environ.get('RESTEM_HOST_SECRET', 'none'))", ENV, "fail"),
    ("read runner memory", "print(open('/proc/1/mem', 'rb').read(1))", S, "runtime_error"),
    ("read runner environ", "print(open('/proc/1/environ').read())", S, "runtime_error"),
    (
        "ptrace the runner",
        "import ctypes\nassert ctypes.CDLL(None).ptrace(16, 1, 0, 0) == 0, 'refused'\nprint(3)",
        S,
        "runtime_error",
    ),
    ("write the root fs", "open('/usr/lib/x', 'w').write('x')\nprint(3)", S, "runtime_error"),
    (
        "kill the runner, then answer",
        "import os, signal\nos.kill(1, signal.SIGKILL)\nos.kill(os.getppid(), signal.SIGKILL)\nprint(3)",
        S,
        "runtime_error",  # PermissionError: the runner is another user (root); nothing is killed
    ),
    # kill(-1) reaches only the program's own processes (uid 65534): the runner, zygote and checker live on
    ("kill(-1)", "import os, signal\nos.kill(-1, signal.SIGKILL)\nprint(3)", S, "pass"),
    ("deep recursion", "def f(n): return f(n + 1)\nf(0)", S, "runtime_error"),
    (
        "deep recursion in C (256 MiB stack: bounded by CPU time)",
        "import sys\nsys.setrecursionlimit(10**8)\nl = []\nfor _ in range(10**6): l = [l]\nprint(repr(l)[:1])",
        S,
        "timeout",
    ),
    ("child keeps stdout open", "import os, time\nif os.fork() == 0:\n    time.sleep(1000)\nprint(3)", S, "pass"),
    (
        "daemon escapes the session",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
        "    if os.fork() == 0:\n        time.sleep(1000)\n    os._exit(0)\nprint(3)",
        S,
        "pass",
    ),
    ("sys.exit(0) before asserts", "import sys\ndef add(a, b): return 0\nsys.exit(0)", MB, "runtime_error"),
    ("os._exit(0) before asserts", "import os\ndef add(a, b): return 0\nos._exit(0)", MB, "runtime_error"),
    ("raise SystemExit", "def add(a, b): return 0\nraise SystemExit", MB, "runtime_error"),
    ("SystemExit(0) inside candidate", "def add(a, b): raise SystemExit(0)", HE, "runtime_error"),
    (
        "atexit os._exit(0)",
        "import atexit, os\natexit.register(lambda: os._exit(0))\ndef add(a, b): return 0",
        MB,
        "fail",
    ),
    ("__eq__ always True", "class E:\n    def __eq__(self, o): return True\ndef add(a, b): return E()", HE, "fail"),
    (
        "int subclass, __eq__ True",
        "class E(int):\n    def __eq__(self, o): return True\ndef add(a, b): return E(0)",
        MB,
        "fail",
    ),
    (
        "re-exec under python -O",
        "import os, sys\nos.execv(sys.executable, [sys.executable, '-O', '-c', 'pass'])",
        MB,
        "runtime_error",
    ),
    ("fake verdict on stdout", 'def add(a, b): return 0\nprint(\'{"status": "ok", "done": true}\')', MB, "fail"),
    ("exit 0 with wrong output", "import sys\nprint(4)\nsys.exit(0)", S, "fail"),
]


def run_suite(pool: SandboxPool):
    return pool.run_programs([h[1] for h in HOSTILE], [h[2] for h in HOSTILE], timeout_s=3)


@pytest.mark.docker
def test_hostile_suite(monkeypatch):
    monkeypatch.setenv("RESTEM_HOST_SECRET", SECRET)
    client = docker.from_env()
    with SandboxPool(workers=2) as pool:
        results = run_suite(pool)
        observed = {h[0]: r.status for h, r in zip(HOSTILE, results, strict=True)}
        assert observed == {h[0]: h[3] for h in HOSTILE}
        # Still healthy: the same containers answer, and a correct program passes.
        (ok,) = pool.run_programs(["print(sum(map(int, input().split())))"], [S])
        assert ok.status == "pass"
        # No program process survives in any container: only the runner (PID 1) and the zygote remain.
        for cid in pool.container_ids():
            top = client.api.top(cid)
            assert len(top["Processes"]) == 2, top
        # Files do not leak between programs in one container.
        with SandboxPool(workers=1) as one:
            writer = "open('/tmp/s', 'w').write('x')\nopen('left', 'w').write('y')\nprint(3)"
            reader = "import os\nprint(os.listdir('/tmp'), os.listdir('.'))\nopen('/tmp/s')"
            a, b = one.run_programs([writer, reader], [S, S])
            assert a.status == "pass" and b.status == "runtime_error" and "FileNotFoundError" in b.detail
    assert client.api.containers(all=True, filters={"label": f"{LABEL}=1"}) == []
    # Sandboxed processes run as uid 65534 on the host too: none may outlive the containers.
    deadline = time.monotonic() + 10
    pgrep = ["pgrep", "-u", "65534", "-a"]
    while left := subprocess.run(pgrep, capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, f"processes left behind: {left}"
        time.sleep(0.2)


if __name__ == "__main__":  # print the table for benchmarks/RESULTS.md
    os.environ["RESTEM_HOST_SECRET"] = SECRET
    with SandboxPool(workers=2) as p:
        res = run_suite(p)
    print("| hostile program | expected | observed | detail |\n|---|---|---|---|")
    for h, r in zip(HOSTILE, res, strict=True):
        detail = r.detail.replace("|", "\\|").replace("\n", " ")[:70]
        print(f"| {h[0]} | {h[3]} | {r.status}{'' if r.status == h[3] else ' **MISMATCH**'} | {detail} |")
