"""``restem verify code IN.jsonl [-o OUT.jsonl]`` and ``restem sandbox build``.

``verify code`` reads JSON lines with ``program`` (Python source) and ``tests`` (an APPS
``input_output`` object, or ``{"test_code": ..., "entry_point": ...}``; an object or its JSON string)
and writes every line back with ``status`` (overall), ``test_statuses`` (per test), ``reward``
(1.0 / 0.0 / null for infra_error) and ``detail``. Bad input stops before anything runs, with an
error naming the file, line and field. Exit code: 0 when every program was judged, 1 if any
ended in ``infra_error``, 2 on bad input or when the sandbox cannot start.
"""

from __future__ import annotations

import argparse
import json
import sys

from restem_pipeline.data.jsonl import iter_jsonl
from restem_pipeline.data.schema import ProblemFormatError


def add_parsers(sub: argparse._SubParsersAction, verify_sub: argparse._SubParsersAction) -> None:
    p = verify_sub.add_parser("code", help="run Python programs against unit tests in the Docker sandbox")
    p.add_argument("input", help="JSON lines with 'program' and 'tests'")
    p.add_argument("-o", "--output", default="-", help="where to write the judged lines (default stdout)")
    p.add_argument(
        "--backend",
        default="docker",
        choices=["docker", "unsafe-local"],
        help="'unsafe-local': plain host processes, NO isolation (development only)",
    )
    p.add_argument("--workers", type=int, default=2, help="containers running programs in parallel")
    p.add_argument(
        "--timeout", type=float, default=6.0, help="CPU seconds per test (wall-clock backstop: 3x, at least +5 s)"
    )
    p.add_argument("--mem-mb", type=int, default=512, help="memory limit per test (MiB)")
    p.add_argument("--stop-on-fail", action="store_true", help="skip later tests after a non-pass")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=verify_code_command)

    p_sb = sub.add_parser("sandbox", help="manage the code-execution sandbox")
    sb_sub = p_sb.add_subparsers(dest="sandbox_command", required=True)
    p_build = sb_sub.add_parser("build", help="build the sandbox image locally (idempotent, content-tagged)")
    p_build.add_argument("--mirror", default=None, help="Debian mirror for debootstrap")
    p_build.set_defaults(func=sandbox_build_command)


def read_jobs(path: str) -> tuple[list[dict], list[str], list[str]]:
    """Rows, programs and tests JSON strings from a JSONL file; ProblemFormatError on bad input."""
    from restem_pipeline.rewards.sandbox.compare import TestSpecError, parse_tests

    rows, programs, tests = [], [], []
    for lineno, row in iter_jsonl(path):
        program = row.get("program")
        if not isinstance(program, str):
            raise ProblemFormatError(path, lineno, "program", "missing or not a string (Python source)")
        spec = row.get("tests")
        if isinstance(spec, dict):
            spec = json.dumps(spec)
        if not isinstance(spec, str):
            raise ProblemFormatError(path, lineno, "tests", "missing, or not an object or JSON string")
        try:
            parse_tests(spec)
        except TestSpecError as e:
            raise ProblemFormatError(path, lineno, e.field, str(e).split(": ", 1)[-1]) from None
        rows.append(row)
        programs.append(program)
        tests.append(spec)
    return rows, programs, tests


def write_verdicts(output: str, rows: list[dict], results: list) -> None:
    """Each input row with its verdict (status, per-test statuses, reward, detail), one JSON line each."""
    out = sys.stdout if output == "-" else open(output, "w", encoding="utf-8")  # noqa: SIM115
    try:
        for row, r in zip(rows, results, strict=True):
            row.update(status=r.status, test_statuses=r.tests, reward=r.reward, detail=r.detail)
            out.write(json.dumps(row) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()


def verify_code_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from restem_pipeline.rewards.sandbox import InfraError, Limits, run_programs

    try:
        rows, programs, tests = read_jobs(args.input)
    except (ProblemFormatError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.backend == "unsafe-local":
        print("warning: --backend unsafe-local runs programs with NO isolation", file=sys.stderr)
    bar = tqdm(total=len(rows), desc="verify code", unit="prog", file=sys.stderr, disable=args.no_progress)
    done: dict[int, object] = {}  # verdicts as they finish: what an interrupted run still writes
    try:
        results = run_programs(
            programs,
            tests,
            backend=args.backend,
            workers=args.workers,
            timeout_s=args.timeout,
            limits=Limits(mem_mb=args.mem_mb),
            stop_on_fail=args.stop_on_fail,
            progress=bar.update,
            on_result=done.__setitem__,
        )
    except InfraError as e:
        bar.close()
        print(f"error: sandbox unavailable: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        bar.close()
        finished = dict(sorted(done.items()))
        write_verdicts(args.output, [rows[i] for i in finished], list(finished.values()))
        where = "stdout" if args.output == "-" else args.output
        print(f"\ninterrupted: {len(finished)} of {len(rows)} verdicts written to {where}", file=sys.stderr)
        return 130
    bar.close()
    write_verdicts(args.output, rows, results)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    print("verify code: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), file=sys.stderr)
    return 1 if counts.get("infra_error") else 0


def sandbox_build_command(args: argparse.Namespace) -> int:
    import docker
    import docker.errors

    from restem_pipeline.rewards.sandbox.image import ImageBuildError, build_image

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as e:
        print(f"error: Docker engine not reachable ({e}); run scripts/setup_docker.sh", file=sys.stderr)
        return 2
    try:
        ref = build_image(client, mirror=args.mirror, log=lambda m: print(m, file=sys.stderr))
    except ImageBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(ref)
    return 0
