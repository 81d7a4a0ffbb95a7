"""The trusted checker: runs a test's code in its own process and calls the program only through data.

Runs inside the sandbox image (standard library only), forked from the runner for every call-based
or assert-style test. It drops to uid 65533 (a different user from the program's 65534, so the
program can neither signal it nor read its memory; it is also non-dumpable), blocks every signal
it can, and runs the test code (``assert f(x) == y``, ``check(candidate)``, the HumanEval+/MBPP+
harness) in a namespace of its own with its own builtins. The names the tests call that the
program defines (the entry point first) are :class:`Proxy` objects: a call sends the arguments as
plain data to the program's process and returns the decoded reply, so equality, ``isinstance`` and
every comparison run on real builtin values, here. Trusted setup code (HumanEval's prompt, MBPP's
``test_setup_code``) runs here too, so a helper the tests call is the data set's, not the program's.

Time: each call's CPU time is read from ``/proc/<pid>/stat`` of the program; a harness can set a
per-call CPU limit (``_restem.call_limit_s``: evalplus' max(4 s, 4 x the reference's time)); a call
that waits past its wall-clock backstop is judged by :func:`timeout_or_overload`. The verdict goes
to the runner on a pipe only this process holds: ``ok``, ``fail``, ``runtime_error``, ``timeout``,
``gone`` (the program's process ended; the runner classifies its exit) or ``overloaded``.

Not covered: tests that compare objects the program built (they cannot be compared as data and fail,
like the old in-process guard); tests that rely on sharing one mutable object with the program (the
program gets a copy of each argument, as evalplus' deep copies do).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import os
import resource
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plaindata  # noqa: E402

CHECKER_UID = 65533
PROGRAM_UID = 65534
CHECKER_EXTRA_MB = 256  # the checker's address space: the program's limit + this
MAX_REPLY = 64 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


class CandidateGone(BaseException):
    """The program's process closed its reply channel (exited, crashed, was killed)."""


class CallTimeout(BaseException):
    def __init__(self, verdict: dict):
        super().__init__(verdict["detail"])
        self.verdict = verdict


class Unsupported(BaseException):
    """The test does something the data-only channel cannot carry (says nothing about the program)."""


class CandidateRaised(Exception):
    """An exception the program raised that is not a builtin exception type."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_delay_seconds(pid: int) -> float:
    """Time the process spent runnable but waiting for a CPU (schedstat), 0.0 where unknown."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def program_cpu_seconds(pid: int, in_container: bool) -> float:
    """CPU time of the program's processes: in the container every process of the program's uid
    (its children included), elsewhere the one process."""
    if not in_container:
        return cpu_seconds(pid)
    total = 0.0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                mine = os.stat(f"/proc/{d}").st_uid == PROGRAM_UID
            except OSError:
                continue
            if mine:
                total += cpu_seconds(int(d))
    return total


def timeout_or_overload(pid: int, wall_s: float, tree_cpu_s: float, what: str) -> dict:
    """A wall-clock backstop was hit: the program's fault (its processes kept a CPU busy, or it
    slept) or the host's (it was runnable but waited for a CPU for over a third of the time while
    its own processes used less than a third of the wall time)."""
    waited = run_delay_seconds(pid)
    if waited > wall_s / 3 and tree_cpu_s < wall_s / 3:
        return {
            "status": "overloaded",
            "detail": f"{what}: host overloaded (waited {waited:.1f}s of {wall_s:.1f}s for a CPU)",
        }
    return {"status": "timeout", "detail": f"{what}: wall-clock limit {wall_s:.1f}s (CPU {tree_cpu_s:.2f}s)"}


class Harness:
    """What test code may set (as ``_restem``): ``call_limit_s``, the CPU seconds each following call
    may use (None: no per-call limit), and ``budget_s``, the program's CPU seconds for the whole test
    (the request's ``timeout_s`` unless raised; never above ``HARD_CAP`` times it, the rlimit)."""

    HARD_CAP = 10

    def __init__(self, budget_s: float):
        self.call_limit_s: float | None = None
        self._base = budget_s
        self._budget = budget_s

    @property
    def budget_s(self) -> float:
        return self._budget

    @budget_s.setter
    def budget_s(self, value: float) -> None:
        self._budget = min(max(float(value), self._base), self.HARD_CAP * self._base)


