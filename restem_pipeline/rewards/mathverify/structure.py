"""Split a normalized answer into its shape: set, tuple/interval, matrix, equation, inequality, scalar.

Covers: unordered lists (top-level ``,`` or ``;``, ``\\{...\\}``, ``\\cup`` unions, ``a \\pm b``; a
``\\pm`` item of a list or set stands for its two values, so ``\\{\\pm 2\\}`` is ``\\{-2, 2\\}``),
bracketed sequences with their exact bracket kinds (``(3,4]`` is not ``[3,4]``; ``\\langle\\rangle``
counts as parentheses), ``pmatrix``/``bmatrix``/``matrix`` environments, a scalar times one matrix
(``2\\begin{pmatrix}1\\\\2\\end{pmatrix}``, ``-\\frac12 \\cdot \\begin{bmatrix}...``: each entry
becomes ``(k)(entry)``), coordinates separated by semicolons (``(0;-2;6)``), equations ``lhs = rhs``,
chains of ``=`` and ``≈`` (their last exact member: ``x = 5+5+1 = 11`` is ``x = 11``, an
approximation after it is kept aside as ``approx``), chains of inequalities (``<``, ``>``, ``≤``,
``≥``; ``≠`` is kept as an opaque scalar) and ratios of numbers (``7:32``, also a clock time). Which
left sides name the answer: ``simple_lhs`` (``x``, ``f(x)``) and ``named_lhs`` (also ``AB``, ``|AB|``,
``A:B``, ``\\frac{NO}{BO}``).

Does not cover: what a scalar means (``grading`` parses and compares scalars) or any normalization
(``normalize`` runs first). Shapes are plain tuples so they can be cached and compared cheaply:
``("set", items)``, ``("seq", open, close, items)``, ``("matrix", rows)``, ``("eq", lhs, rhs)``,
``("ineq", parts, ops)``, ``("approx", exact_shape, approximation)``, ``("ratio", items)``,
``("scalar", text)``.
"""

from __future__ import annotations

import re

from restem_pipeline.rewards.mathverify.latex_expr import ExprParseError, parse_expr, symbols_of

Shape = tuple

_OPENERS = {"(": ")", "[": "]", "{": "}"}
_RELATION_OPS = ("≤", "≥", "<", ">", "=", "≠", "≈")
_SIMPLE_LHS = re.compile(
    r"(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?(?:\([a-zA-Z, ]*\))?|\(\s*[a-zA-Z](?:\s*,\s*[a-zA-Z])+\s*\)"
)
# Named quantities of geometry and ratios: ``AB``, ``|AB|``, ``A:B``, ``S_{MBCN}:S``, ``\\frac{NO}{BO}``, ``NO/BO``,
# ``\\angle ABC``, ``m\\angle A``, ``\\|\\mathbf{a}\\|``.
_SEGMENT = r"[A-Z]{1,4}(?:_\{?\w+\}?)?"
_NAMED_QUANTITY = re.compile(
    rf"{_SEGMENT}|\|{_SEGMENT}\||{_SEGMENT}\s*[:/]\s*{_SEGMENT}|\\frac\{{{_SEGMENT}\}}\{{{_SEGMENT}\}}"
    rf"|(?:m\s*)?\\angle\s*{_SEGMENT}|\\\|\s*(?:\\mathbf\{{[a-zA-Z]\}}|[a-zA-Z])\s*\\\|"
)
_CONSTANTS = {"\\pi", "\\infty", "e", "i"}


def simple_lhs(lhs: str) -> bool:
    """``x``, ``a_1``, ``f(x)``, ``\\theta``, ``(x, y)``: an equation that just names the answer."""
    return bool(_SIMPLE_LHS.fullmatch(lhs.strip()))


def named_lhs(lhs: str) -> bool:
    """A simple name or a named quantity (``AB``, ``|AB|``, ``A:B``, ``\\frac{NO}{BO}``): ``AB = 4`` states 4."""
    return simple_lhs(lhs) or bool(_NAMED_QUANTITY.fullmatch(lhs.strip()))


