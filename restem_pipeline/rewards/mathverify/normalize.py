"""Rewrite an extracted answer into one canonical LaTeX-ish string before it is split and compared.

Covers: math delimiters and a wrapping ``\\boxed{}``; ``\\dfrac``/``\\tfrac``/``\\cfrac``; ``\\left``,
``\\right`` and sizing commands (removed as whole commands, so ``\\left(`` never becomes ``\\le(``,
the Minerva bug); spacing (``\\!``, ``\\,``, ``~``, ``\\quad``); ``\\$``; ``\\%`` (kept as ``%``);
degree marks (``^\\circ``, ``^{\\circ}``, ``°`` kept as ``°``); ``\\text{...}`` and friends (units
after a value are dropped, a whole-text answer is unwrapped); thousands separators (``1,\\!000``,
``{,}`` and a whole answer like ``1,000``, never ``32, 349`` or ``0,111``); a currency sign or an
area unit glued to a whole number (``€5``, ``1,000.99m²``); braces grouping the whole answer
(``{1, 3}`` is ``1, 3``); relation symbols (``\\le``, ``\\geq``, ..., ``\\approx`` as ``≈``); "or" between
brackets (``(11,7)or(7,11)``);
``\\infty`` spellings; ``x \\in ...``; unicode minus, times, pi, sqrt; a trailing period; markdown bold
around the whole answer; a whole answer in number words (``three``, ``1.45 million``: ``number_words``),
also before unit words (``three apples``; never ``two thirds`` or ``three dozen``).

Does not cover: structure (lists, intervals, equations: ``structure``), numbers with special forms
(mixed numbers, repeating decimals: ``grading``), or any arithmetic. Rules follow the MATH answer
conventions of Hendrycks et al. (``is_equiv``/``strip_string``) and the PRM800K grader, with their
known over-eager rewrites avoided (no ``15`` for ``0.15``, no ``\\le(``).
"""

from __future__ import annotations

import re