class Channel:
    def __init__(self, call_w: int, reply_r: int, pid: int, wall_s: float, harness: Harness, in_container: bool):
        self.call_w, self.reply_r, self.pid, self.wall_s, self.harness = call_w, reply_r, pid, wall_s, harness
        self.in_container = in_container
        self.raised = False
        self.calls = 0
        self.waited_s = 0.0  # wall time spent waiting for the program, over all calls
        self.classes: dict = {}  # the test's namespace: its (trusted) classes rebuild returned objects
        self.reply_sizes: list[int] = []

    def request(self, msg: dict):
        self.calls += 1
        try:
            plaindata.write_frame(self.call_w, msg)
        except OSError:
            raise CandidateGone() from None
        reply = self.wait_reply(f"call #{self.calls}")
        if "ok" in reply:
            return plaindata.decode(reply["ok"], classes=self.classes, mirror=True)
        if "raised" in reply:
            self.raised = True
            name, text = str(reply.get("raised")), str(reply.get("msg", ""))[:300]
            cls = getattr(builtins, name, None)
            if isinstance(cls, type) and issubclass(cls, Exception):
                raise cls(text)
            raise CandidateRaised(f"{name}: {text}")
        raise plaindata.NotPlainData("malformed reply from the program")

    def wait_reply(self, what: str) -> dict:
        limit = self.harness.call_limit_s
        cpu0, t0 = cpu_seconds(self.pid), time.monotonic()

        def poll() -> None:
            total = cpu_seconds(self.pid)
            used = total - cpu0
            if limit is not None and used > limit:
                raise CallTimeout(
                    {"status": "timeout", "detail": f"{what}: CPU {used:.2f}s over its limit {limit:.2f}s"}
                )
            # encoding a reply costs the program CPU the reference never paid: 0.2 s per MB allowed
            budget = self.harness.budget_s + 0.2 * sum(self.reply_sizes) / 1e6
            if total > budget:
                raise CallTimeout(
                    {"status": "timeout", "detail": f"{what}: the test's CPU budget {budget:.1f}s is spent"}
                )
            wall = time.monotonic() - t0
            backstop = self.wall_s if limit is None else max(3 * limit, limit + 5)
            if wall > backstop or self.waited_s + wall > max(self.wall_s, 3 * budget):
                tree = program_cpu_seconds(self.pid, self.in_container)
                raise CallTimeout(timeout_or_overload(self.pid, wall, tree, what))

        try:
            reply = plaindata.read_frame(self.reply_r, MAX_REPLY, poll=poll, sizes=self.reply_sizes)
        except plaindata.FrameError as e:
            if str(e).startswith("a message of"):
                raise CallTimeout({"status": "output_limit", "detail": f"{what}: its answer is {e}"}) from None
            raise plaindata.NotPlainData(f"{what}: {e}") from None
        finally:
            self.waited_s += time.monotonic() - t0
        if reply is None:
            raise CandidateGone()
        if type(reply) is not dict:
            raise plaindata.NotPlainData(f"{what}: malformed reply")
        return reply


class Proxy:
    """Stands for a function (or handle) in the program's process; calling it sends data there."""

    __slots__ = ("_ch", "_msg", "__name__")

    def __init__(self, channel: Channel, msg: dict, name: str):
        self._ch, self._msg, self.__name__ = channel, msg, name

    def __call__(self, *args, **kwargs):
        try:
            data = {"args": plaindata.encode(list(args)), "kwargs": plaindata.encode(dict(kwargs))}
        except plaindata.NotPlainData as e:
            raise Unsupported(f"the test passes {self.__name__} an argument that is not data: {e}") from None
        return self._ch.request({**self._msg, "op": "call", **data})

    def __repr__(self) -> str:
        return f"<program function {self.__name__}>"


def referenced_names(*trees: ast.AST) -> set[str]:
    return {node.id for tree in trees for node in ast.walk(tree) if isinstance(node, ast.Name)}


