"""Sandboxed execution of model-written Python programs against unit tests (APPS, HumanEval, MBPP).

Public API::

    from restem_pipeline.rewards.sandbox import run_programs, SandboxPool
    results = run_programs(programs, tests, backend="docker", workers=2, timeout_s=6)
    results[0].status, results[0].tests, results[0].reward, results[0].detail

``tests[i]`` is a ``Problem.tests`` JSON string (formats in :mod:`.compare`). Statuses, precedence and
the reward rule (``None`` for ``infra_error``: never score it as 0) are in :mod:`.results`. Inside
each container: the trusted supervisor in :mod:`.runner`, the program's side (a clean zygote and the
program's process, uid 65534) in :mod:`.zygote`, the test code's side (the checker, uid 65533) in
:mod:`.checker`, and the plain-data channel between them in :mod:`.plaindata`: the verdict is never
computed where the program runs. On the host: containers in :mod:`.workers`; the image in
:mod:`.image`; the ``restem verify code`` / ``restem sandbox build`` commands in :mod:`.cli`. The
``unsafe-local`` backend runs programs as plain host processes: development only.
"""

from restem_pipeline.rewards.sandbox.compare import TestSpecError, parse_tests, stdout_matches, value_matches
from restem_pipeline.rewards.sandbox.pool import BACKENDS, SandboxPool, run_programs
from restem_pipeline.rewards.sandbox.results import STATUSES, ProgramResult, overall_status
from restem_pipeline.rewards.sandbox.workers import InfraError, Limits

__all__ = [
    "BACKENDS",
    "STATUSES",
    "InfraError",
    "Limits",
    "ProgramResult",
    "SandboxPool",
    "TestSpecError",
    "overall_status",
    "parse_tests",
    "run_programs",
    "stdout_matches",
    "value_matches",
]