_TEXT_CMDS = r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox|hbox|operatorname\*?)"
# Words that mean mathematics, never units.
MATH_WORDS = {
    "pi", "sqrt", "sin", "cos", "tan", "sec", "csc", "cot", "log", "ln", "exp", "arcsin", "arccos",
    "arctan", "sinh", "cosh", "tanh", "infty", "inf", "infinity", "or", "and", "i", "e",
}  # fmt: skip
_UNICODE = {
    "−": "-", "–": "-", "×": "\\times ", "·": "\\cdot ", "÷": "\\div ", "π": "\\pi ", "√": "\\sqrt",
    "∞": "\\infty ", "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne ", "∪": "\\cup ", "∈": "\\in ",
}  # fmt: skip
_SIZING = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)[lr]?(?![a-zA-Z])|\\displaystyle(?![a-zA-Z])")
_SPACING = re.compile(r"(?<!\\)\\[,;:! ]|\\q?quad(?![a-zA-Z])|~|\\(?:hspace|vspace)\*?\{[^{}]*\}")
_RELATIONS = [
    (r"\\(?:leq|leqslant|le)(?![a-zA-Z])", "≤"),
    (r"\\(?:geq|geqslant|ge)(?![a-zA-Z])", "≥"),
    (r"\\(?:neq|ne)(?![a-zA-Z])", "≠"),
    (r"\\lt(?![a-zA-Z])", "<"),
    (r"\\gt(?![a-zA-Z])", ">"),
    (r"<=", "≤"),
    (r">=", "≥"),
    (r"!=", "≠"),
    (r"\\approx(?![a-zA-Z])", "≈"),
]
# (A closing brace only with the opening one: in ``\\frac{90^\\circ}{2}`` it closes the numerator. No two
# optional runs of spaces side by side, ``\s*\{?\s*``: that is quadratic.)
_DEGREES = re.compile(r"\^\s*(?:\{\s*\\circ\s*\}|\\circ)|\\degree(?![a-zA-Z])|°")
# A bare unit tail needs a space before it ("20 miles", "4 cm^2"): "3qr" or "6xy^2" are products.
# The tail is a run of words, each optionally followed by a period, spaces and one exponent; these
# are the only characters allowed between (and after) its words. ``strip_units`` scans for it from
# the end of the answer, in linear time (a single regex with a repeated group of words and optional
# spaces backtracks exponentially in the number of words when the tail does not match).
_LETTERS = re.compile(r"[a-zA-Z]+")
_UNIT_GAP = re.compile(r"\.?\s*(?:\^\s*\{?\d\}?\s*)?")
_VALUE_END = re.compile(r"[\d}).°%]")
# A unit written in a text command after the value: "0.54\text{ m}", "15\mbox{ cm}^2".
_TEXT_UNIT_TAIL = re.compile(
    r"^(?P<value>.*?(?:[\d}).°%]|\\pi))\s*"
    r"\\(?:text|mbox|mathrm|textrm)\s*\{\s*(?P<unit>[a-zA-Z]+\.?(?:\s+[a-zA-Z]+\.?)*)\s*\}"
    r"\s*(?:\^\s*\{?\d\}?)?$"
)
# Short bare words that are units; other bare words need 3+ letters ("2 ab" is a product, not a
# unit, and so is "5 n": a one-letter unit is only dropped when written in \text{}).
SHORT_UNITS = {
    "cm", "mm", "km", "in", "ft", "yd", "mi", "kg", "mg", "lb", "lbs", "oz", "hr", "ml", "mph", "sq",
}  # fmt: skip
# A whole answer like "1,000" or "- 12,345.5": no space after a comma ("32, 349" is a list of two).
# (A first group of "0" is no thousands group: "0,111" is a list, or a decimal comma, never 111.)
_WHOLE_THOUSANDS = re.compile(r"-?\s*[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")
# A currency sign or an area/volume unit glued to a whole numeric answer: "€5", "1,000.99€", "12m²".
_GLUED_UNIT = re.compile(
    r"[€£¥]\s*(?P<a>-?\d[\d,]*(?:\.\d+)?)|(?P<b>-?\d[\d,]*(?:\.\d+)?)\s*(?:[€£¥]|(?:mm|cm|km|m|ft|in|yd)[²³])"
)
# Braces around the whole answer group it ("${1, 3}$" shows "1, 3"); ``\\{...\\}`` is a set, not this.
_GROUP = re.compile(r"\{([^{}]*)\}")


def _unwrap_text(text: str) -> str:
    """``\\text{abc}`` -> `` abc `` (one level at a time, innermost braces first)."""
    pattern = re.compile(_TEXT_CMDS + r"\s*\{([^{}]*)\}")
    for _ in range(5):
        new = pattern.sub(lambda m: " " + m.group(1) + " ", text)
        if new == text:
            break
        text = new
    return text


def _unit_tail(text: str) -> tuple[str, list[str]] | None:
    """(value, unit words) when ``text`` is a value, spaces and a unit tail; else None.

    The value is the shortest prefix that works: one line, ending in a digit, ``}``, ``)``, ``.``,
    ``°``, ``%`` or ``\\pi``, followed by whitespace and a tail of words (see ``_UNIT_GAP``).
    """
    words = [(m.start(), m.end()) for m in _LETTERS.finditer(text)]
    # Walk back from the end over words while what follows each word may follow a unit word.
    first, end = len(words), len(text)
    while first > 0 and _UNIT_GAP.fullmatch(text, words[first - 1][1], end):
        first -= 1
        end = words[first][0]
    newline = text.find("\n")
    for k in range(first, len(words)):
        start = words[k][0]
        value_end = start
        while value_end > 0 and text[value_end - 1].isspace():
            value_end -= 1
        if value_end == start or value_end == 0 or 0 <= newline < value_end:
            continue
        if _VALUE_END.match(text, value_end - 1) or text.endswith("\\pi", 0, value_end):
            return text[:value_end], [text[a:b] for a, b in words[k:]]
    return None


