"""Find the final answer in a model output, and the gold answer in a data set's record.

Covers: ``\\boxed{}`` / ``\\fbox{}`` with balanced braces (also ``\\boxed 2``); which boxes form the
final answer (``final_boxed``: the last box, joined with the boxes right before it when only
connectives stand between them, so "\\boxed{5} ... wait, \\boxed{6}" is 6 and "\\boxed{2} and
\\boxed{3}" is "2, 3"; also across "y_2 =", "\\text{ for part (a) and }" and "papers and"); "The final
answer is ...", "Final Answer: The volume is 120." (the value after the last "is" of a sentence; after
"Final Answer:", a sentence's only value), also when written after the last box (the box was an
intermediate result), "The answer is ...", "Answer $9$" (a line starting "Answer" before math; inline
math stays on one line), GSM8K ``#### N``, "A: N", a whole output that is itself a bare answer, the
concluding final sentence of an output without any marker (``sentences``: "Therefore,
there are 12 apples.", never any other number of the text), and an opt-in last-number fallback that
keeps fractions (``1/3``), mixed numbers (``3 1/2``) and clock times (``2:30``) whole. A text that is
visibly an escaped string literal (``\\\\frac``, ``\\n``) is read unescaped first (``unescape_literal``).
Gold parsing per data set: ``answer`` (MATH-500's ``answer`` field, the embedded set),
``math_solution`` (the final boxes of a MATH solution) and ``gsm8k`` (``#### N``, thousands commas).

Does not cover: deciding whether two answers are equal (``grading``), or rewriting LaTeX
(``normalize``). Everything here is linear-time string scanning, safe to run in-process.
"""

from __future__ import annotations

import re
from typing import Literal

from restem_pipeline.rewards.mathverify.sentences import (
    MAX_SENTENCE_CHARS,
    PROSE,
    TEXT_COMMAND,
    final_sentence_answer,
    masked_prose,
    math_spans,
    sole_value,
)

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


# A text that is visibly an escaped string literal: every LaTeX backslash doubled ("\\\\frac"), and
# otherwise only "\\n" and "\\"" escapes. One pass decodes it, left to right, like a string literal.
_BACKSLASH_RUN = re.compile(r"\\+")
_LITERAL_ESCAPE = re.compile(r'\\([\\n"])')
_DECODED = {"\\": "\\", "n": "\n", '"': '"'}


def unescape_literal(text: str, *, gold: bool = False) -> str:
    """The string an escaped dump of a text stands for, when the text is visibly one; else the text.

    It is one when every run of backslashes is doubled (2 or 4) or a single one before ``n`` or ``"``,
    and some doubled backslash starts a command (``\\\\frac``). A prediction must also show a single
    ``\\n`` or ``\\"`` escape: a model that writes ``-2 \\\\le x`` (a LaTeX line break, then "le") with no
    other sign of escaping is graded as written. A gold (data, not a model's output) needs no such sign.
    """
    if "\\\\" not in text:
        return text
    doubled_command = single_escape = False
    for m in _BACKSLASH_RUN.finditer(text):
        after = text[m.end() : m.end() + 1]
        size = len(m.group())
        if size in (2, 4):
            doubled_command |= size == 2 and after.isalpha()
        elif size == 1 and after in ("n", '"'):
            single_escape = True
        else:
            return text
    if not doubled_command or not (gold or single_escape):
        return text
    return _LITERAL_ESCAPE.sub(lambda m: _DECODED[m.group(1)], text)


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


def _boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """(start of ``\\boxed``, end of the box, content) of every box, in order of appearance."""
    starts = list(_BOXED_START.finditer(text))
    opens = {m.start(1) for m in starts if m.group(1) == "{"}
    closes = _matching_braces(text, opens) if opens else {}
    found: list[tuple[int, int, str]] = []
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
                found.append((m.start(), token_end, text[start:token_end]))
        elif start in closes:
            found.append((m.start(), closes[start] + 1, text[start + 1 : closes[start]].strip()))
    return found