def name_key(lhs: str) -> str:
    """A name without spaces or grouping braces, for comparing names (``V_{1}`` is ``V_1``)."""
    return lhs.replace(" ", "").replace("{", "").replace("}", "")


def _variable_free(text: str) -> bool:
    try:
        return not symbols_of(parse_expr(text))
    except (ExprParseError, ValueError, RecursionError):
        return False


def _chain_shape(parts: list[str], ops: list[str], whole: str) -> Shape:
    """A chain of ``=`` and ``≈`` states its last exact member, named by the last simple name before it:
    ``x = 5+5+1 = 11`` is ``x = 11``; without a name its value is that member when it is a number
    (``\\frac{10}{56} = \\frac{5}{28}``). An approximation after an exact member is kept beside it:
    ``x = \\frac13 \\approx 0.33`` is ``("approx", x = \\frac13, "0.33")`` (``grading`` decides whether the
    approximation counts); ``x \\approx 11``, with no exact member, is ``x = 11``."""
    approximation = None
    if "≈" in ops:
        first = ops.index("≈")
        if first == 0 and simple_lhs(parts[0]) and parts[0] not in _CONSTANTS:
            parts = parts[:2]
        else:
            parts, approximation = parts[: first + 1], parts[first + 1]
    value = parts[-1]
    names = [p for p in parts[:-1] if simple_lhs(p) and p not in _CONSTANTS]
    if names:
        base: Shape = ("eq", names[-1], shape_of(value))
    elif len(parts) == 1 or _variable_free(value):
        base = shape_of(value)
    else:
        return ("scalar", whole)
    return base if approximation is None else ("approx", base, approximation)


