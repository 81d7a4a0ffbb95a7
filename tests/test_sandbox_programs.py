"""Correct programs get a pass and wrong ones a fail, as on a host (issue 21), in the real Docker sandbox.

Families: threads (a few to 48), deep recursion together with threads, output written at exit
(``atexit`` handlers, ``sys.__stdout__``), buffered writers flushed only at exit, and integer answers
read exactly (an expected integer token is matched only by the same token; an expected float keeps
its 1e-6 tolerance, see :mod:`restem_pipeline.rewards.sandbox.compare`). Each row is a program, its
tests and the per-test verdicts worked out by hand. The sandbox must give exactly those verdicts, and
so must the host: the same program with the same input in a plain ``python3`` subprocess (this
interpreter, no sandbox), judged by the same rule (exit status 0 and :func:`stdout_matches`, or
:func:`value_matches` on the returned value). Rows that recurse deeply on the main thread through C
(``lru_cache``) get the sandbox's 256 MiB stack limit on the host too, as a judge gives. Three more
rows (``THREAD_LIMITS``, sandbox only) check that threads open no way around the limits (a thread
bomb, oversized thread stacks, a memory hog spread over threads). Not covered here: other hostile
programs (``test_sandbox_hostile.py``), forgeries (``test_sandbox_forgery.py``), the comparison table
on its own (``test_sandbox_compare.py``).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import pytest

from restem_pipeline.rewards.sandbox import SandboxPool, parse_tests, stdout_matches, value_matches

P, F = "pass", "fail"


@dataclass(frozen=True)
class Row:
    name: str
    program: str
    tests: dict
    expect: list[str]  # per test, worked out by hand
    host_stack_mb: int | None = None  # the main thread's stack limit on the host (a judge's), if raised


def stdio(*pairs: tuple[str, str]) -> dict:
    return {"inputs": [i for i, _ in pairs], "outputs": [o for _, o in pairs]}


def call(fn: str, *pairs: tuple[list, object]) -> dict:
    return {"fn_name": fn, "inputs": [a for a, _ in pairs], "outputs": [o for _, o in pairs]}


THREADS = [
    Row(  # from the issue: 8 worker threads
        "eight worker threads (issue)",
        "import sys, threading\n"
        "n = int(sys.stdin.readline())\n"
        "parts = [0] * 8\n"
        "def work(k):\n"
        "    parts[k] = sum(i * i for i in range(k, n, 8))\n"
        "workers = [threading.Thread(target=work, args=(k,)) for k in range(8)]\n"
        "for w in workers:\n    w.start()\n"
        "for w in workers:\n    w.join()\n"
        "print(sum(parts))\n",
        # sum of i*i for i < n = (n-1) n (2n-1) / 6: 0, 9*10*19/6 = 285, 999*1000*1999/6 = 332833500
        stdio(("1\n", "0\n"), ("10\n", "285\n"), ("1000\n", "332833500\n")),
        [P, P, P],
    ),
    Row(  # from the issue: two threads compute two candidates, then joined
        "two candidate threads, joined (issue)",
        "import threading\n"
        "n = int(input())\na = list(map(int, input().split()))\n"
        "best = {}\n"
        "def even():\n    best['even'] = sum(a[0::2])\n"
        "def odd():\n    best['odd'] = sum(a[1::2])\n"
        "ts = [threading.Thread(target=even), threading.Thread(target=odd)]\n"
        "for t in ts:\n    t.start()\n"
        "for t in ts:\n    t.join()\n"
        "print(max(best.values()))\n",
        # 1+3+5=9 vs 2+4=6; -1-3=-4 vs -2-4=-6; 7 vs 0 (empty)
        stdio(("5\n1 2 3 4 5\n", "9\n"), ("4\n-1 -2 -3 -4\n", "-4\n"), ("1\n7\n", "7\n")),
        [P, P, P],
    ),
    Row(
        "two candidate threads, wrong choice (min instead of max)",
        "import threading\n"
        "n = int(input())\na = list(map(int, input().split()))\n"
        "best = {}\n"
        "def even():\n    best['even'] = sum(a[0::2])\n"
        "def odd():\n    best['odd'] = sum(a[1::2])\n"
        "ts = [threading.Thread(target=even), threading.Thread(target=odd)]\n"
        "for t in ts:\n    t.start()\n"
        "for t in ts:\n    t.join()\n"
        "print(min(best.values()))\n",
        stdio(("5\n1 2 3 4 5\n", "9\n"), ("1\n7\n", "7\n")),  # prints 6, then 0
        [F, F],
    ),
    Row(
        "48 threads at once",
        "import threading\n"
        "res = [0] * 48\nbarrier = threading.Barrier(48)\n"
        "def work(i):\n    barrier.wait()  # all 48 alive together\n    res[i] = i * i\n"
        "ts = [threading.Thread(target=work, args=(i,)) for i in range(48)]\n"
        "for t in ts:\n    t.start()\n"
        "for t in ts:\n    t.join()\n"
        "print(sum(res))\n",
        stdio(("", "35720\n")),  # 47*48*95/6
        [P],
    ),
    Row(
        "ThreadPoolExecutor with 16 workers",
        "from concurrent.futures import ThreadPoolExecutor\n"
        "input()\nxs = list(map(int, input().split()))\n"
        "with ThreadPoolExecutor(max_workers=16) as ex:\n"
        "    print(*ex.map(lambda x: x * x, xs))\n",
        stdio(("4\n3 1 4 1\n", "9 1 16 1\n"), ("1\n-7\n", "49\n")),
        [P, P],
    ),
    Row(
        "queue with 4 consumer threads",
        "import queue, threading\n"
        "n = int(input())\nq = queue.Queue()\ntotals = [0] * 4\n"
        "def consume(k):\n"
        "    while (x := q.get()) is not None:\n        totals[k] += x\n"
        "ts = [threading.Thread(target=consume, args=(k,)) for k in range(4)]\n"
        "for t in ts:\n    t.start()\n"
        "for x in range(1, n + 1):\n    q.put(x)\n"
        "for _ in ts:\n    q.put(None)\n"
        "for t in ts:\n    t.join()\n"
        "print(sum(totals))\n",
        stdio(("1000\n", "500500\n"), ("1\n", "1\n")),
        [P, P],
    ),
    Row(
        "a daemon thread still running at exit",
        "import threading, time\n"
        "def forever():\n    while True:\n        time.sleep(0.01)\n"
        "threading.Thread(target=forever, daemon=True).start()\n"
        "print(int(input()) * 2)\n",
        stdio(("21\n", "42\n")),
        [P],
    ),
    Row(
        "a helper thread raises; the main thread answers (exit status 0 on a host)",
        "import threading\n"
        "def broken():\n    raise ValueError('helper')\n"
        "t = threading.Thread(target=broken)\nt.start()\nt.join()\n"
        "print(int(input()) * 2)\n",
        stdio(("3\n", "6\n")),
        [P],
    ),
]

RECURSION = [
    Row(
        "threading.stack_size(2**27) and 100000-deep lru_cache recursion in the thread",
        "import sys, threading\nfrom functools import lru_cache\n"
        "sys.setrecursionlimit(10 ** 6)\nthreading.stack_size(2 ** 27)\n"
        "@lru_cache(None)\n"
        "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n"
        "def main():\n    print(depth(int(input())))\n"
        "t = threading.Thread(target=main)\nt.start()\nt.join()\n",
        stdio(("100000\n", "100000\n"), ("5\n", "5\n")),
        [P, P],
    ),
    Row(
        "100000-deep lru_cache recursion on the main thread, and 8 threads",
        "import sys, threading\nfrom functools import lru_cache\n"
        "sys.setrecursionlimit(10 ** 6)\n"
        "@lru_cache(None)\n"
        "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n"
        "got = [0] * 8\n"
        "def work(k):\n    got[k] = k\n"
        "ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]\n"
        "for t in ts:\n    t.start()\n"
        "d = depth(int(input()))\n"
        "for t in ts:\n    t.join()\n"
        "print(d, sum(got))\n",
        stdio(("100000\n", "100000 28\n")),  # 0+1+...+7 = 28
        [P],
        host_stack_mb=256,
    ),
    Row(
        "100000-deep recursion on the main thread, 32 threads recursing 1000 deep",
        "import sys, threading\n"
        "sys.setrecursionlimit(10 ** 6)\n"
        "def down(n):\n    return 0 if n == 0 else 1 + down(n - 1)\n"
        "got = [0] * 32\n"
        "def work(k):\n    got[k] = down(1000)\n"
        "ts = [threading.Thread(target=work, args=(k,)) for k in range(32)]\n"
        "for t in ts:\n    t.start()\n"
        "d = down(int(input()))\n"
        "for t in ts:\n    t.join()\n"
        "print(d, sum(got))\n",
        stdio(("100000\n", "100000 32000\n")),
        [P],
    ),
    Row(
        "16 threads, each 5000 deep, default thread stack",
        "import sys, threading\n"
        "sys.setrecursionlimit(20000)\n"
        "def down(n):\n    return 0 if n == 0 else 1 + down(n - 1)\n"
        "got = [0] * 16\n"
        "def work(k):\n    got[k] = down(5000)\n"
        "ts = [threading.Thread(target=work, args=(k,)) for k in range(16)]\n"
        "for t in ts:\n    t.start()\n"
        "for t in ts:\n    t.join()\n"
        "print(sum(got))\n",
        stdio(("", "80000\n")),
        [P],
    ),
]

AT_EXIT = [
    Row(  # from the issue: the fast-output template
        "print into a StringIO, write it to sys.__stdout__ from atexit (issue)",
        "import atexit, io, sys\n"
        "_out = io.StringIO()\nsys.stdout = _out\n"
        "atexit.register(lambda: sys.__stdout__.write(_out.getvalue()))\n"
        "n = int(input())\n"
        "for i in range(1, n + 1):\n    print(i * i)\n",
        stdio(("3\n", "1\n4\n9\n"), ("1\n", "1\n")),
        [P, P],
    ),
    Row(
        "atexit handler writes with os.write",
        "import atexit, os\n"
        "ans = []\n"
        "atexit.register(lambda: os.write(1, ('\\n'.join(ans) + '\\n').encode()))\n"
        "a, b = map(int, input().split())\nans.append(str(a + b))\n",
        stdio(("2 3\n", "5\n")),
        [P],
    ),
    Row(
        "atexit.register(print, answer)",
        "import atexit\natexit.register(print, sum(map(int, input().split())))\n",
        stdio(("2 3 4\n", "9\n")),
        [P],
    ),
    Row(
        "atexit handlers run last-registered first",
        "import atexit\natexit.register(print, 'second')\natexit.register(print, 'first')\n",
        stdio(("", "first\nsecond\n")),
        [P],
    ),
    Row(
        "sys.exit() in the middle; the atexit handler still prints",
        "import atexit, sys\n"
        "res = []\natexit.register(lambda: print(*res))\n"
        "res.append(int(input()) + 1)\nsys.exit()\nres.append('unreachable')\n",
        stdio(("41\n", "42\n")),
        [P],
    ),
    Row(
        "an atexit handler raises after another printed (exit status 0 on a host)",
        "import atexit\n"
        "def boom():\n    raise ValueError('boom')\n"
        "atexit.register(boom)\natexit.register(print, int(input()) * 3)\n",
        stdio(("14\n", "42\n")),
        [P],
    ),
]

BUFFERED = [
    Row(
        "sys.stdout replaced by a TextIOWrapper over open(1, 'wb'), never flushed",
        "import io, sys\n"
        "sys.stdout = io.TextIOWrapper(open(1, 'wb'), encoding='ascii', write_through=False)\n"
        "n = int(input())\nfor i in range(n):\n    print(i)\n",
        stdio(("3\n", "0\n1\n2\n")),
        [P],
    ),
    Row(
        "os.write overtakes a buffered print, as on a host (stdout is a pipe)",
        "import os\nprint('a')\nos.write(1, b'b\\n')\n",
        stdio(("", "b\na\n")),
        [P],
    ),
    Row(
        "sys.stdout.buffer.write without a flush",
        "import sys\nsys.stdout.buffer.write(str(int(input()) ** 2).encode() + b'\\n')\n",
        stdio(("12\n", "144\n")),
        [P],
    ),
    Row(
        "the program's own writer on fd 1, never flushed or closed",
        "out = open(1, 'w', closefd=False)\n"
        "def solve(n):\n    return n * (n + 1) // 2\n"
        "out.write(f'{solve(int(input()))}\\n')\n",
        stdio(("100\n", "5050\n")),
        [P],
    ),
    Row(
        "a BufferedWriter on a dup of fd 1, finalized at exit (never flushed or closed)",
        "import io, os\n"
        "w = io.BufferedWriter(io.FileIO(os.dup(1), 'w'), buffer_size=1 << 16)\n"
        "def emit(x):\n    w.write(f'{x}\\n'.encode())\n"
        "for i in range(int(input())):\n    emit(i * i)\n",
        stdio(("4\n", "0\n1\n4\n9\n")),
        [P],
    ),
    Row(
        "PyRival's FastIO template (BytesIO buffers, flushed at exit)",
        "import os, sys\nfrom io import BytesIO, IOBase\nBUFSIZE = 8192\n"
        "class FastIO(IOBase):\n    newlines = 0\n"
        "    def __init__(self, file):\n        self._fd = file.fileno()\n        self.buffer = BytesIO()\n"
        "        self.writable = 'x' in file.mode or 'r' not in file.mode\n"
        "        self.write = self.buffer.write if self.writable else None\n"
        "    def read(self):\n"
        "        while True:\n            b = os.read(self._fd, max(os.fstat(self._fd).st_size, BUFSIZE))\n"
        "            if not b:\n                break\n"
        "            ptr = self.buffer.tell()\n"
        "            self.buffer.seek(0, 2), self.buffer.write(b), self.buffer.seek(ptr)\n"
        "        self.newlines = 0\n        return self.buffer.read()\n"
        "    def readline(self):\n"
        "        while self.newlines == 0:\n"
        "            b = os.read(self._fd, max(os.fstat(self._fd).st_size, BUFSIZE))\n"
        "            self.newlines = b.count(b'\\n') + (not b)\n"
        "            ptr = self.buffer.tell()\n"
        "            self.buffer.seek(0, 2), self.buffer.write(b), self.buffer.seek(ptr)\n"
        "        self.newlines -= 1\n        return self.buffer.readline()\n"
        "    def flush(self):\n"
        "        if self.writable:\n"
        "            os.write(self._fd, self.buffer.getvalue())\n"
        "            self.buffer.truncate(0), self.buffer.seek(0)\n"
        "class IOWrapper(IOBase):\n"
        "    def __init__(self, file):\n        self.buffer = FastIO(file)\n        self.flush = self.buffer.flush\n"
        "        self.writable = self.buffer.writable\n"
        "        self.write = lambda s: self.buffer.write(s.encode('ascii'))\n"
        "        self.read = lambda: self.buffer.read().decode('ascii')\n"
        "        self.readline = lambda: self.buffer.readline().decode('ascii')\n"
        "sys.stdin, sys.stdout = IOWrapper(sys.stdin), IOWrapper(sys.stdout)\n"
        "input = lambda: sys.stdin.readline().rstrip('\\r\\n')\n"
        "n = int(input())\na = list(map(int, input().split()))\nprint(sum(a))\nprint(max(a))\n",
        stdio(("3\n1 2 3\n", "6\n3\n"), ("2\n-5 5\n", "0\n5\n")),
        [P, P],
    ),
    Row(
        "sys.stdout closed by the program at the end",
        "import sys\nsys.stdout.write(str(int(input()) + 1) + '\\n')\nsys.stdout.close()\n",
        stdio(("9\n", "10\n")),
        [P],
    ),
    Row(
        "200000 lines (1.3 MB, past the pipe's buffer) written in one go at the end",
        "import sys\nn = int(input())\nsys.stdout.write('\\n'.join(map(str, range(1, n + 1))))\n",
        stdio(("200000\n", "\n".join(map(str, range(1, 200001))) + "\n")),
        [P],
    ),
]

BIG = 147483647410065408  # = 36006749855973 * 4096; as a float its repr is 1.474836474100654e+17
NUMBERS = [
    Row(  # from the issue: integer arithmetic in floats
        "integer arithmetic in floats (issue): 1.0 for 1, 1.474836474100654e+17 for 147483647410065408",
        "a, b = map(int, input().split())\nprint(a * b / 2)\n",
        stdio(("1 2\n", "1\n"), ("36006749855973 8192\n", f"{BIG}\n")),
        [F, F],
    ),
    Row(
        "the same in integers",
        "a, b = map(int, input().split())\nprint(a * b // 2)\n",
        stdio(("1 2\n", "1\n"), ("36006749855973 8192\n", f"{BIG}\n")),
        [P, P],
    ),
    Row(
        "an integer printed for an expected float: within tolerance, or not",
        "a, b = map(int, input().split())\nprint((a + b) // 2)\n",
        # 2 for 2.0 and 4 for 4.0 match (expected floats keep the tolerance); 1 for 1.5 does not
        stdio(("1 3\n", "2.0\n"), ("2 6\n", "4.0\n"), ("1 2\n", "1.5\n")),
        [P, P, F],
    ),
    Row(
        "exponent notation: 1e+05 for 100000 fails, for 1e5 or 100000.0 passes",
        "print(f'{10 ** int(input()):.0e}')\n",
        stdio(("5\n", "100000\n"), ("5\n", "1e5\n"), ("3\n", "1000.0\n")),
        [F, P, P],
    ),
    Row(
        "an explicit plus sign: +5 for 5 fails",
        "print(f'{int(input()):+d}')\n",
        stdio(("5\n", "5\n"), ("-5\n", "-5\n")),
        [F, P],
    ),
    Row(
        "leading zeros: 007 for 7 fails, for 007 passes",
        "print(f'{int(input()):03d}')\n",
        stdio(("7\n", "7\n"), ("7\n", "007\n")),
        [F, P],
    ),
    Row(
        "negative zero: -0 for 0 fails; -0.000 for 0.000 is a float within tolerance",
        "x, d = input().split()\nprint(f'{float(x):.{int(d)}f}')\n",
        stdio(("-0.4 0\n", "0\n"), ("-0.0000001 3\n", "0.000\n"), ("-2.5 1\n", "-2.5\n")),
        [F, P, P],
    ),
    Row(
        "a huge integer (2386 digits), exact",
        "print(3 ** int(input()))\n",
        stdio(("5000\n", f"{3**5000}\n"), ("5000\n", f"{3**5000 + 1}\n")),
        [P, F],
    ),
    Row(
        "a huge integer answer printed as a float",
        "print(3 ** int(input()) / 1)\n",
        stdio(("30\n", "205891132094649\n"), ("0\n", "1\n")),  # prints 205891132094649.0, then 1.0
        [F, F],
    ),
    Row(
        "negative numbers: -5 -5.0 against three expectations",
        "a = int(input())\nprint(a // 2, a / 2)\n",
        # identical text; -5.0 for an expected integer -5; -5 for an expected float -5.0
        stdio(("-10\n", "-5 -5.0\n"), ("-10\n", "-5 -5\n"), ("-10\n", "-5.0 -5.0\n")),
        [P, F, P],
    ),
    Row(
        "call-based: a float returned for an integer answer",
        "def area(a, b):\n    return a * b / 2\n",
        call("area", ([1, 2], 1), ([36006749855973, 8192], BIG), ([1, 3], 1.5)),
        [F, F, P],
    ),
    Row(
        "call-based: integers returned, one for an expected float",
        "def area(a, b):\n    return a * b // 2\n",
        call("area", ([1, 2], 1), ([36006749855973, 8192], BIG), ([1, 4], 2.0)),
        [P, P, P],
    ),
]

ROWS = THREADS + RECURSION + AT_EXIT + BUFFERED + NUMBERS
IDS = [r.name for r in ROWS]

# Threads open no way around the limits: hand-worked statuses, in the sandbox only (never on the host).
ADD = stdio(("1 2\n", "3\n"))
THREAD_LIMITS = [
    Row(
        "thread bomb (pids and address-space limits: can't start new thread)",
        "import threading, time\n"
        "while True:\n    threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n",
        ADD,
        ["runtime_error"],
    ),
    Row(
        "threading.stack_size(2**28) for 4 threads: 1 GiB of stacks in a 512 MiB address space",
        "import threading, time\nthreading.stack_size(2 ** 28)\n"
        "for _ in range(4):\n    threading.Thread(target=time.sleep, args=(0.5,)).start()\nprint(3)\n",
        ADD,
        ["runtime_error"],
    ),
    Row(
        "memory hog across 8 threads, then the main thread",
        "import threading\nl = []\nstarted = threading.Barrier(8)\n"
        "def hog():\n    started.wait()\n    while True:\n        l.append(bytearray(10 ** 6))\n"
        "ts = [threading.Thread(target=hog) for _ in range(8)]\n"
        "for t in ts:\n    t.start()\n"
        "for t in ts:\n    t.join()\n"
        "l.append(bytearray(10 ** 8))\nprint(3)\n",
        ADD,
        ["memory_exceeded"],
    ),
]


def test_the_rows_are_many_and_named_once():
    assert len(IDS) == len(set(IDS)) and len(ROWS) >= 23
    for r in ROWS:
        assert len(r.expect) == len(parse_tests(r.tests)), r.name


# ----------------------------------------------------------------------------------------- host

DRIVER = "import json, sys\nns = {'__name__': '__main__'}\nexec(open(sys.argv[1]).read(), ns)\n"
DRIVER += "print(json.dumps(ns[sys.argv[2]](*json.loads(sys.stdin.read()))))\n"


def _host_limits(stack_mb: int | None):
    def setup() -> None:
        if stack_mb:
            resource.setrlimit(resource.RLIMIT_STACK, (stack_mb << 20, resource.getrlimit(resource.RLIMIT_STACK)[1]))

    return setup


def host_verdicts(row: Row) -> list[str]:
    """The row run as plain host processes (``python3 prog.py``), judged by the sandbox's rules."""
    out = []
    with tempfile.TemporaryDirectory(prefix="restem-host-") as tmp:
        prog = os.path.join(tmp, "prog.py")
        with open(prog, "w") as f:
            f.write(row.program)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        for case in parse_tests(row.tests):
            if case.mode == "stdio":
                argv, stdin = [sys.executable, prog], case.stdin
            else:
                argv, stdin = [sys.executable, "-c", DRIVER, prog, case.fn_name], json.dumps(case.args)
            proc = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp,
                env=env,
                preexec_fn=_host_limits(row.host_stack_mb),
            )
            if proc.returncode != 0:
                out.append("runtime_error")
            elif case.mode == "stdio":
                out.append(P if stdout_matches(proc.stdout, case.expected) else F)
            else:
                out.append(P if value_matches(json.loads(proc.stdout), case.expected) else F)
    return out


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_on_the_host_the_verdicts_are_the_hand_worked_ones(row):
    assert host_verdicts(row) == row.expect


# -------------------------------------------------------------------------------------- sandbox


@pytest.fixture(scope="module")
def sandbox_results():
    with SandboxPool(workers=2) as pool:
        rows = ROWS + THREAD_LIMITS
        res = pool.run_programs([r.program for r in rows], [json.dumps(r.tests) for r in rows], timeout_s=5)
        # the pool is healthy afterwards: a correct program passes in the same containers
        (healthy,) = pool.run_programs(["print(sum(map(int, input().split())))"], [json.dumps(ADD)])
    return {r.name: x for r, x in zip(rows, res, strict=True)} | {"__healthy__": healthy}


@pytest.mark.docker
@pytest.mark.parametrize("row", ROWS + THREAD_LIMITS, ids=IDS + [r.name for r in THREAD_LIMITS])
def test_in_the_sandbox_the_verdicts_are_the_hand_worked_ones(sandbox_results, row):
    r = sandbox_results[row.name]
    assert r.tests == row.expect, r.detail
    assert r.reward == (1.0 if all(s == P for s in row.expect) else 0.0)


@pytest.mark.docker
def test_the_sandbox_is_healthy_after_the_rows(sandbox_results):
    assert sandbox_results["__healthy__"].status == P, sandbox_results["__healthy__"].detail
