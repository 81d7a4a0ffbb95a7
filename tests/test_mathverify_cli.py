"""``restem verify math``: real files in, graded lines out, clear errors for bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from restem_pipeline.rewards.mathverify import cli


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="restem")
    sub = parser.add_subparsers(dest="command", required=True)
    verify_sub = sub.add_parser("verify").add_subparsers(dest="domain", required=True)
    cli.add_parser(verify_sub)
    args = parser.parse_args(["verify", "math", *argv])
    return args.func(args)


def test_grades_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"id": 1, "prediction": "so \\boxed{\\frac12}", "gold": "0.5"},
        {"id": 2, "prediction": "She makes 18.\n#### 18", "gold": "9 * 2 = <<9*2=18>>18\n#### 18"},
        {"id": 3, "prediction": "thus $\\boxed{3}$", "gold": "We get $\\boxed{4}$."},
        {"id": 4, "prediction": "no idea", "gold": 7},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    assert _run([str(src), "-o", str(out)]) == 0
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["status"] for g in graded] == ["correct", "correct", "incorrect", "unparseable_prediction"]
    assert graded[0]["id"] == 1 and graded[0]["predicted_answer"] == "\\frac12"
    assert graded[2]["gold_answer"] == "4"
    err = capsys.readouterr().err
    assert "4 items" in err and "correct 2" in err and "unparseable_prediction 1" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prediction": "1", "gold": "1"}\n{"prediction": "1", "gold": \n', ":2: invalid JSON"),
        ('{"prediction": "1"}\n', ":1: missing field 'gold'"),
        ('{"prediction": null, "gold": "1"}\n', ":1: field 'prediction' must be a string"),
        ("[1, 2]\n", ":1: expected a JSON object"),
    ],
)
def test_bad_input_names_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text(content)
    out = tmp_path / "out.jsonl"
    assert _run([str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{src}{message}" in err
    assert not out.exists()  # nothing graded, nothing written


def test_an_optional_problem_field_turns_on_the_restatement_rule(tmp_path: Path) -> None:
    problem = "What is the value of $501^2-499^2$?"
    rows = [
        {"prediction": "\\boxed{501^2-499^2}", "gold": "2000", "problem": problem},
        {"prediction": "\\boxed{501^2-499^2}", "gold": "2000"},  # no problem: the rule is off
        {"prediction": "\\boxed{2000}", "gold": "2000", "problem": problem},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    assert _run([str(src), "-o", str(out)]) == 0
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["status"] for g in graded] == ["incorrect", "correct", "correct"]
    assert "restates the problem" in graded[0]["reason"]