def check(req: dict, ch: Channel) -> dict:
    """Run one test; return the verdict (see module docstring)."""
    loaded = ch.wait_reply("loading the program")
    names = loaded.get("loaded")
    if not isinstance(names, list):
        raise plaindata.NotPlainData("malformed first message from the program")
    if req["mode"] == "call":
        value = ch.request(
            {"op": "call", "name": req["fn_name"], "solution": True, "args": plaindata.encode(list(req["args"]))}
        )
        return {"status": "ok", "result": plaindata.to_json(value)}
    ns: dict = {"__name__": "__main__", "__builtins__": builtins, "_restem": ch.harness}
    ch.classes = ns
    setup, tests, entry = req.get("setup_code") or "", req["test_code"], req.get("entry_point")
    test_tree = compile(tests, "<tests>", "exec", dont_inherit=True)
    test_ast = ast.parse(tests)  # parsed once: the names it uses, and whether it defines check()
    used = referenced_names(ast.parse(setup), test_ast)
    # Standard-library modules the program imported and the tests use (``sys.getsizeof``): our own.
    modules = loaded.get("modules") if isinstance(loaded.get("modules"), dict) else {}
    for name, mod in modules.items():
        if name in used and isinstance(mod, str) and mod.split(".")[0] in sys.stdlib_module_names:
            ns[name] = importlib.import_module(mod)
    # What else the tests call that only the program defines goes to the program (trusted setup,
    # run next, replaces any of them it defines itself: HumanEval's helpers are the data set's).
    for name in used & set(names):
        if not hasattr(builtins, name):
            ns[name] = Proxy(ch, {"name": name}, name)
    if setup:
        exec(compile(setup, "<setup>", "exec", dont_inherit=True), ns)
    candidate = None
    if entry:
        if entry not in names:
            return {"status": "runtime_error", "detail": f"program defines no function {entry!r}"}
        ns[entry] = candidate = Proxy(ch, {"name": entry}, entry)
    exec(test_tree, ns)
    if candidate is not None and _defines_check(test_ast):
        ns["check"](candidate)  # the entry point may itself be named check (MBPP 56)
    return {"status": "ok", "done": True}


def _defines_check(tree: ast.Module) -> bool:
    return any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body)


def classify(e: BaseException, ch: Channel) -> dict:
    if isinstance(e, CallTimeout):
        return e.verdict
    if isinstance(e, CandidateGone):
        return {"status": "gone"}
    if isinstance(e, Unsupported):
        return {"status": "unsupported", "detail": str(e)[:500]}
    if isinstance(e, plaindata.NotPlainData):
        return {"status": "fail", "detail": str(e)[:500]}
    detail = f"{type(e).__name__}: {e}"[:500]
    if isinstance(e, AssertionError) and not ch.raised:
        return {"status": "fail", "detail": detail}
    if isinstance(e, MemoryError):
        return {"status": "fail", "detail": f"the test ran out of memory on the program's answers: {detail}"}
    return {"status": "runtime_error", "detail": detail}


def run(req: dict, call_w: int, reply_r: int, verdict_w: int, pid: int) -> None:
    """Entry point in the forked checker process; never returns."""
    verdict: dict = {"status": "runtime_error", "detail": "checker did not finish"}
    harness = Harness(float(req["timeout_s"]))
    ch = Channel(call_w, reply_r, pid, float(req["wall_s"]), harness, bool(req.get("switch_user")))
    try:
        os.setsid()
        if req.get("switch_user"):
            os.setgroups([])
            os.setgid(CHECKER_UID)
            os.setuid(CHECKER_UID)
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        mem = (int(req["mem_mb"]) + CHECKER_EXTRA_MB) << 20  # below the container's limit (workers.py)
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        cpu = int(Harness.HARD_CAP * (float(req["wall_s"]) + 1))  # test code that never ends
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        os.chdir("/")
        verdict = check(req, ch)
    except BaseException as e:  # noqa: BLE001 - every ending of the test maps to a verdict
        verdict = classify(e, ch)
    try:
        plaindata.write_frame(verdict_w, verdict)
    finally:
        os._exit(0)
