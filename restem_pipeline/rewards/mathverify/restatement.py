"""The restatement rule: an answer that copies the problem's own expression unevaluated earns nothing.

Covers: ``restates_problem(answer, gold, problem)``. It is true when all of these hold:

1. the answer, normalized (the right side of ``x = ...``), is one expression of literals only
   (numbers, ``\\pi``, radicals, functions: no variable), and not in simplest form: not an integer,
   a decimal, a constant, or a reduced fraction (``\\frac{3}{4}``, ``-\\frac{3}{4}``);
2. it is not the gold itself (same expression tree as the gold, so a gold that is an expression,
   ``\\sqrt{2}`` or ``\\frac{\\pi}{4}``, is still matched by the same expression);
3. it appears in the problem as a whole math expression: a ``$...$`` / ``\\(...\\)`` / ``\\[...\\]``
   segment, one side of an ``=`` or a relation in it, one item of a list in it, or a run of digits
   and operators in plain text ("What is 501^2 - 499^2?"), compared after the answer's normalization
   with spaces dropped and ``\\cdot``/``\\times`` read as ``*``.

So for "What is the value of $501^2-499^2$?" the answer ``501^2 - 499^2`` is a restatement (gold
2000: incorrect, although equal), and so is ``\\sqrt{8}`` for "Simplify $\\sqrt{8}$." (gold
``2\\sqrt{2}``); ``2000``, ``\\frac{1}{2}`` or a ``2\\sqrt{2}`` are not.

Does not cover: answers with variables (an unexpanded ``(x+1)^2`` for "Expand $(x+1)^2$" is graded as
usual), answers that are only part of a problem's expression, or problems given without their text
(``problem=None``: the rule is off). All work is linear in the problem's length, and the problem's
pieces are cached, since many samples share a problem.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from restem_pipeline.rewards.mathverify.latex_expr import ExprParseError, Node, parse_expr, symbols_of
from restem_pipeline.rewards.mathverify.normalize import normalize_answer
from restem_pipeline.rewards.mathverify.structure import shape_of, split_top

# Problem text past this many characters is not searched (MATH's longest problem has about 4,200).
MAX_PROBLEM_CHARS = 20_000
MAX_SEGMENT_CHARS = 500

# Math delimiters, paired up by one scan (an escaped ``\\$`` is a dollar sign, not a delimiter).
_DELIMITER = re.compile(r"\\\$|\$\$|\$|\\\(|\\\)|\\\[|\\\]")
_CLOSER = {"$$": "$$", "$": "$", "\\(": "\\)", "\\[": "\\]"}
# Plain-text arithmetic ("What is 501^2 - 499^2?"): digits, operators, brackets and spaces. One
# character class under a star, so scanning is linear; the run's tail is trimmed afterwards.
_PLAIN_RUN = re.compile(r"[-(\d][\d\s+\-*/^().×÷·]*")
_NAMED = re.compile(r"[a-zA-Z](?:_\{?\w+\}?)?")
_KEY_SPACES = re.compile(r"\s+|\\[,;:! ]")
_PIECE_SEPARATORS = ("=", ",", ";", "≤", "≥", "<", ">", "≠", "\\approx")


def _key(text: str) -> str:
    """The form answers and problem pieces are compared in: no spaces, ``\\cdot``/``\\times`` as ``*``."""
    key = _KEY_SPACES.sub("", text)
    return key.replace("\\cdot", "*").replace("\\times", "*").replace("×", "*").replace("·", "*")


def _segments(text: str) -> tuple[list[str], list[str]]:
    """(math segments, the plain text between them), by one scan over the delimiters."""
    math_parts: list[str] = []
    plain_parts: list[str] = []
    opener, start, plain_start = None, 0, 0
    for m in _DELIMITER.finditer(text):
        token = m.group()
        if token == "\\$":
            continue
        if opener is None and token in _CLOSER:
            plain_parts.append(text[plain_start : m.start()])
            opener, start = token, m.end()
        elif opener is not None and token == _CLOSER[opener]:
            math_parts.append(text[start : m.start()])
            opener, plain_start = None, m.end()
    plain_parts.append(text[plain_start if opener is None else start :])
    return math_parts, plain_parts


@lru_cache(maxsize=4096)
def problem_pieces(problem: str) -> frozenset[str]:
    """Keys of the whole math expressions of a problem text (see the module docstring, rule 3)."""
    math_parts, plain_parts = _segments(problem[:MAX_PROBLEM_CHARS])
    raw = [seg for seg in math_parts if len(seg) <= MAX_SEGMENT_CHARS]
    for part in plain_parts:
        for run in _PLAIN_RUN.finditer(part):
            raw.append(run.group().rstrip(" \t\n+-*/^(.×÷·"))
    keys: set[str] = set()
    for segment in raw:
        if not any(ch.isdigit() for ch in segment):
            continue  # a literal expression has a digit (a bare \\pi is in simplest form)
        normalized = normalize_answer(segment)
        keys.add(_key(normalized))
        pieces, _ = split_top(normalized, _PIECE_SEPARATORS)
        keys.update(_key(piece) for piece in pieces if piece.strip())
    keys.discard("")
    return frozenset(keys)


@lru_cache(maxsize=65536)
def normalized(answer: str) -> str:
    """``normalize_answer``, cached (golds repeat across samples)."""
    return normalize_answer(answer)


def _parsed(text: str) -> Node | None:
    try:
        return parse_expr(text)
    except (ExprParseError, ValueError, RecursionError):
        return None


def _integer(node: Node) -> int | None:
    if node[0] == "n" and node[1].denominator == 1:
        return int(node[1])
    return None


def in_simplest_form(node: Node) -> bool:
    """A number, a constant, or a reduced fraction of integers (with an optional minus sign)."""
    if node[0] == "neg":
        node = node[1]
    if node[0] in ("n", "c"):
        return True
    if node[0] == "/":
        num, den = _integer(node[1]), _integer(node[2])
        return num is not None and den is not None and den > 1 and math.gcd(num, den) == 1
    return False


def restates_problem(answer: str, gold: str, problem: str | None) -> bool:
    """True when ``answer`` is the problem's own expression, unevaluated (see the module docstring)."""
    if not problem:
        return False
    answer_text = normalized(answer)
    shape = shape_of(answer_text)
    if shape[0] == "eq" and _NAMED.fullmatch(shape[1].strip()) and shape[2][0] == "scalar":
        answer_text = shape[2][1]  # "x = 501^2 - 499^2": the value named
    node = _parsed(answer_text)
    if node is None or symbols_of(node) or in_simplest_form(node):
        return False
    gold_node = _parsed(normalized(gold))
    if gold_node is not None and gold_node == node:
        return False
    return _key(answer_text) in problem_pieces(problem)