def boxed_answers(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces) in order of appearance.

    ``\\boxed 2`` (no braces, as in a few MATH solutions) yields its single token. Unbalanced boxes
    (an output cut off mid-answer) are skipped.
    """
    return [content for _, _, content in _boxed_spans(text)]


# What may stand between boxes that together give one answer ("\\boxed{2}, \\boxed{3}", "$\\boxed{2}$
# and $\\boxed{3}$", "x = \\boxed{2} or x = \\boxed{3}"): spaces, punctuation, math delimiters, "and",
# "or", a variable and "=". Gaps are at most ``MAX_CONNECTIVE_CHARS`` long, so matching is bounded.
MAX_CONNECTIVE_CHARS = 40
# Also: a named quantity and "=" ("y_2 = \\boxed{...}"), a part label ("\\text{ for part (a) and }"), and one
# unit word before "and" ("\\boxed{1} papers and \\boxed{2} bins"). Each token starts differently or is
# bounded by ``\b``, so a gap (at most 40 characters) is matched without ambiguous backtracking.
_CONNECTIVE = re.compile(
    r"(?:\s|[$,;&]|\\[,;:! ()\[\]]|\\q?quad\b|\\\\|\\(?:text|mathrm|mbox)\s*\{|\}"
    r"|\b(?:and|or|for\s+part)\b|\(\w\)|\b[a-z]{2,}\b(?=,?\s+and\b)"
    r"|\b[a-zA-Z](?:_\{?\w+\}?)?\s*=)*"
)


def final_boxed(text: str) -> str | None:
    """The boxed final answer: the last non-empty box, with the boxes right before it that only
    connectives separate from it (their distinct contents joined by ", "); None without a box.

    A box followed by prose and another box was corrected: only the later one counts
    ("\\boxed{5}. Wait, correction: \\boxed{6}" is 6). Boxes side by side form one answer
    ("\\boxed{2} and \\boxed{3}" is "2, 3", which equals the gold "2, 3" or "\\{2, 3\\}", not "3").
    """
    parts = final_boxed_parts(text)
    return ", ".join(parts) if parts else None


def final_boxed_parts(text: str) -> list[str]:
    """The distinct contents of the boxes that form the final answer (see ``final_boxed``), in order."""
    return _final_parts(text, _boxed_spans(text))


def _final_parts(text: str, all_spans: list[tuple[int, int, str]]) -> list[str]:
    spans = [span for span in all_spans if span[2]]
    if not spans:
        return []
    run = [spans[-1]]
    for span in reversed(spans[:-1]):
        if span[1] > run[-1][0]:
            break  # nested boxes: the inner one (the later start) is the answer
        gap = text[span[1] : run[-1][0]]
        if len(gap) > MAX_CONNECTIVE_CHARS or not _CONNECTIVE.fullmatch(gap):
            break
        run.append(span)
    return list(dict.fromkeys(content for _, _, content in reversed(run)))


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces, else None."""
    found = boxed_answers(text)
    return found[-1] if found else None


# "The (final) answer is", "Final answer:", and a line starting "Answer:" (also "**Answer:**").
# A line starting "Answer" right before math ("Answer $9$", "Answer \\[ 9 \\]") counts as "Answer:".
_ANSWER_IS = re.compile(
    r"(?:final\s+answer|the\s+answer)\s*(?:is|:)\s*:?\s*"
    r"|^[ \t]*(?:\*\*)?answer(?:\s*:\s*(?:\*\*)?[ \t]*|[ \t]+(?=\$|\\[(\[]))",
    re.IGNORECASE | re.MULTILINE,
)
_FINAL_ANSWER_IS = re.compile(r"final\s+answer\s*(?:is|:)", re.IGNORECASE)
_SPACES = re.compile(r"\s*")
_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
# The last-number fallback reads a mixed number ("3 1/2"), a fraction ("1/3") or a clock time ("2:30")
# whole, before a plain number; each alternative is a fixed sequence of runs, so ``findall`` is linear.
_LAST_NUMBER = re.compile(
    r"(?<![\d/.])(?:(?P<mixed>(?P<whole>-?\d+) +(?P<num>\d+)/(?P<den>\d+))(?![\d/])"
    r"|(?P<fraction>-?\d+/\d+)(?![\d/]))"
    r"|(?P<time>\d{1,2}:\d\d)(?![\d:])"
    r"|(?P<number>" + _NUMBER + ")"
)
# "The volume of the box is 120": the value follows the sentence's last "is" (or "=").
_COPULA = re.compile(r"\b(?:is|are|was|were|equals|be)\s+|=\s*")


