"""Find the final answer in a model output, and the gold answer in a data set's record.

Covers: the last ``\\boxed{}`` / ``\\fbox{}`` with balanced braces (also ``\\boxed 2``), all distinct
boxed answers of an output, "The final answer is ...", "The answer is ...", GSM8K ``#### N``,
"A: N", a whole output that is itself a bare answer, and an opt-in last-number fallback. Gold parsing
per data set: ``answer`` (MATH-500's ``answer`` field, the embedded set), ``math_solution`` (last boxed
of a MATH solution) and ``gsm8k`` (``#### N``, thousands commas).

Does not cover: deciding whether two answers are equal (``grading``), or rewriting LaTeX
(``normalize``). Everything here is linear-time string scanning, safe to run in-process.
"""

from __future__ import annotations

import re
from typing import Literal

GoldFormat = Literal["answer", "math_solution", "gsm8k"]
GOLD_FORMATS: tuple[str, ...] = ("answer", "math_solution", "gsm8k")

# Gold answers longer than this are not answers (``InvalidGoldError``). Predicted answers are
# returned whole; ``grading`` refuses to grade one that is too long (never a truncated one).
MAX_ANSWER_CHARS = 2000


class InvalidGoldError(ValueError):
    """The gold answer could not be parsed; such a problem never yields a reward."""


_BOXED_START = re.compile(r"\\(?:boxed|fbox)\s*(\{|[^\s{\\])")
_BOXED_TOKEN = re.compile(r"[^\s$.,;]+")
# A backslash escapes the next character (so ``\\{`` is no brace), as in LaTeX.
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)


def _matching_braces(text: str, opens: set[int]) -> dict[int, int]:
    """For each ``{`` at an index in ``opens``, the index of its matching ``}`` (absent: unbalanced).

    One pass from the first such brace, so many (nested or unclosed) boxes cost linear time.
    Escapes pair up the same way from any box's brace on: the character before a box's ``{`` is
    never a backslash (it is the ``d`` of ``\\boxed``, the ``x`` of ``\\fbox``, or a space).
    """
    closes: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_OR_ESCAPE.finditer(text, min(opens)):
        ch = m.group()
        if ch == "{":
            stack.append(m.start())
        elif ch == "}" and stack:
            opened = stack.pop()
            if opened in opens:
                closes[opened] = m.start()
    return closes


def boxed_answers(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces) in order of appearance.

    ``\\boxed 2`` (no braces, as in a few MATH solutions) yields its single token. Unbalanced boxes
    (an output cut off mid-answer) are skipped.
    """
    starts = list(_BOXED_START.finditer(text))
    opens = {m.start(1) for m in starts if m.group(1) == "{"}
    closes = _matching_braces(text, opens) if opens else {}
    found: list[str] = []
    token_end = -1
    for m in starts:
        start = m.start(1)
        if m.group(1) != "{":
            # A token runs to the next delimiter; tokens starting inside the previous one end
            # where it does (so "\\boxedx\\boxedx..." is not rescanned for every box).
            if start >= token_end:
                token = _BOXED_TOKEN.match(text, start)
                token_end = token.end() if token else start
            if token_end > start:
                found.append(text[start:token_end])
        elif start in closes:
            found.append(text[start + 1 : closes[start]].strip())
    return found


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces, else None."""
    found = boxed_answers(text)
    return found[-1] if found else None


_ANSWER_IS = re.compile(r"(?:final\s+answer|the\s+answer)\s*(?:is|:)\s*:?\s*", re.IGNORECASE)
_SPACES = re.compile(r"\s*")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
# Two English words in a row: the text is a sentence, not a bare answer.
_PROSE = re.compile(r"(?<!\\)\b[A-Za-z]{2,}\s+[A-Za-z]{2,}\b")


