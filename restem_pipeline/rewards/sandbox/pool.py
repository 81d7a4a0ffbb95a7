"""The batch API: a context-managed pool of warm workers and ``run_programs``.

Each program runs all its tests, one after the other, on one worker (one container); workers run
programs in parallel. Before each test the runner forks a fresh child, and after it every process
is killed and ``/tmp`` wiped, so programs sharing a container never see each other's files. An
infrastructure failure (engine call, container start, runner silence past its deadline + slack)
replaces the worker and retries the test up to ``retries`` times; after that the test is
``infra_error`` and the program's reward is ``None`` (see :mod:`results`).

Not covered here: image building (:mod:`image`), comparison rules (:mod:`compare`).
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

from restem_pipeline.rewards.sandbox.compare import TestCase, TestSpecError, parse_tests
from restem_pipeline.rewards.sandbox.results import SKIPPED, ProgramResult, TestResult, judge, overall_status
from restem_pipeline.rewards.sandbox.workers import (
    ENGINE_ERRORS,
    DockerWorker,
    InfraError,
    Limits,
    LocalWorker,
    remove_stale_containers,
)

BACKENDS = ("docker", "unsafe-local")
DEFAULT_TIMEOUT_S = 6.0
HOST_SLACK_S = 10.0


def wall_clock_backstop(cpu_s: float) -> float:
    """The wall-clock limit behind a test's CPU-time limit: generous, so a busy host does not fail
    correct programs (and when it does, the runner reports the host, not the program)."""
    return max(3 * cpu_s, cpu_s + 5)


class SandboxPool:
    """Warm workers reusable across batches::

    with SandboxPool(workers=2) as pool:
        results = pool.run_programs(programs, tests, timeout_s=4)
    """

    def __init__(
        self,
        backend: str = "docker",
        workers: int = 2,
        *,
        image: str | None = None,
        limits: Limits | None = None,
        retries: int = 2,
        engine_timeout_s: float = 60.0,
        host_slack_s: float = HOST_SLACK_S,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.backend, self.n_workers, self.limits = backend, workers, limits or Limits()
        self.retries, self.engine_timeout_s, self.host_slack_s = retries, engine_timeout_s, host_slack_s
        self.image = image
        self._client = None
        self._idle: queue.Queue = queue.Queue()
        self._all: set = set()
        self._lock = threading.Lock()
        self._closed = True

    # --------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> SandboxPool:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        if self.backend == "docker":
            import docker

            from restem_pipeline.rewards.sandbox.image import image_exists, image_ref

            try:
                self._client = docker.from_env(timeout=self.engine_timeout_s)
                self._client.ping()
                remove_stale_containers(self._client)
            except ENGINE_ERRORS as e:
                raise InfraError(f"Docker engine not reachable ({e}); run scripts/setup_docker.sh") from e
            self.image = self.image or image_ref()
            if not image_exists(self._client, self.image):
                raise InfraError(f"sandbox image {self.image} is missing; run `restem sandbox build`")
        self._closed = False
        atexit.register(self.close)
        try:
            with ThreadPoolExecutor(self.n_workers) as ex:
                for w in ex.map(lambda _: self._new_worker(), range(self.n_workers)):
                    self._idle.put(w)
        except BaseException:
            self.close()  # no half-started pool leaves containers behind
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            workers, self._all = list(self._all), set()
        for w in workers:
            w.close()
        atexit.unregister(self.close)

    def container_ids(self) -> list[str]:
        """Ids of this pool's live containers (docker backend), for tests and diagnostics."""
        with self._lock:
            return [w.id for w in self._all if getattr(w, "id", None)]

    def _new_worker(self):
        if self.backend == "docker":
            w = DockerWorker(self._client, self.image, self.limits)
        else:
            w = LocalWorker(self.limits)
        with self._lock:
            self._all.add(w)
        return w

    def _discard(self, w) -> None:
        with self._lock:
            self._all.discard(w)
        w.close()

    # --------------------------------------------------------------------------------------- run

    def run_programs(
        self,
        programs: Sequence[str],
        tests: Sequence[str | dict],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        stop_on_fail: bool = False,
        progress: Callable[[int], None] | None = None,
        on_result: Callable[[int, ProgramResult], None] | None = None,
    ) -> list[ProgramResult]:
        """Run ``programs[i]`` against ``tests[i]`` (a ``Problem.tests`` JSON string); order kept.

        ``on_result(i, result)`` is called as each program finishes (from a worker thread), so a caller
        interrupted part-way (Ctrl-C) still holds the verdicts that were finished; pending programs
        are cancelled at the interruption.

        ``timeout_s`` is the CPU-time limit per test (the wall clock backs it up: 3x, at least +5 s).
        ``stop_on_fail`` skips a program's remaining tests after its first non-pass (faster for
        rewards; statuses then read ``skipped``).
        Malformed tests raise :class:`TestSpecError` before anything runs.
        """
        if len(programs) != len(tests):
            raise ValueError(f"{len(programs)} programs but {len(tests)} tests")
        if self._closed:
            raise RuntimeError("SandboxPool is not open: use it as a context manager")
        cases = [parse_tests(t) for t in tests]
        for i, p in enumerate(programs):
            if not isinstance(p, str):
                raise TestSpecError(f"programs[{i}]", f"expected a string, got {type(p).__name__}")

        def job(i: int) -> ProgramResult:
            worker = self._idle.get()
            try:
                result, worker = self._run_one(worker, programs[i], cases[i], timeout_s, stop_on_fail)
            finally:
                self._idle.put(worker)
            if on_result and not self._closed:  # after a close, a verdict may be the close's own infra_error
                on_result(i, result)
            if progress:
                progress(1)
            return result

        ex = ThreadPoolExecutor(self.n_workers)
        try:
            futures = [ex.submit(job, i) for i in range(len(programs))]
            pending = set(futures)
            while pending:  # wake often: a signal (Ctrl-C) caught by a worker thread runs at the next wake-up
                _, pending = wait(pending, timeout=0.2)
            return [f.result() for f in futures]
        except BaseException:  # KeyboardInterrupt included: run nothing more; the pool's exit stops workers
            ex.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            ex.shutdown(wait=False)

    def _run_one(self, worker, program: str, cases: list[TestCase], timeout_s: float, stop_on_fail: bool):
        t0 = time.monotonic()
        results: list[TestResult] = []
        for case in cases:
            if stop_on_fail and results and results[-1].status != "pass":
                results.append(TestResult(SKIPPED, "not run: an earlier test did not pass"))
                continue
            req = self._request(program, case, timeout_s)
            # the runner answers within its own deadline: the backstop, or 10 x it + 10 s with a checker
            runner_s = req["wall_s"] if case.mode == "stdio" else 10 * req["wall_s"] + 10
            resp, worker = self._call_with_retries(worker, req, runner_s + self.host_slack_s)
            results.append(judge(case, resp))
        statuses = [r.status for r in results]
        status = overall_status(statuses)
        detail = next(
            (f"test {i}: {r.detail}" for i, r in enumerate(results) if r.status == status and status != "pass"), ""
        )
        return ProgramResult(status, statuses, detail, time.monotonic() - t0, [r.detail for r in results]), worker

    def _request(self, program: str, case: TestCase, timeout_s: float) -> dict:
        lim = self.limits
        req = {
            "op": "run",
            "mode": case.mode,
            "program": program,
            "timeout_s": timeout_s,
            "wall_s": wall_clock_backstop(timeout_s),
            "mem_mb": lim.mem_mb,
            "output_limit": lim.output_limit,
            "file_limit": lim.file_limit,
        }
        if case.mode == "stdio":
            req["stdin"] = case.stdin
        elif case.mode == "call":
            req.update(fn_name=case.fn_name, args=case.args)
        else:
            req.update(test_code=case.test_code, entry_point=case.entry_point, setup_code=case.setup_code)
        return req

    def _call_with_retries(self, worker, req: dict, deadline_s: float):
        errors = []
        for _ in range(self.retries + 1):
            if self._closed:  # closed under us (Ctrl-C): no new workers, no retries
                errors.append("the sandbox pool was closed")
                break
            try:
                if worker is None:
                    worker = self._new_worker()
                resp = worker.call(req, deadline_s)
                if resp.get("status") != "infra_error":
                    return resp, worker
                errors.append(str(resp.get("detail")))
            except InfraError as e:
                errors.append(str(e))
            if worker is not None:
                self._discard(worker)
                worker = None
        spare = _BrokenWorker("the sandbox pool was closed") if self._closed else None
        return {"status": "infra_error", "detail": "; ".join(errors)[-1000:]}, worker or spare or self._spare()

    def _spare(self):
        """A replacement worker after exhausted retries; a broken stand-in if the engine is down."""
        try:
            return self._new_worker()
        except InfraError as e:
            return _BrokenWorker(str(e))


class _BrokenWorker:
    """Stands in for a worker that could not be created; every call is an InfraError."""

    def __init__(self, reason: str):
        self.reason = reason

    def call(self, msg: dict, timeout_s: float) -> dict:
        raise InfraError(f"no sandbox worker: {self.reason}")

    def close(self) -> None:
        pass


def run_programs(
    programs: Sequence[str],
    tests: Sequence[str | dict],
    *,
    backend: str = "docker",
    workers: int = 2,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    stop_on_fail: bool = False,
    limits: Limits | None = None,
    image: str | None = None,
    retries: int = 2,
    progress: Callable[[int], None] | None = None,
    on_result: Callable[[int, ProgramResult], None] | None = None,
) -> list[ProgramResult]:
    """One-shot batch: open a pool, run, close. Reuse :class:`SandboxPool` across batches instead."""
    with SandboxPool(backend, workers, image=image, limits=limits, retries=retries) as pool:
        return pool.run_programs(
            programs, tests, timeout_s=timeout_s, stop_on_fail=stop_on_fail, progress=progress, on_result=on_result
        )