def _answer_after_phrase(text: str) -> str | None:
    """The answer following the last "The (final) answer is", as ``$...$`` / ``\\(...\\)`` / ``\\[...\\]``
    or up to the sentence end."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :]
    for left, right in (('\\"', '\\"'), ('"', '"'), ("“", "”")):
        # A quoted answer ("The final answer is \\"$12$ and $13$\\"") is the text between the quotes.
        if rest.startswith(left):
            closing = rest.find(right, len(left), max(rest.find("\n"), 0) or len(rest))
            if closing > len(left) and rest[len(left) : closing].strip():
                return rest[len(left) : closing].strip()
            break
    # Inline math (``$...$``, ``\\(...\\)``) stays on one line, as in Markdown; display math may span lines.
    if rest.startswith("$"):
        inner = re.match(r"\$\$((?:\\.|[^$\\])+)\$|\$((?:\\.|[^$\\\n])+)\$", rest)
        if inner:
            return (inner.group(1) or inner.group(2)).strip()
    if rest.startswith(("\\(", "\\[")):
        # "The final answer is \\((-6, 10)\\)": one match attempt, the first closing delimiter.
        closing = rest.find("\\)" if rest[1] == "(" else "\\]", 2)
        if closing > 2 and (rest[1] == "[" or "\n" not in rest[2:closing]):
            return rest[2:closing].strip() or None
    line = rest.split("\n", 1)[0]
    # End at a sentence-ending period (". " or a final "."), not at a decimal point.
    line = re.split(r"\.(?=\s|$)", line, maxsplit=1)[0]
    line = line.strip().strip("$").strip()
    value = _value_of_sentence(line)
    sentence = ":" in matches[-1].group() and "final" in matches[-1].group().lower()
    if sentence and value is line and len(line) <= MAX_SENTENCE_CHARS and PROSE.search(TEXT_COMMAND.sub("", line)):
        # "Final Answer: Jane started growing Sphere 3 hours ago.": after "Final Answer:" comes a
        # sentence; with one value, it states that value.
        value = sole_value(line) or line
    return value or None


def _value_of_sentence(line: str) -> str:
    """``line`` itself, or for a sentence ("The volume of the box is 120") what follows its last
    "is"/"are"/"was"/"equals"/"=" when that is not prose; a sentence without one stays whole."""
    if not PROSE.search(TEXT_COMMAND.sub("", line)):
        return line
    last = None
    for last in _COPULA.finditer(line):  # noqa: B007 (the last match is wanted)
        pass
    if last is None:
        return line
    tail = line[last.end() :].strip().strip("$").strip()
    return tail if tail and not PROSE.search(TEXT_COMMAND.sub("", tail)) else line


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
    if PROSE.search(no_text):
        return None
    spans = math_spans(t)
    if spans and any(w.lower() not in ("and", "or") for w in re.findall(r"[A-Za-z]{2,}", masked_prose(t, spans))):
        return None  # "Thus, $x + y = 6$.": words around math make a sentence (``sentences`` reads it)
    return t


def extract_answers(text: str, *, last_number_fallback: bool = False) -> list[str]:
    """The candidate final answers, by the first rule that finds one; the graded answer is last.

    Rules, in order: boxed answers (every distinct non-empty box, then the final answer of
    ``final_boxed`` last); "The final answer is"/"The answer is"; GSM8K ``#### N``; "A: N"; the whole
    text if it is a bare answer; the last number (only with ``last_number_fallback``). Empty when
    nothing is found.
    """
    text = unescape_literal(text)
    spans = _boxed_spans(text)  # one scan for every rule about boxes
    parts = _final_parts(text, spans)
    if parts:
        final = ", ".join(parts)
        distinct = [b for b in dict.fromkeys(content for _, _, content in spans) if b and b != final]
        stated = _final_answer_after_boxes(text, spans[-1][1])
        if stated is not None and stated != final:
            return [*distinct, final, stated]
        return [*distinct, final]
    for finder in (_answer_after_phrase, _gsm8k_answer, _a_colon_answer, _bare_answer, final_sentence_answer):
        found = finder(text)
        if found:
            return [found]
    if last_number_fallback:
        last = None
        for last in _LAST_NUMBER.finditer(text):  # noqa: B007 (the last match is wanted)
            pass
        if last is not None:
            return [_number_text(last)]
    return []


def _final_answer_after_boxes(text: str, boxes_end: int) -> str | None:
    """The answer of a "Final answer: ..." / "The final answer is ..." written after the last box
    (the box was an intermediate result: "... = \\boxed{255}. ... The final answer is $10,455$."); None
    when there is none, or when it is prose rather than a value."""
    last = None
    for last in _FINAL_ANSWER_IS.finditer(text, boxes_end):  # noqa: B007 (the last match is wanted)
        pass
    if last is None:
        return None
    stated = _answer_after_phrase(text[last.start() :])
    if stated is None or PROSE.search(TEXT_COMMAND.sub("", stated)):
        return None
    return stated


def _number_text(m: re.Match) -> str:
    """The answer a last-number match stands for: ``3 1/2`` as ``3\\frac{1}{2}`` (a mixed number;
    ``3 5/2`` is read as its fraction ``5/2``), a fraction or a clock time as written."""
    if m.group("mixed"):
        num, den = int(m.group("num")), int(m.group("den"))
        if 0 < num < den:
            return f"{m.group('whole')}\\frac{{{num}}}{{{den}}}"
        return f"{num}/{den}"
    return m.group(0)


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
    """The final answer of a model output (``final_boxed`` when it has boxes), or None."""
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
    ``math_solution``: the boxed final answer of a MATH solution (``final_boxed``); ``gsm8k``: the text after ``####``,
    which must be a number (thousands commas are allowed). Raises ``InvalidGoldError`` otherwise.
    """
    if gold_format not in GOLD_FORMATS:
        raise ValueError(f"unknown gold_format {gold_format!r}; expected one of {GOLD_FORMATS}")
    if not isinstance(text, str):
        raise InvalidGoldError(f"gold is {type(text).__name__}, not a string")
    text = unescape_literal(text, gold=True)
    if gold_format == "answer":
        gold = _strip_math_delimiters(text)
        boxed = final_boxed(gold)
        if boxed is None:
            boxed = last_boxed(gold)  # "\\boxed{}": an empty gold, reported as invalid below
        if boxed is not None and gold.startswith(("\\boxed", "\\fbox")):
            gold = boxed
    elif gold_format == "math_solution":
        gold = final_boxed(text) or ""
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
