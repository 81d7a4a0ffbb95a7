"""``restem verify code`` and ``restem sandbox build`` through the argparse wiring in restem_pipeline.cli."""

from __future__ import annotations

import argparse
import json

import pytest

from restem_pipeline.rewards.sandbox import cli as sandbox_cli


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="restem")
    sub = parser.add_subparsers(dest="command", required=True)
    verify_sub = sub.add_parser("verify").add_subparsers(dest="domain", required=True)
    sandbox_cli.add_parsers(sub, verify_sub)
    args = parser.parse_args(argv)
    return args.func(args)


ROWS = [
    {
        "id": "a",
        "program": "print(sum(map(int, input().split())))",
        "tests": {"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]},
    },
    {
        "id": "b",
        "program": "def f(x):\n    return x * 2\n",
        "tests": json.dumps({"fn_name": "f", "inputs": [[1], [2]], "outputs": [2, 5]}),
    },
    {
        "id": "c",
        "program": "def g(x):\n    return x\n",
        "tests": {"test_code": "def check(candidate):\n    assert candidate(1) == 1\n", "entry_point": "g"},
    },
    {"id": "d", "program": "while True: pass", "tests": {"inputs": ["\n"], "outputs": ["\n"]}},
]


@pytest.mark.docker
def test_verify_code_writes_statuses(tmp_path, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert _run(["verify", "code", str(src), "-o", str(out), "--timeout", "1"]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["status"], r["test_statuses"], r["reward"]) for r in got] == [
        ("a", "pass", ["pass", "pass"], 1.0),
        ("b", "fail", ["pass", "fail"], 0.0),
        ("c", "pass", ["pass"], 1.0),
        ("d", "timeout", ["timeout"], 0.0),
    ]
    assert got[1]["program"] == ROWS[1]["program"]  # the input line is written back, extended
    err = capsys.readouterr().err
    assert "verify code" in err and "pass 2" in err  # progress bar and summary on stderr


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("{not json", "<json>"),
        ('["a list"]', "<json>"),
        ('{"tests": {"inputs": ["1"], "outputs": ["1"]}}', "program"),
        ('{"program": "print(1)"}', "tests"),
        ('{"program": "print(1)", "tests": {"inputs": ["1"], "outputs": []}}', "tests.outputs"),
        ('{"program": "print(1)", "tests": {"fn_name": "f", "inputs": [1], "outputs": [1]}}', "tests.inputs[0]"),
    ],
)
def test_bad_input_names_file_line_and_field(tmp_path, capsys, line, field):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(ROWS[0]) + "\n" + line + "\n")
    assert _run(["verify", "code", str(src), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{src}: line 2: field {field!r}" in err


def test_unsafe_local_backend_is_opt_in_and_labelled(tmp_path, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:3]))
    argv = ["verify", "code", str(src), "-o", str(out), "--backend", "unsafe-local", "--no-progress"]
    assert _run(argv) == 0
    assert [json.loads(x)["status"] for x in out.read_text().splitlines()] == ["pass", "fail", "pass"]
    assert "NO isolation" in capsys.readouterr().err


@pytest.mark.docker
def test_sandbox_build_is_a_no_op_when_up_to_date(capsys):
    from restem_pipeline.rewards.sandbox.image import image_ref

    assert _run(["sandbox", "build"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == image_ref() and "up to date" in captured.err


def test_interrupted_verify_writes_what_finished_and_exits_130(tmp_path):
    """Ctrl-C (SIGINT) part-way: one line on stderr, the finished verdicts written, exit status 130."""
    import os
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "started"
    slow = {"id": "slow", "tests": {"inputs": ["\n"], "outputs": ["1\n"]}, "program": (
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)\nprint(1)\n")}  # fmt: skip
    rows = [ROWS[0], ROWS[1], ROWS[2], slow, ROWS[0]]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # a background job (CI, this harness) may inherit SIGINT ignored: restore what a terminal's Ctrl-C meets
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from assets.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = ["verify", "code", str(src), "-o", str(out), "--backend", "unsafe-local", "--workers", "1"]
    child = subprocess.Popen(
        [sys.executable, "-c", code, *argv, "--no-progress", "--timeout", "120"], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the slow program never started"
    started = time.monotonic()
    os.kill(child.pid, signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130 and time.monotonic() - started < 30  # not after the 60 s sleep
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in got] == [("a", "pass"), ("b", "fail"), ("c", "pass")]
    assert err.strip().splitlines()[-1] == f"interrupted: 3 of 5 verdicts written to {out}"
    assert "Traceback" not in err
