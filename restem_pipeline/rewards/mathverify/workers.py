"""Run the symbolic grader in worker processes with a hard time bound per item, from any thread.

Covers: a pool of long-lived worker processes (``python -m restem_pipeline.rewards.mathverify.workers``)
that read one JSON job per line on stdin and answer one JSON line on stdout. The caller waits on the
pipes with ``selectors`` and a deadline per job; a job past its deadline gets its worker killed
(SIGKILL) and replaced, and comes back as ``timeout``. No ``signal.alarm``, no ``multiprocessing``
start-method pitfalls, so it works in worker threads, daemonic processes and Dagster's executors.
A worker's startup (importing sympy) does not count against a job's time. Workers are started only
when a job needs one (never at import), reused across calls, and end when the parent exits.

Does not cover: deciding anything (``grading`` and ``symbolic`` do, inside the worker), or the fast
in-process path (``api``). POSIX only (``selectors`` on pipes).
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT_S = 120.0
MEMORY_LIMIT_BYTES = 4 * 1024**3
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])


class WorkerStartError(RuntimeError):
    """A worker process could not be started (the Python environment is broken)."""


@dataclass(frozen=True)
class Job:
    predictions: tuple[str, ...]
    gold: str


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "restem_pipeline.rewards.mathverify.workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self.ready = False
        self.started = time.monotonic()
        self._buf = b""

    def send(self, job_id: int, job: Job) -> None:
        line = json.dumps({"id": job_id, "predictions": list(job.predictions), "gold": job.gold})
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def read_messages(self) -> list[dict] | None:
        """Complete messages available now; None when the worker has exited."""
        assert self.proc.stdout is not None
        chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
        if not chunk:
            return None
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class WorkerPool:
    """Worker processes shared by all callers; each ``run`` checks out its own workers."""

    def __init__(self, max_idle: int | None = None) -> None:
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self.max_idle = max_idle or max(2, os.cpu_count() or 2)
        self.killed = 0  # workers killed for running past a deadline (for tests and reports)

    def _checkout(self, n: int) -> list[_Worker]:
        with self._lock:
            taken = [w for w in self._idle[:n] if w.proc.poll() is None]
            del self._idle[:n]
        return taken + [_Worker() for _ in range(n - len(taken))]

    def _checkin(self, workers: list[_Worker]) -> None:
        with self._lock:
            for w in workers:
                if w.ready and w.proc.poll() is None and len(self._idle) < self.max_idle:
                    self._idle.append(w)
                else:
                    w.kill()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill()

    def run(self, jobs: list[Job], *, timeout_s: float, workers: int = 1) -> list[dict]:
        """One result dict per job, in order: ``{"status": ..., "reason": ...}``.

        ``status`` is what the worker's grader decided, ``"timeout"`` for a job past ``timeout_s``
        (its worker is killed and replaced), or ``"error"`` when the worker failed on the job.
        """
        if not jobs:
            return []
        results: list[dict | None] = [None] * len(jobs)
        pending = list(range(len(jobs)))[::-1]
        pool = self._checkout(max(1, min(workers, len(jobs))))
        busy: dict[_Worker, tuple[int, float]] = {}
        selector = selectors.DefaultSelector()
        for w in pool:
            selector.register(w.proc.stdout, selectors.EVENT_READ, w)
        try:
            while pending or busy:
                now = time.monotonic()
                for w in pool:
                    if w.ready and w not in busy and pending:
                        job_id = pending.pop()
                        w.send(job_id, jobs[job_id])
                        busy[w] = (job_id, now + timeout_s)
                deadlines = [d for _, d in busy.values()]
                deadlines += [w.started + STARTUP_TIMEOUT_S for w in pool if not w.ready]
                wait = max(0.0, min(deadlines) - now) if deadlines else None
                for key, _ in selector.select(wait):
                    w = key.data
                    messages = w.read_messages()
                    if messages is None:
                        self._replace(w, pool, selector, busy, results, "error", "worker process died")
                        continue
                    for msg in messages:
                        if msg.get("ready"):
                            w.ready = True
                        elif w in busy and msg.get("id") == busy[w][0]:
                            results[busy.pop(w)[0]] = {"status": msg["status"], "reason": msg["reason"]}
                now = time.monotonic()
                for w in list(pool):
                    if w in busy and busy[w][1] <= now:
                        self.killed += 1
                        self._replace(w, pool, selector, busy, results, "timeout", f"over {timeout_s:g}s")
                    elif not w.ready and w.started + STARTUP_TIMEOUT_S <= now:
                        raise WorkerStartError(f"math worker did not start within {STARTUP_TIMEOUT_S:g}s")
        finally:
            selector.close()
            self._checkin([w for w in pool if w not in busy])
            for w in busy:
                w.kill()
        return [r if r is not None else {"status": "error", "reason": "no result"} for r in results]

    def _replace(self, w, pool, selector, busy, results, status: str, reason: str) -> None:
        selector.unregister(w.proc.stdout)
        w.kill()
        if w in busy:
            results[busy.pop(w)[0]] = {"status": status, "reason": reason}
        elif not w.ready:
            raise WorkerStartError("math worker exited during startup")
        fresh = _Worker()
        pool[pool.index(w)] = fresh
        selector.register(fresh.proc.stdout, selectors.EVENT_READ, fresh)


_default_pool: WorkerPool | None = None
_default_lock = threading.Lock()


def default_pool() -> WorkerPool:
    """The process-wide pool (created on first use; its workers are killed at exit)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            _default_pool = WorkerPool()
            atexit.register(_default_pool.close)
        return _default_pool


def _serve() -> None:
    """Worker main loop: one JSON job per stdin line, one JSON result per stdout line."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    from restem_pipeline.rewards.mathverify.grading import Grader, judge_answers
    from restem_pipeline.rewards.mathverify.symbolic import SympyBackend

    grader = Grader(SympyBackend())
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        job = json.loads(line)
        try:
            status, reason = judge_answers(job["predictions"], job["gold"], grader)
        except Exception as err:  # reported as an "error" status (never a reward), worker lives on
            status, reason = "error", f"{type(err).__name__}: {err}"[:500]
        out.write(json.dumps({"id": job["id"], "status": status, "reason": reason}) + "\n")
        out.flush()


if __name__ == "__main__":
    _serve()
