"""Test code for HumanEval+ and MBPP+ (evalplus): the reference runs in the sandbox's checker, apart.

evalplus ships inputs (``base_input`` + ``plus_input``) but no expected outputs: its harness computes
them by running the canonical solution. Running that on the host would execute data-set code
unsandboxed, so the generated test code does it inside the sandbox's checker, a process apart from
the candidate's (:mod:`restem_pipeline.rewards.sandbox.checker`): ``check(candidate)`` executes the reference
in its own namespace, times it on each input, then calls the candidate (through data) on each input
with evalplus' per-input CPU limit, max(4 s, 4 x the reference's time), and a whole-test budget of
4 x the reference's total (at least the request's limit), and compares like evalplus
(``evalplus/eval/__init__.py``): exact ``==``, except floats (or lists of floats) which use
``rel 1e-7`` and ``atol`` (1e-6 when the task's atol is 0); list vs tuple differ. JSON cannot hold
tuples, sets or complex numbers, so MBPP+ inputs are first rebuilt per task as evalplus'
``mbpp_deserialize_inputs`` does (``evalplus/data/mbpp.py``, re-expressed as a table below). An input
on which the reference itself raises is skipped; at least one must remain. The candidate's return
value arrives as plain data (no ``__eq__`` tricks). Not covered: evalplus' special oracles, except
the "matched or not" comparison for three regex tasks.
"""

from __future__ import annotations

import json

# task number -> how evalplus rebuilds its inputs ("args" = each argument, "nested" = lists inside
# each argument, "first_list" = lists inside the first argument, "second" / "first" = that argument,
# "nested_then_args", "all" = every list at any depth).
MBPP_INPUT_KINDS: dict[int, str] = {
    **dict.fromkeys(
        [2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744, 809],
        "args",
    ),
    **dict.fromkeys([63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780], "nested"),
    **dict.fromkeys([75, 413, 444, 753], "first_list"),
    **dict.fromkeys([106, 750], "second"),
    **dict.fromkeys([250, 405, 446, 617, 720, 763, 808], "first"),
    **dict.fromkeys([259, 401, 445], "nested_then_args"),
    **dict.fromkeys([580, 615, 791], "all"),
    115: "sets",
    124: "float_complex",
    252: "complex",
    278: "t278",
    307: "first",
    722: "dict_values",
}

# evalplus compares only ``out is not None`` for these MBPP+ entry points (they return re.Match).
MBPP_NOT_NONE = frozenset({"check_str", "text_match_three", "text_starta_endb"})

PLUS_TEST = """\
import builtins as _rbi, copy as _rc, json as _rj, math as _rm, time as _rt
_R_SRC = {ref!r}
_R_INPUTS = _rj.loads({inputs!r})
_R_ATOL = {atol!r}
_R_KIND = {kind!r}
_R_NOT_NONE = {not_none!r}


def _r_tuples(x):
    return tuple(_r_tuples(i) for i in x) if isinstance(x, list) else x


def _r_rebuild(inp):
    k = _R_KIND
    if k == "args":
        return [tuple(a) for a in inp]
    if k == "nested":
        return [[tuple(b) for b in a] for a in inp]
    if k == "first_list":
        return [[tuple(b) for b in inp[0]], *inp[1:]]
    if k == "second":
        return [inp[0], tuple(inp[1]), *inp[2:]]
    if k == "first":
        return [tuple(inp[0]), *inp[1:]]
    if k == "nested_then_args":
        return [tuple(tuple(b) for b in a) for a in inp]
    if k == "all":
        return list(_r_tuples(inp))
    if k == "sets":
        return [[set(i) if isinstance(i, list) and i else {{}} for i in inp[0]]]
    if k == "float_complex":
        return [float(inp[0]), complex(inp[1])]
    if k == "complex":
        return [complex(inp[0])]
    if k == "t278":
        return [tuple(tuple(i) if isinstance(i, list) else i for i in inp[0])]
    if k == "dict_values":
        return [{{key: tuple(v) for key, v in inp[0].items()}}, *inp[1:]]
    return inp


def _r_floats(x):
    if isinstance(x, list | tuple):
        return bool(x) and all(isinstance(i, float) for i in x)
    return isinstance(x, float)


def _r_close(out, exp):
    if _R_NOT_NONE:  # evalplus MBPP_OUTPUT_NOT_NONE_TASKS: only "matched or not" counts
        out = out if isinstance(out, bool) else out is not None
        exp = exp if isinstance(exp, bool) else exp is not None
    atol = _R_ATOL or (1e-6 if _r_floats(exp) else 0)
    if atol and out != exp:
        if type(out) is not type(exp):
            return False
        if isinstance(exp, list | tuple):
            return len(out) == len(exp) and all(
                _rm.isclose(a, b, rel_tol=1e-7, abs_tol=atol) for a, b in zip(out, exp))
        return _rm.isclose(out, exp, rel_tol=1e-7, abs_tol=atol)
    return out == exp


def check(candidate):
    _ns = {{"__name__": "_reference"}}
    exec(_R_SRC, _ns)
    _ref = _ns[{entry!r}]
    _h = globals().get("_restem")  # the sandbox checker's limits (evalplus: max(4 s, 4 x reference))
    _checked, _ref_total = 0, 0.0
    for _i, _raw in enumerate(_R_INPUTS):
        try:
            _inp = _r_rebuild(_raw)
            _t = _rt.process_time()
            _want = _ref(*_rc.deepcopy(_inp))
            _dt = _rt.process_time() - _t
        except Exception:
            continue  # the reference itself rejects this input
        _ref_total += _dt
        if _h is not None:  # the builtins by module: the entry point may be named sum or max
            _h.call_limit_s = _rbi.max(4.0, 4 * _dt)
            _h.budget_s = 4 * _ref_total + 1
        _got = candidate(*_rc.deepcopy(_inp))
        assert _r_close(_got, _want), f"input #{{_i}}: got {{_got!r:.200}}, expected {{_want!r:.200}}"
        _checked += 1
    assert _checked, "no input was valid for the reference"
"""


def plus_test_code(reference: str, entry: str, inputs: list, atol: float, mbpp_task: int | None = None) -> str:
    """Test code comparing a candidate with the reference on evalplus inputs (see module doc)."""
    kind = MBPP_INPUT_KINDS.get(mbpp_task, "plain") if mbpp_task is not None else "plain"
    return PLUS_TEST.format(
        ref=reference,
        inputs=json.dumps(inputs),
        atol=float(atol),
        entry=entry,
        kind=kind,
        not_none=mbpp_task is not None and entry in MBPP_NOT_NONE,
    )
