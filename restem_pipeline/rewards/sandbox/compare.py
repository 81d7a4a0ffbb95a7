"""Test specifications and the host-side comparison of a program's output with the expected one.

Two test formats (the JSON string in ``Problem.tests``):

* APPS ``input_output``: ``{"inputs": [...], "outputs": [...], "fn_name"?: str}``. Without ``fn_name``
  each input is fed on stdin and stdout is compared line by line (:func:`stdout_matches`); with it,
  each input is the argument list of ``fn_name`` (a top-level function or ``Solution().fn_name``)
  and the return value is compared with :func:`value_matches`.
* ``{"test_code": str, "entry_point"?: str, "setup_code"?: str}``: the test code (MBPP asserts) runs
  in the sandbox's checker, apart from the program, after the trusted ``setup_code`` (HumanEval's
  prompt: the helpers its tests call); if it defines ``check`` it is called as ``check(entry_point)``
  (HumanEval). The names the tests call that the program defines reach it as data (``checker``).
  One test.

Comparison rules (APPS' own harness accepts an order-insensitive set of tokens and, failing that,
any floats within tolerance; open-r1 zips lines so missing lines pass: we are stricter than both).
stdout: lines compared after trimming trailing whitespace and dropping trailing blank lines; a line
differing in text may still match if it splits into the same number of whitespace tokens and every
differing pair of tokens matches by the number rule. Number rule (stdout and values alike): **an
integer answer is exact**. An expected integer token (``[+-]?digits``) is matched only by the same
token, as written, as an online judge reads an integer: ``1.0``, ``1e0``, ``+1``, ``01`` and
``1.474836474100654e+17`` (for ``147483647410065408``) all fail, and so does ``-0`` for ``0``. An
expected float token (a decimal point or an exponent: ``2.0``, ``1e5``, ``.5``) is matched by any
finite number token, integer ones included, within 1e-6 absolute or relative (``2`` matches
``2.0``, ``100000`` matches ``1e5``, ``2.0000001`` matches ``2.0``); ``nan``/``inf`` match only as
identical text. Extra or missing lines fail. Values: a tuple equals a list (JSON has no tuples); an
expected one-element list also matches its sole element (much APPS data is wrapped like that); bool,
number and string never equal each other; an expected integer needs an integer of the same value
(``3`` matches ``3``; ``3.0`` and ``3.0000001`` do not); an expected float matches an int or float
within 1e-6. Assert-style tests (``test_code``) are not compared here: their own assertions decide.
This module runs on the host; nothing here executes programs.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

FLOAT_TOL = 1e-6
_INT_RE = re.compile(r"[+-]?\d+\Z")
_NUM_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")


class TestSpecError(ValueError):
    """The tests JSON is malformed; ``field`` names the offending field."""

    __test__ = False  # not a pytest class

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"field {field!r}: {message}")


@dataclass(frozen=True)
class TestCase:
    """One unit of execution: mode 'stdio', 'call' or 'code'."""

    __test__ = False

    mode: str
    stdin: str = ""
    args: list | None = None
    fn_name: str | None = None
    expected: Any = None
    test_code: str | None = None
    entry_point: str | None = None
    setup_code: str | None = None


def _as_text(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)  # some APPS rows store stdin/stdout as a list of lines
    raise TestSpecError(field, f"expected a string (or list of lines), got {type(value).__name__}")


def parse_tests(tests: str | dict) -> list[TestCase]:
    """The list of test cases in a tests JSON string (or already-decoded object)."""
    if isinstance(tests, str):
        try:
            spec = json.loads(tests)
        except ValueError as e:
            raise TestSpecError("tests", f"not valid JSON: {e}") from None
    else:
        spec = tests
    if not isinstance(spec, dict):
        raise TestSpecError("tests", f"expected an object, got {type(spec).__name__}")
    if "test_code" in spec:
        code, entry, setup = spec["test_code"], spec.get("entry_point"), spec.get("setup_code")
        if not isinstance(code, str) or not code.strip():
            raise TestSpecError("tests.test_code", "expected a non-empty string")
        if entry is not None and (not isinstance(entry, str) or not entry.isidentifier()):
            raise TestSpecError("tests.entry_point", f"expected an identifier, got {entry!r}")
        if setup is not None and not isinstance(setup, str):
            raise TestSpecError("tests.setup_code", f"expected a string, got {type(setup).__name__}")
        return [TestCase(mode="code", test_code=code, entry_point=entry, setup_code=setup)]
    if "inputs" not in spec or "outputs" not in spec:
        raise TestSpecError("tests", "needs 'inputs' and 'outputs' (APPS) or 'test_code'")
    inputs, outputs, fn_name = spec["inputs"], spec["outputs"], spec.get("fn_name")
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise TestSpecError("tests.inputs", "inputs and outputs must be lists")
    if len(inputs) != len(outputs):
        raise TestSpecError("tests.outputs", f"{len(inputs)} inputs but {len(outputs)} outputs")
    if not inputs:
        raise TestSpecError("tests.inputs", "no test inputs")
    if fn_name is not None:
        if not isinstance(fn_name, str) or not fn_name.isidentifier():
            raise TestSpecError("tests.fn_name", f"expected an identifier, got {fn_name!r}")
        cases = []
        for i, args in enumerate(inputs):
            if not isinstance(args, list):
                raise TestSpecError(f"tests.inputs[{i}]", "call-based inputs must be argument lists")
            cases.append(TestCase(mode="call", args=args, fn_name=fn_name, expected=outputs[i]))
        return cases
    return [
        TestCase(mode="stdio", stdin=_as_text(inp, f"tests.inputs[{i}]"), expected=_as_text(out, f"tests.outputs[{i}]"))
        for i, (inp, out) in enumerate(zip(inputs, outputs, strict=True))
    ]


# --------------------------------------------------------------------------------------- stdout


def _lines(text: str) -> list[str]:
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _tokens_match(got: str, want: str) -> bool:
    if got == want:
        return True
    if _INT_RE.match(want) or not (_NUM_RE.match(got) and _NUM_RE.match(want)):
        return False  # an expected integer is matched only by the same token (checked above)
    g, w = float(got), float(want)  # a token too large for a float reads as inf: never "close"
    return math.isfinite(g) and math.isfinite(w) and math.isclose(g, w, rel_tol=FLOAT_TOL, abs_tol=FLOAT_TOL)


def stdout_matches(got: str, want: str) -> bool:
    """Line-wise comparison of stdout (see module docstring)."""
    g, w = _lines(got), _lines(want)
    if len(g) != len(w):
        return False
    for gl, wl in zip(g, w, strict=True):
        if gl == wl:
            continue
        gt, wt = gl.split(), wl.split()
        if len(gt) != len(wt) or not all(_tokens_match(a, b) for a, b in zip(gt, wt, strict=True)):
            return False
    return True


# ---------------------------------------------------------------------------------------- values


def _strict_equal(got: Any, want: Any) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    if isinstance(want, int | float) and isinstance(got, int | float):
        if isinstance(want, int):
            return isinstance(got, int) and got == want  # an integer answer is exact: an int, same value
        if math.isnan(got) or math.isnan(want):
            return math.isnan(got) and math.isnan(want)
        return math.isclose(got, want, rel_tol=FLOAT_TOL, abs_tol=FLOAT_TOL)
    if isinstance(want, list | tuple) and isinstance(got, list | tuple):
        return len(got) == len(want) and all(_strict_equal(a, b) for a, b in zip(got, want, strict=True))
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(_strict_equal(got[k], want[k]) for k in want)
    if isinstance(want, str) and isinstance(got, str):
        return got == want
    return want is None and got is None


def value_matches(got: Any, want: Any) -> bool:
    """Call-based comparison: strict typed equality, or ``want == [got]`` (APPS wrapping)."""
    if _strict_equal(got, want):
        return True
    return isinstance(want, list) and len(want) == 1 and _strict_equal(got, want[0])
