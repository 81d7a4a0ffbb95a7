"""Comparison rules and test-spec parsing (host side, no Docker): regression tables, each row a rule."""

from __future__ import annotations

import json

import pytest

from restem_pipeline.rewards.sandbox import TestSpecError, overall_status, parse_tests, stdout_matches, value_matches
from restem_pipeline.rewards.sandbox.results import ProgramResult

STDOUT_ROWS = [
    # (got, expected, matches)
    ("3\n", "3\n", True),
    ("3", "3\n", True),  # trailing newline
    ("3   \n\n\n", "3\n", True),  # trailing whitespace and blank lines
    ("1 2\r\n3\r\n", "1 2\n3\n", True),  # CRLF
    ("1  2\n", "1 2\n", True),  # same tokens, different inner spacing
    ("1\n", "1\n2\n", False),  # missing line (open-r1's zip would pass this)
    ("1\n2\n3\n", "1\n2\n", False),  # extra line
    ("2 1\n", "1 2\n", False),  # order matters (APPS' token-set check would pass this)
    ("0.3333333\n", "0.333333333\n", True),  # float tolerance 1e-6
    ("0.34\n", "0.333333333\n", False),
    ("1000001\n", "1000000\n", False),  # integers compare exactly, no relative tolerance
    ("1e3\n", "1000.0\n", True),
    ("YES\n", "yes\n", False),  # case matters
    ("nan\n", "nan\n", True),  # identical text
    ("inf\n", "1e400\n", False),  # not numeric tokens by our grammar: text must match
    ("", "\n", True),  # empty output vs a blank expected line
    (" 3\n", "3\n", True),  # leading space: same tokens
    ("3 x\n", "3 y\n", False),
    # an integer answer is exact: an expected integer token is matched only by the same token
    ("1.474836474100654e+17\n", "147483647410065408\n", False),  # the float's value is even exact
    ("147483647410065408\n", "147483647410065408\n", True),
    ("1.0\n", "1\n", False),
    ("1.0000001\n", "1\n", False),
    ("1e5\n", "100000\n", False),
    ("-0\n", "0\n", False),  # as a judge's integer reader: no sign on zero, no plus, no leading zero
    ("+5\n", "5\n", False),
    ("007\n", "7\n", False),
    ("007\n", "007\n", True),
    ("-5\n", "-5\n", True),
    ("-5.0\n", "-5\n", False),
    ("1 2.0\n", "1 2\n", False),  # token by token within a line
    (f"{3**5000}\n", f"{3**5000}\n", True),  # a huge integer (2386 digits), as text
    (f"{3**5000 + 1}\n", f"{3**5000}\n", False),
    (f"{3**5000}.0\n", f"{3**5000}\n", False),
    # an expected float keeps its tolerance, whatever number token answers it
    ("2\n", "2.0\n", True),
    ("1\n", "1.5\n", False),
    ("100000\n", "1e5\n", True),
    ("1e+05\n", "1e5\n", True),
    ("-5\n", "-5.0\n", True),
    ("-4.9999999\n", "-5.0\n", True),
    ("-4.99\n", "-5.0\n", False),
    ("-0.000\n", "0.000\n", True),
    ("-0\n", "0.0\n", True),
    ("1e401\n", "1e400\n", False),  # both read as inf: never "close"
    (f"{3**5000}\n", "1e300\n", False),  # too large for a float: inf, not close to 1e300
]


@pytest.mark.parametrize(("got", "want", "ok"), STDOUT_ROWS)
def test_stdout_rules(got, want, ok):
    assert stdout_matches(got, want) is ok


VALUE_ROWS = [
    ([1, 2], [1, 2], True),
    ([1, 2], [[1, 2]], True),  # APPS wraps expected outputs in a one-element list
    (5, [5], True),
    ([5], 5, False),  # but a wrapped result does not equal a bare expectation
    ("1", 1, False),  # a string never equals a number
    (1, "1", False),
    (True, 1, False),  # bool is not int
    (1, True, False),
    (1, 1.0, True),  # int vs float compares numerically
    (0.1 + 0.2, 0.3, True),
    (0.31, 0.3, False),
    ({"a": [1, 2]}, {"a": [1, 2]}, True),
    ({"a": 1}, {"a": 1, "b": 2}, False),
    (None, None, True),
    (None, [None], True),
    ([], [[]], True),
    ([1, 2, 3], [1, 2], False),
    # an expected integer needs an int of the same value; an expected float any number within 1e-6
    (3.0, 3, False),
    (1.474836474100654e17, 147483647410065408, False),
    (147483647410065408, 147483647410065408, True),
    (3 + 1e-7, 3, False),
    (-0.0, 0, False),
    ([1.0, 2], [1, 2], False),
    (2, 2.0, True),
    (3, 3.0000001, True),
    (-5, -5.0, True),
    (1, 1.5, False),
]


@pytest.mark.parametrize(("got", "want", "ok"), VALUE_ROWS)
def test_value_rules(got, want, ok):
    assert value_matches(got, want) is ok


def test_parse_apps_stdio_and_call():
    cases = parse_tests(json.dumps({"inputs": ["1\n", ["a", "b"]], "outputs": ["2\n", ["x", "y"]]}))
    assert [c.mode for c in cases] == ["stdio", "stdio"]
    assert cases[1].stdin == "a\nb" and cases[1].expected == "x\ny"
    call = parse_tests({"fn_name": "f", "inputs": [[1, 2]], "outputs": [3]})
    assert call[0].mode == "call" and call[0].args == [1, 2] and call[0].expected == 3


def test_parse_test_code():
    (case,) = parse_tests(json.dumps({"test_code": "assert f(1) == 2", "entry_point": "f"}))
    assert case.mode == "code" and case.entry_point == "f"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("not json", "tests"),
        ("[1, 2]", "tests"),
        ('{"inputs": ["1"]}', "tests"),
        ('{"inputs": ["1"], "outputs": []}', "tests.outputs"),
        ('{"inputs": [], "outputs": []}', "tests.inputs"),
        ('{"fn_name": "f", "inputs": [1], "outputs": [1]}', "tests.inputs[0]"),
        ('{"fn_name": "not valid", "inputs": [[1]], "outputs": [1]}', "tests.fn_name"),
        ('{"inputs": [3], "outputs": ["3"]}', "tests.inputs[0]"),
        ('{"test_code": ""}', "tests.test_code"),
        ('{"test_code": "pass", "entry_point": "a b"}', "tests.entry_point"),
    ],
)
def test_bad_specs_name_the_field(spec, field):
    with pytest.raises(TestSpecError) as err:
        parse_tests(spec)
    assert err.value.field == field


def test_overall_status_precedence_and_reward():
    assert overall_status(["pass", "pass"]) == "pass"
    assert overall_status(["pass", "timeout", "fail"]) == "timeout"  # first non-pass in test order
    assert overall_status(["fail", "infra_error"]) == "infra_error"  # infra errors always surface
    assert overall_status(["fail", "skipped"]) == "fail"
    assert overall_status([]) == "infra_error"
    assert ProgramResult("pass", ["pass"]).reward == 1.0
    assert ProgramResult("timeout", ["timeout"]).reward == 0.0
    assert ProgramResult("infra_error", ["infra_error"]).reward is None