def strip_units(text: str) -> str:
    """Drop unit words after a value: ``20 miles`` -> ``20``, ``4 cm^2`` -> ``4``."""
    tail = _unit_tail(text)
    if tail is None:
        return text
    value, words = tail
    if any(w.lower() in MATH_WORDS or (len(w) < 3 and w.lower() not in SHORT_UNITS) for w in words):
        return text
    return value.strip()


def strip_text_unit(text: str) -> str:
    """Drop a unit written in ``\\text{}`` after a value: ``0.54\\text{ m}`` -> ``0.54``."""
    m = _TEXT_UNIT_TAIL.match(text)
    if not m or any(w.lower().rstrip(".") in MATH_WORDS for w in m.group("unit").split()):
        return text
    return m.group("value").strip()


# Markdown bold around the whole answer (``**73**``, ``__73__``), a trailing period allowed. Anchored at
# both ends with one group: linear in the answer's length.
_MARKDOWN_EMPHASIS = re.compile(r"(\*\*|__)([^*_].*?)\1\.?", re.DOTALL)


_SMALL_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
)
_SMALL = {w: i for i, w in enumerate(_SMALL_WORDS.split())}
_TENS_WORDS = "twenty thirty forty fifty sixty seventy eighty ninety"
_TENS = {w: 10 * i for i, w in enumerate(_TENS_WORDS.split(), start=2)}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_DECIMAL_SCALE = re.compile(r"(\d+(?:\.\d+)?) (thousand|million|billion|trillion)")


def _below_hundred(words: list[str]) -> int | None:
    """1-99 as "seven", "nineteen", "forty", "forty two"; None for anything else."""
    if len(words) == 1:
        return _SMALL.get(words[0], _TENS.get(words[0]))
    if len(words) == 2 and words[0] in _TENS and 1 <= _SMALL.get(words[1], 0) <= 9:
        return _TENS[words[0]] + _SMALL[words[1]]
    return None


def _below_thousand(words: list[str]) -> int | None:
    if len(words) >= 2 and words[1] == "hundred" and 1 <= _SMALL.get(words[0], 0) <= 9:
        rest = _below_hundred(words[2:]) if words[2:] else 0
        return None if rest is None else 100 * _SMALL[words[0]] + rest
    return _below_hundred(words)