_MATRIX = re.compile(r"^\\begin\{([pbvBV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.DOTALL)


def split_top(text: str, seps: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Parts of ``text`` split at separators outside any brackets, and the separators found."""
    parts: list[str] = []
    found: list[str] = []
    depth = 0
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if depth == 0:
            sep = next((s for s in seps if text.startswith(s, i)), None)
            if sep is not None and not (sep[-1].isalpha() and i + len(sep) < n and text[i + len(sep)].isalpha()):
                parts.append(text[start:i])
                found.append(sep)
                i += len(sep)
                start = i
                continue
        if ch == "\\":
            if text.startswith("\\begin", i) or text.startswith("\\langle", i):
                depth += 1
            elif text.startswith("\\end", i) or text.startswith("\\rangle", i):
                depth -= 1
            elif i + 1 < n and text[i + 1] in "{}":
                depth += 1 if text[i + 1] == "{" else -1
                i += 2
                continue
            i += 1
            while i < n and text[i].isalpha():
                i += 1
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        i += 1
    parts.append(text[start:])
    return parts, found


def outer_brackets(text: str) -> tuple[str, str, str] | None:
    """(open, close, inner) when one bracket pair encloses all of ``text``; mixed kinds allowed."""
    if text.startswith("\\{") and text.endswith("\\}"):
        opener, closer, inner = "{", "}", text[2:-2]
    elif text.startswith("\\langle") and text.endswith("\\rangle"):
        opener, closer, inner = "(", ")", text[7:-7]
    elif len(text) >= 2 and text[0] in "([" and text[-1] in ")]":
        opener, closer, inner = text[0], text[-1], text[1:-1]
    else:
        return None
    # The first bracket must close at the very end, not earlier ("(1)(2)" is not enclosed).
    depth = 0
    for ch in inner:
        depth += 1 if ch in "([{" else -1 if ch in ")]}" else 0
        if depth < 0:
            return None
    return (opener, closer, inner.strip()) if depth == 0 else None


def _set_items(parts: list[str]) -> tuple[Shape, ...]:
    """Items of a list or set; an item with one ``\\pm`` gives its two values (``\\pm 2`` is
    ``2, -2`` and ``x = 1 \\pm \\sqrt{5}`` is ``x = 1 + \\sqrt{5}, x = 1 - \\sqrt{5}``)."""
    items: list[Shape] = []
    for part in parts:
        shape = shape_of(part)
        if ("\\pm" not in part and "\\mp" not in part) or outer_brackets(part.strip()) is not None:
            items.append(shape)
        elif shape[0] == "set":
            items.extend(shape[1])
        elif shape[0] == "eq" and shape[2][0] == "set":
            items.extend(("eq", shape[1], value) for value in shape[2][1])
        else:
            items.append(shape)
    return tuple(items)


# What may multiply a matrix: a short expression with no list, relation or environment in it.
_SCALAR_FACTOR = re.compile(r"[^&=<>,;]{1,60}")


def _matrix_shape(s: str) -> Shape | None:
    """A matrix environment (also inside one pair of brackets), or a scalar times one (each entry
    multiplied); None for anything else."""
    if s and s[0] in "([" and s[-1] in ")]" and s[1:].lstrip().startswith("\\begin{") and s[:-1].rstrip().endswith("}"):
        s = s[1:-1].strip()  # "\\left[\\begin{array}...\\end{array}\\right]" after normalization
    begin = s.find("\\begin{")
    if begin < 0 or (begin > 0 and s.find("\\begin{", begin + 1) >= 0):
        return None
    m = _MATRIX.match(s[begin:])
    if not m:
        return None
    rows = [r for r in re.split(r"\\\\", m.group(2)) if r.strip()]
    cells = tuple(tuple(shape_of(c) for c in r.split("&")) for r in rows)
    factor = s[:begin].rstrip()
    for times in ("\\cdot", "\\times", "*"):
        factor = factor.removesuffix(times)
    factor = factor.strip()
    if not factor:
        return ("matrix", cells)
    factor = {"-": "-1", "+": "1"}.get(factor, factor)
    if not _SCALAR_FACTOR.fullmatch(factor) or any(c[0] != "scalar" for row in cells for c in row):
        return None
    try:
        parse_expr(factor)
    except (ExprParseError, ValueError, RecursionError):
        return None
    return ("matrix", tuple(tuple(("scalar", f"({factor})({c[1]})") for c in row) for row in cells))


def shape_of(text: str) -> Shape:
    """The shape tree of a normalized answer."""
    s = text.strip()
    if s in ("∅", "\\{\\}", "{}"):
        return ("set", ())
    matrix = _matrix_shape(s)
    if matrix is not None:
        return matrix
    for seps in (("\\cup",), (";",), (",",)):
        parts, _ = split_top(s, seps)
        if len(parts) > 1 and all(p.strip() for p in parts):
            return ("set", _set_items(parts))
    outer = outer_brackets(s)
    if outer is not None:
        opener, closer, inner = outer
        parts, _ = split_top(inner, (",",))
        if len(parts) == 1 and opener != "{":
            # "(0;-2;6)": semicolons separate the coordinates where commas are decimal marks.
            semis, _ = split_top(inner, (";",))
            if len(semis) > 1 and all(p.strip() for p in semis):
                parts = semis
        if opener == "{" and closer == "}":
            return ("set", _set_items([p for p in parts if p.strip()]))
        if len(parts) > 1:
            return ("seq", opener, closer, tuple(shape_of(p) for p in parts))
    parts, ops = split_top(s, _RELATION_OPS)
    if ops == ["≈"] and not parts[0].strip() and parts[1].strip():
        return shape_of(parts[1])  # "\\approx 8.24": the value given
    if ops and all(p.strip() for p in parts):
        if ops == ["="]:
            return ("eq", parts[0].strip(), shape_of(parts[1]))
        if set(ops) <= {"=", "≈"}:
            return _chain_shape([p.strip() for p in parts], ops, s)
        if not {"=", "≠", "≈"} & set(ops):
            return ("ineq", tuple(p.strip() for p in parts), tuple(ops))
        return ("scalar", s)
    for sign in ("\\pm", "\\mp"):
        if s.count(sign) == 1:
            first, second = ("+", "-") if sign == "\\pm" else ("-", "+")
            return ("set", (("scalar", s.replace(sign, first)), ("scalar", s.replace(sign, second))))
    ratio, _ = split_top(s, (":",)) if ":" in s else ([s], [])
    if len(ratio) > 1 and all(_variable_free(p) for p in ratio):
        return ("ratio", tuple(("scalar", p.strip()) for p in ratio))  # "7:32", never the number 7/32
    return ("scalar", s)