def _answer_after_phrase(text: str) -> str | None:
    """The answer following the last "The (final) answer is", as ``$...$`` or up to the sentence end."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :]
    if rest.startswith("$"):
        inner = re.match(r"\$\$?((?:\\.|[^$\\])+)\$", rest, re.DOTALL)
        if inner:
            return inner.group(1).strip()
    line = rest.split("\n", 1)[0]
    # End at a sentence-ending period (". " or a final "."), not at a decimal point.
    line = re.split(r"\.(?=\s|$)", line, maxsplit=1)[0]
    line = line.strip().strip("$").strip()
    return line or None


def _strip_math_delimiters(text: str) -> str:
    t = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\[", "\\]"), ("\\(", "\\)")):
        if t.startswith(left) and t.endswith(right) and len(t) >= len(left) + len(right):
            t = t[len(left) : len(t) - len(right)].strip()
            break
    return t


def _bare_answer(text: str) -> str | None:
    """The whole text when it is an answer on its own (no prose, one line, short)."""
    t = _strip_math_delimiters(text).rstrip(".").strip()
    if len(t) <= 200 and t.count("\n") == 1 and "\\text" in t:
        t = t.replace("\n", " ")  # a unit wrapped onto the next line
    if not t or "\n" in t or len(t) > 200 or "\\boxed" in t or "\\fbox" in t:
        return None
    no_text = re.sub(r"\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}", "", t)
    if _PROSE.search(no_text):
        return None
    return t


def extract_answers(text: str, *, last_number_fallback: bool = False) -> list[str]:
    """Every distinct candidate final answer, by the first rule that finds one.

    Rules, in order: boxed answers (all distinct ones, last last); "The final answer is"/"The
    answer is"; GSM8K ``#### N``; "A: N"; the whole text if it is a bare answer; the last number
    (only with ``last_number_fallback``). Empty when nothing is found.
    """
    boxed = boxed_answers(text)
    if boxed:
        distinct = list(dict.fromkeys(b for b in boxed if b))
        # The last boxed answer goes last, whatever order the distinct ones appeared in.
        if boxed[-1]:
            distinct.remove(boxed[-1])
            distinct.append(boxed[-1])
        return distinct
    for finder in (_answer_after_phrase, _gsm8k_answer, _a_colon_answer, _bare_answer):
        found = finder(text)
        if found:
            return [found]
    if last_number_fallback:
        numbers = _NUMBER.findall(text)
        if numbers:
            return [numbers[-1]]
    return []


def _line_after(text: str, pos: int) -> str | None:
    """The rest of the line at the first non-space character from ``pos`` (which may be on a later
    line), with surrounding spaces removed; ``""`` when only spaces (not only newlines) are left.

    This is what ``\\s*(.+?)\\s*$`` (multiline) captures at ``pos``, stripped, in linear time;
    None where that regex finds no match.
    """
    start = _SPACES.match(text, pos).end()
    if start == len(text):
        return "" if text.count("\n", pos) < len(text) - pos else None
    end = text.find("\n", start)
    return text[start : len(text) if end < 0 else end].strip()


def _gsm8k_answer(text: str) -> str | None:
    """The text after the last ``####`` marker (``#### 72``), or None."""
    found = None
    pos = text.find("####")
    while pos >= 0:
        line = _line_after(text, pos + 4)
        if line is None:
            break
        found = line
        end = text.find("\n", _SPACES.match(text, pos + 4).end())
        pos = -1 if end < 0 else text.find("####", end)
    return found


def _a_colon_answer(text: str) -> str | None:
    """The answer of the last line that starts with ``A:`` (``A: 18``), or None."""
    found = None
    pos = 0  # the start of a line
    while pos <= len(text):
        letter = _SPACES.match(text, pos).end()
        colon = _SPACES.match(text, letter + 1).end() if text.startswith("A", letter) else -1
        if colon >= 0 and text.startswith(":", colon):
            line = _line_after(text, colon + 1)
            if line is None:
                break
            found = line
            letter = _SPACES.match(text, colon + 1).end()
        # Every line start up to ``letter`` leads to the same character: go on after its line.
        end = text.find("\n", letter)
        if end < 0:
            break
        pos = end + 1
    return found.rstrip(".").strip("$").strip() if found is not None else None


def extract_answer(text: str, *, last_number_fallback: bool = False) -> str | None:
    """The final answer of a model output (the last one when several were boxed), or None."""
    found = extract_answers(text, last_number_fallback=last_number_fallback)
    return found[-1] if found else None


def _braces_balanced(text: str) -> bool:
    depth = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        depth += 1 if ch == "{" else -1 if ch == "}" else 0
        if depth < 0:
            return False
        i += 1
    return depth == 0


def parse_gold(text: str, gold_format: GoldFormat) -> str:
    """The gold answer (still LaTeX, not normalized) from a data set's field.

    ``answer``: the field is the answer (``$...$`` and a wrapping ``\\boxed{}`` are removed);
    ``math_solution``: the last boxed answer of a MATH solution; ``gsm8k``: the text after ``####``,
    which must be a number (thousands commas are allowed). Raises ``InvalidGoldError`` otherwise.
    """
    if gold_format not in GOLD_FORMATS:
        raise ValueError(f"unknown gold_format {gold_format!r}; expected one of {GOLD_FORMATS}")
    if not isinstance(text, str):
        raise InvalidGoldError(f"gold is {type(text).__name__}, not a string")
    if gold_format == "answer":
        gold = _strip_math_delimiters(text)
        boxed = last_boxed(gold)
        if boxed is not None and gold.startswith(("\\boxed", "\\fbox")):
            gold = boxed
    elif gold_format == "math_solution":
        gold = last_boxed(text) or ""
        if not gold:
            raise InvalidGoldError(f"no \\boxed{{}} answer in MATH solution ending {text[-80:]!r}")
    else:
        gold = _gsm8k_answer(text) or ""
        if not gold:
            raise InvalidGoldError(f"no '#### N' line in GSM8K answer ending {text[-80:]!r}")
        if not re.fullmatch(r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?", gold.replace(" ", "")):
            raise InvalidGoldError(f"GSM8K gold after '####' is not a number: {gold!r}")
    gold = gold.strip()
    if not gold:
        raise InvalidGoldError(f"empty gold answer ({gold_format}): {text[-80:]!r}")
    if len(gold) > MAX_ANSWER_CHARS:
        raise InvalidGoldError(f"gold answer longer than {MAX_ANSWER_CHARS} characters")
    if not _braces_balanced(gold):
        raise InvalidGoldError(f"unbalanced braces in gold answer {gold!r}")
    return gold
