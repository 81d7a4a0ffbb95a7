"""Wrong programs that try to forge a pass, and correct programs that used to be failed (Docker sandbox).

Every forgery is a wrong program: it must end with a scored failure (never ``pass``, never
``infra_error``, which would take it out of pass@k's denominator). Every "correct" row is a right
program that the in-process harness failed (wrapper renaming its function, doubled recursion depth,
namedtuples, lost thread output, skipped atexit handlers, one clock for reference and candidate).
The tests the forgeries face include a secret only the test code holds (``SECRET``): a program can
pass them only by reading the tests, which live in the checker, another user's process.
Run ``python tests/test_sandbox_forgery.py`` to print the table with observed statuses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from restem_pipeline.data import code_problems as cp
from restem_pipeline.data.code_plus import plus_test_code
from restem_pipeline.rewards.sandbox import SandboxPool

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SECRET = 731946
# assert-style (MBPP) and check(candidate) (HumanEval) tests that only a reader of the tests passes
MB = json.dumps(
    {"test_code": f"assert secret(1) == {SECRET}\nassert secret(2) == {SECRET + 1}", "entry_point": "secret"}
)
HE = json.dumps(
    {
        "test_code": "def check(candidate):\n"
        f"    assert candidate(1) == {SECRET}\n    assert candidate(2) == {SECRET + 1}\n",
        "entry_point": "secret",
    }
)
CALL = json.dumps({"inputs": [[1], [2]], "outputs": [SECRET, SECRET + 1], "fn_name": "secret"})
IO = json.dumps({"inputs": ["1\n"], "outputs": [f"{SECRET}\n"]})
# the plus harness: reference = x + SECRET
PLUS = json.dumps(
    {
        "test_code": plus_test_code(f"def secret(x):\n    return x + {SECRET}\n", "secret", [[1], [2], [3]], 0.0),
        "entry_point": "secret",
    }
)
FLOATS = json.dumps(
    {
        "test_code": "import math\nassert math.isclose(secret(1), 0.5)\nassert abs(secret(2) - 0.25) < 1e-9",
        "entry_point": "secret",
    }
)
WRONG = "def secret(x):\n    return 0\n"
FAKE = (
    'FAKES = [b\'{"status": "ok", "done": true}\', b\'{"status": "infra_error"}\', '
    'b\'\\x00\\x00\\x00\\x1e{"status":"ok","done":true}\', b\'\\x00\\x00\\x00\\x07{"ok":3}\']\n'
    "def spray():\n"
    "    import os\n"
    "    for fd in range(3, 1024):\n"
    "        for f in FAKES:\n"
    "            try: os.write(fd, f)\n"
    "            except OSError: pass\n"
)
FIND_SECRET = (
    "import gc, os, sys\n"
    "def _look():\n"
    "    seen = []\n"
    "    for o in gc.get_objects():\n"
    "        if isinstance(o, dict): seen += [str(v) for v in o.values() if isinstance(v, str)]\n"
    "    f = sys._getframe()\n"
    "    while f:\n"
    "        seen += [repr(v) for v in f.f_locals.values()] + [repr(v) for v in f.f_globals.values()]\n"
    "        f = f.f_back\n"
    "    for pid in os.listdir('/proc'):\n"
    "        for what in ('cmdline', 'environ', 'mem'):\n"
    "            try: seen.append(open(f'/proc/{pid}/{what}', 'rb').read(1 << 20).decode('latin-1'))\n"
    "            except Exception: pass\n"
    "    for root, _, files in os.walk('/'):\n"
    "        if root.startswith(('/proc', '/sys', '/usr', '/dev')): continue\n"
    "        for n in files:\n"
    "            try: seen.append(open(os.path.join(root, n), 'rb').read(1 << 16).decode('latin-1'))\n"
    "            except Exception: pass\n"
    "    import re\n"
    "    hits = [int(m) for s in seen for m in re.findall(r'== (\\d{6})', s)]\n"
    "    return min(hits) if hits else 0\n"
    "def secret(x):\n"
    "    return _look() + x - 1\n"
)

# (name, program, tests)
ONE_FAKE = (
    "def forge():\n    import os\n    for fd in range(3, 1024):\n"
    '        try: os.write(fd, b\'{"status": "ok", "done": true}\')\n'
    "        except OSError: pass\n    os._exit(0)\n"
)
PLUS_FLOAT = json.dumps(
    {
        "test_code": plus_test_code("def secret(x):\n    return x / 7\n", "secret", [[1], [2], [3]], 0.0),
        "entry_point": "secret",
    }
)
ABS = json.dumps({"test_code": "assert abs(secret(2) - 0.25) < 1e-9", "entry_point": "secret"})
ALL = json.dumps({"test_code": "assert all(secret(i) == 7 * i + 3 for i in range(3))", "entry_point": "secret"})

FORGERIES = [
    ("plainly wrong (control)", WRONG, MB),
    ("one success record on every descriptor, os._exit(0)", WRONG + ONE_FAKE + "forge()\n", MB),
    (
        "success record from a thread",
        WRONG + ONE_FAKE + "import threading, time\nthreading.Thread(target=forge).start()\ntime.sleep(1)\n",
        HE,
    ),
    (
        "success record from a signal handler",
        WRONG + ONE_FAKE + "import signal, time\nsignal.signal(signal.SIGALRM, lambda *a: forge())\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.01)\ntime.sleep(1)\n",
        MB,
    ),
    (
        "success record from a forked child",
        WRONG + ONE_FAKE + "import os\npid = os.fork()\nif pid == 0:\n    forge()\nos.waitpid(pid, 0)\nos._exit(0)\n",
        HE,
    ),
    (
        "the runner's classifier replaced through __main__",
        "import __main__\nfor k in dir(__main__):\n    if 'classify' in k or 'exit_code' in k:\n"
        "        setattr(__main__, k, lambda *a, **kw: {'status': 'ok', 'done': True})\n"
        "def secret(x):\n    raise ValueError\n",
        MB,
    ),
    ("builtins.abs replaced", "import builtins\nbuiltins.abs = lambda x: 0\ndef secret(x):\n    return 9.0\n", ABS),
    ("builtins.all replaced", "import builtins\nbuiltins.all = lambda *a: True\n" + WRONG, ALL),
    ("math.isclose replaced (plus harness)", "import math\nmath.isclose = lambda *a, **k: True\n" + WRONG, PLUS_FLOAT),
    ("fake verdicts on every descriptor, os._exit(0)", FAKE + WRONG + "spray()\nimport os\nos._exit(0)\n", MB),
    ("fake verdicts from inside the call", FAKE + "def secret(x):\n    spray()\n    import os\n    os._exit(0)\n", HE),
    ("fake verdicts from a thread", FAKE + WRONG + "import threading\nthreading.Thread(target=spray).start()\n", MB),
    (
        "fake verdicts from a signal handler",
        FAKE + WRONG + "import signal\nsignal.signal(signal.SIGALRM, lambda *a: spray())\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.01)\n"
        "import time\ntime.sleep(0.1)\n",
        MB,
    ),
    (
        "fake verdicts from a forked child, later",
        FAKE + WRONG + "import os, time\nif os.fork() == 0:\n    time.sleep(0.3)\n    spray()\n    os._exit(0)\n",
        MB,
    ),
    (
        "background daemon writes after the test",
        FAKE + WRONG + "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        time.sleep(0.5)\n        spray()\n    os._exit(0)\n",
        HE,
    ),
    (
        "/dev/null over every descriptor",
        WRONG + "import os\nnull = os.open('/dev/null', os.O_RDWR)\nfor fd in range(3, 1024):\n"
        "    try: os.dup2(null, fd)\n    except OSError: pass\n",
        MB,
    ),
    ("atexit writes fake verdicts", FAKE + WRONG + "import atexit\natexit.register(spray)\n", HE),
    ("builtins.abs replaced", "import builtins\nbuiltins.abs = lambda x: 0\ndef secret(x):\n    return 9.0\n", FLOATS),
    (
        "builtins all/len/tuple/__import__ replaced",
        WRONG + "import builtins\nbuiltins.all = lambda *a: True\nbuiltins.len = lambda *a: 0\n"
        "builtins.tuple = lambda *a: ()\n_imp = builtins.__import__\n"
        "builtins.__import__ = lambda *a, **k: _imp(*a, **k)\n",
        MB,
    ),
    (
        "math.isclose, copy.deepcopy, json.loads replaced",
        "import math, copy, json\nmath.isclose = lambda *a, **k: True\ncopy.deepcopy = lambda x, *a: x\n"
        "json.loads = lambda *a, **k: [[1]]\ndef secret(x):\n    return 9.0\n",
        FLOATS,
    ),
    (
        "builtins.exec replaced (the reference becomes the candidate)",
        "import builtins\n_exec = builtins.exec\n"
        "def exec(src, g=None, l=None):\n"
        "    if g is not None and g.get('__name__') == '_reference':\n"
        "        g['secret'] = secret\n        return\n"
        "    return _exec(src, g, l)\nbuiltins.exec = exec\n" + WRONG,
        PLUS,
    ),
    (
        "the runner's modules and frames patched",
        WRONG + "import sys\nfor m in list(sys.modules.values()):\n"
        "    for k in ('encode', 'write_frame', 'check', 'classify'):\n"
        "        if hasattr(m, k):\n            try: setattr(m, k, lambda *a, **kw: {'status': 'ok', 'done': True})\n"
        "            except Exception: pass\n"
        "f = sys._getframe()\nwhile f:\n    for k, v in f.f_locals.items():\n"
        "        if isinstance(v, dict) and 'mode' in v: v['mode'] = 'stdio'\n    f = f.f_back\n",
        MB,
    ),
    (
        "trace, profile and audit hooks",
        WRONG
        + "import sys, threading\ndef t(frame, event, arg):\n    return None\nsys.settrace(t)\nsys.setprofile(t)\n"
        "threading.settrace(t)\nsys.addaudithook(lambda e, a: None)\n",
        HE,
    ),
    ("tests read out of memory, frames, /proc and disk", FIND_SECRET, MB),
    ("tests read out of memory (plus harness)", FIND_SECRET, PLUS),
    ("tests read out of memory (call-based)", FIND_SECRET, CALL),
    ("tests read out of memory (stdin/stdout)", FIND_SECRET + "print(secret(1))\n", IO),
    (
        "stop or kill every other process",
        WRONG + "import os, signal\nfor p in os.listdir('/proc'):\n    if p.isdigit() and int(p) != os.getpid():\n"
        "        for s in (signal.SIGSTOP, signal.SIGKILL):\n            try: os.kill(int(p), s)\n"
        "            except OSError: pass\n",
        MB,
    ),
    (
        "BaseException subclass from the candidate",
        "class X(BaseException):\n    pass\ndef secret(x):\n    raise X()\n",
        HE,
    ),
    ("KeyboardInterrupt from the candidate", "def secret(x):\n    raise KeyboardInterrupt\n", MB),
    ("AssertionError from the candidate", "def secret(x):\n    raise AssertionError\n", HE),
    ("SystemExit(0) from the candidate", "def secret(x):\n    raise SystemExit(0)\n", MB),
    (
        "object with __eq__ always True",
        "class E:\n    def __eq__(self, o): return True\ndef secret(x):\n    return E()\n",
        MB,
    ),
    (
        "int subclass with __eq__ True",
        "class E(int):\n    def __eq__(self, o): return True\ndef secret(x):\n    return E(0)\n",
        HE,
    ),
    (
        "str subclass with __eq__ True",
        "class E(str):\n    def __eq__(self, o): return True\ndef secret(x):\n    return E('')\n",
        CALL,
    ),
    (
        "metaclass whose equality fools a type check",
        "class M(type):\n    def __eq__(cls, o): return True\n    __hash__ = type.__hash__\n"
        "class E(metaclass=M):\n    def __eq__(self, o): return True\n    __hash__ = object.__hash__\n"
        "def secret(x):\n    return E()\n",
        MB,
    ),
    (
        "__class__ spoofed as int",
        "class E:\n    __class__ = int\n    def __eq__(self, o): return True\ndef secret(x):\n    return E()\n",
        PLUS,
    ),
    ("float within 1e-6 of an integer answer", f"def secret(x):\n    return {SECRET} + x - 1 + 1e-7\n", CALL),
    ("recursion bomb in the returned value", "def secret(x):\n    l = []\n    l.append(l)\n    return l\n", MB),
]


def _helper_forgery():
    """HumanEval/38: the tests call the prompt's encode_cyclic; the program redefines both as identity."""
    (p,) = [q for q in cp.load_humaneval(DATA / "humaneval" / "HumanEval.jsonl.gz") if q.id == "HumanEval/38"]
    prog = p.prompt + "    return s\n\n\ndef encode_cyclic(s: str):\n    return s\n"
    return ("redefined helper the tests call (HumanEval/38)", prog, p.tests)