def number_words(text: str) -> str | None:
    """The integer a whole answer spells out ("three", "twenty-one", "one hundred and five", "two
    thousand and six", "1.45 million") as digits; None for anything else (a word that is not a number
    word, number words that do not form one number such as "one two", a fraction of a unit)."""
    t = text.lower().replace("-", " ").replace(",", " ").strip()
    if m := _DECIMAL_SCALE.fullmatch(t):
        whole, _, frac = m.group(1).partition(".")
        value = (int(whole) * 10 ** len(frac) + int(frac or 0)) * _SCALES[m.group(2)]
        return str(value // 10 ** len(frac)) if value % 10 ** len(frac) == 0 else None
    words = [w for w in t.split() if w != "and"]
    if not words or len(words) > 16:
        return None
    total, chunk, last_scale = 0, [], None
    for w in [*words, None]:
        if w is not None and w not in _SCALES:
            chunk.append(w)
            continue
        if w is None and not chunk and last_scale is not None:
            break  # ends with a scale word: "three thousand"
        value = _below_thousand(chunk) if chunk else None
        if value is None or (w is not None and last_scale is not None and _SCALES[w] >= last_scale):
            return None  # an empty or malformed group, or scales out of order ("two million three billion")
        total += value * (_SCALES[w] if w else 1)
        chunk, last_scale = [], (_SCALES[w] if w else last_scale)
    return str(total)


# Words after a number that change its value, so "two thirds" or "three dozen" is never 2 or 3.
_VALUE_WORDS = {
    "half", "halves", "third", "thirds", "quarter", "quarters", "fourth", "fourths", "fifth", "fifths",
    "sixth", "sixths", "seventh", "sevenths", "eighth", "eighths", "ninth", "ninths", "tenth", "tenths",
    "hundredth", "hundredths", "thousandth", "thousandths", "millionth", "millionths", "percent",
    "percentage", "dozen", "dozens", "score", "gross", "squared", "cubed", "hundreds", "thousands",
    "millions", "billions", "point", "over", "plus", "minus", "times", "divided",
}  # fmt: skip
MAX_NUMBER_WORDS = 24


def leading_number_words(text: str) -> str | None:
    """Digits for number words before unit words: "three apples" -> "3". The unit words have 3+
    letters or are known short units, and none is a number word, a math word or a word that changes
    the value ("two thirds", "three dozen"); None for anything else."""
    words = text.split()
    if len(words) < 2 or len(words) > MAX_NUMBER_WORDS:
        return None
    for k in range(len(words) - 1, 0, -1):
        tail = [w.lower().rstrip(".") for w in words[k:]]
        if not all(
            w.isalpha()
            and (len(w) >= 3 or w in SHORT_UNITS)
            and w not in MATH_WORDS
            and w not in _VALUE_WORDS
            and number_words(w) is None
            and w not in _SCALES
            and w not in ("and", "hundred")
            for w in tail
        ):
            return None
        value = number_words(" ".join(words[:k]))
        if value is not None:
            return value
    return None


def normalize_answer(answer: str) -> str:
    """The canonical string form of an extracted answer (see the module docstring)."""
    s = answer.strip()
    if bold := _MARKDOWN_EMPHASIS.fullmatch(s):  # "The final answer is **73**."
        s = bold.group(2).strip()
    for bad, good in _UNICODE.items():
        s = s.replace(bad, good)
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"^\\(?:boxed|fbox)\s*\{(.*)\}$", r"\1", s, flags=re.DOTALL)
    s = re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", s)
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)  # TeX's \frac12 = \frac{1}{2} (one-digit arguments)
    s = re.sub(r"\\[dt]binom(?![a-zA-Z])", r"\\binom", s)
    s = re.sub(r"\{ ?, ?\}", "", s)  # 14{,}916 (also "14 {, }916")
    s = re.sub(r"(\d),\\!\s*(?=\d{3})", r"\1", s)  # 362,\!880
    s = _SIZING.sub("", s)
    s = re.sub(r"\\mathbb\s*\{?R\}?", r"(-\\infty,\\infty)", s)
    s = re.sub(r"\\(?:emptyset|varnothing)(?![a-zA-Z])|\\\{\s*\\\}", "∅", s)
    s = re.sub(r"\\%|%", "%", s)
    s = _DEGREES.sub("°", s)
    # A run of spaces is only tried from its start (trying it from each space is quadratic).
    s = re.sub(r"\\(?:text|mbox|mathrm)\s*\{\s*(?:or|and)\s*\}|(?<!\s)\s+(?:or|and)\s+", ",", s)
    s = re.sub(r"(?<=[)\]])(?:or|and)(?=[(\[])", ",", s)  # "(11,7)or(7,11)"
    s = strip_text_unit(_SPACING.sub(" ", s).strip())
    s = _unwrap_text(s)
    s = _SPACING.sub(" ", s)
    for pattern, repl in _RELATIONS:
        s = re.sub(pattern, repl, s)
    s = re.sub(r"\\(?:inf|infinity)(?![a-zA-Z])|(?<![a-zA-Z\\])(?:infinity|inf)(?![a-zA-Z])", r"\\infty", s)
    s = re.sub(r"^\s*[a-zA-Z]\s*\\in(?![a-zA-Z])", "", s)  # x \in [2, 5]
    s = re.sub(r"\s+", " ", s).strip()
    s = s.rstrip(".").strip()
    s = number_words(s) or s  # "three" -> 3, "1.45 million" -> 1450000 (before units: "million" is no unit)
    s = leading_number_words(s) or s  # "three apples" -> 3, "1.45 million dollars" -> 1450000
    s = strip_units(s)
    if group := _GROUP.fullmatch(s):
        s = group.group(1).strip()
    if glued := _GLUED_UNIT.fullmatch(s):
        s = glued.group("a") or glued.group("b")
    if _WHOLE_THOUSANDS.fullmatch(s):
        s = s.replace(",", "").replace(" ", "")
    return s