SLOW_REF = "def slow(n):\n    t = 0\n    for i in range(n * 3000000):\n        t += i % 7\n    return t\n"
CORRECT = [
    (
        "memoized fib keeps its cache on the function",
        "def fib(n):\n    if n not in fib.cache:\n        fib.cache[n] = fib(n - 1) + fib(n - 2)\n"
        "    return fib.cache[n]\nfib.cache = {0: 0, 1: 1}\n",
        json.dumps({"test_code": "assert fib(80) == 23416728348467685", "entry_point": "fib"}),
    ),
    (
        "recursion 900 deep",
        "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n",
        json.dumps({"test_code": "def check(candidate):\n    assert candidate(900) == 900\n", "entry_point": "depth"}),
    ),
    (
        "lru_cache recursion 100000 deep with a raised limit",
        "import sys\nfrom functools import lru_cache\nsys.setrecursionlimit(300000)\n@lru_cache(None)\n"
        "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n",
        json.dumps({"test_code": "assert depth(100000) == 100000", "entry_point": "depth"}),
    ),
    (
        "namedtuple answer",
        "from collections import namedtuple\nP = namedtuple('P', 'x y')\ndef pair(a):\n    return P(a, a + 1)\n",
        json.dumps({"test_code": "assert pair(1) == (1, 2)", "entry_point": "pair"}),
    ),
    (
        "object built by the tests from the program's class (MBPP Pair)",
        "class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
        "def longest(pairs):\n    return max(p.b - p.a for p in pairs)\n",
        json.dumps({"test_code": "assert longest([Pair(5, 24), Pair(1, 3)]) == 19", "entry_point": "longest"}),
    ),
    (
        "a builtin type as an argument",
        "def drop(t, ty):\n    return [x for x in t if not isinstance(x, ty)]\n",
        json.dumps({"test_code": "assert drop((4, 7.7, 'a'), int) == [7.7, 'a']", "entry_point": "drop"}),
    ),
    (
        "output printed by a non-daemon thread after the main code",
        "import threading, time\ndef late():\n    time.sleep(0.2)\n    print(3)\n"
        "threading.Thread(target=late).start()\n",
        json.dumps({"inputs": [""], "outputs": ["3\n"]}),
    ),
    (
        "output printed by an atexit handler",
        "import atexit\natexit.register(lambda: print(3))\n",
        json.dumps({"inputs": [""], "outputs": ["3\n"]}),
    ),
    (
        "buffered output flushed at exit",
        "import io, sys\nsys.stdout = io.TextIOWrapper(sys.stdout.buffer, write_through=False)\n"
        "sys.stdout.write('3')\n",
        json.dumps({"inputs": [""], "outputs": ["3\n"]}),
    ),
    (
        "plus test whose reference is slow (per-input limits from the reference's time)",
        SLOW_REF,
        json.dumps(
            {"test_code": plus_test_code(SLOW_REF, "slow", [[n] for n in range(1, 9)], 0.0), "entry_point": "slow"}
        ),
    ),
]


def run_rows(pool: SandboxPool, rows: list) -> list:
    return pool.run_programs([r[1] for r in rows], [r[2] for r in rows], timeout_s=2)


@pytest.fixture(scope="module")
def results():
    rows = [*FORGERIES, _helper_forgery(), *CORRECT]
    with SandboxPool(workers=2) as pool:
        out = run_rows(pool, rows)
        # the pool is still healthy afterwards: a correct program passes in the same containers
        (ok,) = pool.run_programs(["def secret(x):\n    return x + 731945\n"], [MB])
    return {r[0]: res for r, res in zip(rows, out, strict=True)} | {"__healthy__": ok}


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("name", [f[0] for f in FORGERIES] + ["redefined helper the tests call (HumanEval/38)"])
def test_forgery_is_a_scored_failure(results, name):
    r = results[name]
    assert r.status not in ("pass", "infra_error"), (r.status, r.detail)
    assert r.reward == 0.0


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("name", [c[0] for c in CORRECT])
def test_correct_program_passes(results, name):
    r = results[name]
    assert r.status == "pass", r.detail


@pytest.mark.docker
@pytest.mark.slow
def test_sandbox_healthy_after_the_forgeries(results):
    assert results["__healthy__"].status == "pass", results["__healthy__"].detail


if __name__ == "__main__":
    rows = [*FORGERIES, _helper_forgery(), *CORRECT]
    with SandboxPool(workers=2) as pool:
        for row, res in zip(rows, run_rows(pool, rows), strict=True):
            print(f"{row[0][:70]:72s} {res.status:15s} {res.detail[:60]}")
