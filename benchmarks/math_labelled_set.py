"""Build a labelled set of (prediction, gold, equivalent, family) items from real MATH and GSM8K answers.

Labels come from construction, not from any verifier: each gold answer is rewritten by rule
families that keep its value (``equivalent=True``) and perturbed by families that change it
(``equivalent=False``). Every item carries its ``family`` so the benchmark can report agreement per
family. A family only fires where it applies to the gold's type (a mixed number only for an
improper fraction, a reordered list only for an unordered solution list, ``^\\circ`` only when the
problem talks about degrees, ...).

Equivalent families: the gold itself; full model outputs with the answer in prose ("The final
answer is $X$. I hope it is correct.", "the answer is X", GSM8K ``#### X``, "A: X"); ``\\dfrac`` /
``\\tfrac``; ``\\left( \\right)``; ``\\!``/``\\,`` spacing; ``\\$``, ``\\%`` and ``^\\circ``
decorations; ``\\text{ cm}`` / ``\\mbox{ units}`` units; thousands separators; ``x = 5``; ``a/b``,
unreduced fractions and ``5.0``; mixed
numbers; repeating decimals; exact decimal <-> fraction; reordered solution lists; interval spacing;
``pmatrix`` <-> ``bmatrix``; equivalent symbolic forms (``\\frac{1}{2}\\sqrt{3}``, ``\\sqrt{8}`` for
``2\\sqrt2``, reordered / factored polynomials); ``\\pi`` forms; multiple-choice spellings;
scientific notation.

Issue 12's forms (equivalent): a wrong box corrected by a later box; each solution of a list boxed on
its own, side by side; "Final Answer: The volume of the box is X."; an inequality left unsolved
(``2x > 6``, ``-x < -3`` for ``(3, \\infty)``); ``\\{\\pm a\\}`` for ``-a, a``.

Non-equivalent families: near-miss decimals, non-terminating fractions rounded to a decimal, ``15``
for ``0.15``, flipped interval brackets, ``(n+2)!`` for ``n!``, sign flips, off-by-one, swapped
ordered pairs, a dropped or an extra solution, a wrong unit multiplier, another choice letter, a
changed radicand / power / coefficient, an output whose last box is a different answer than an
earlier boxed gold, a one-item gold boxed side by side with a different answer, a flipped relation
(``x < 3`` or ``-x > -3`` for ``(3, \\infty)``), and the problem's own literal expression restated
unevaluated (restem's restatement policy; every item carries its ``problem`` text).

Boxed answers are wrapped in model-output text with other numbers in the reasoning. Run
``python benchmarks/math_labelled_set.py --out FILE.jsonl`` to write the set.

Data: /work/shared/data (MATH-500 answers and problems, GSM8K test answers and questions); nothing
is copied into the repo.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

_INT = re.compile(r"-?\d+")
_DEC = re.compile(r"-?\d*\.\d+")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,(?:\\!)?\s*\d{3})+")  # "58,500" is one number, not a list
_FRAC = re.compile(r"(-?)\\[dt]?frac\s*(?:\{(\d+)\}\{(\d+)\}|(\d)(\d))")
_REASONING = [
    "Let $a = 3$ and $b = 4$, so $a + b = 7$ and $ab = 12$.\n\n",
    "We first note that $2 \\cdot 5 = 10$; subtracting $1$ gives $9$.\n\n",
    "Step 1: the total is $6 + 8 = 14$.\nStep 2: dividing by $2$ gives $7$.\n\n",
    "",
]
_BOXED = [
    "Putting it together, the answer is $\\boxed{{{a}}}$.",
    "The final answer is $\\boxed{{{a}}}$. I hope it is correct.",
    "So the result is \\boxed{{{a}}}",
    "Therefore,\n$$\\boxed{{{a}}}$$",
]
_UNIT_WORDS = [
    ("square units", "square units"), ("inches", "inches"), ("cm", "cm"), ("meters", "m"),
    ("feet", "feet"), ("miles", "miles"), ("dollars", "dollars"), ("cents", "cents"),
    ("hours", "hours"), ("minutes", "minutes"), ("days", "days"),
]  # fmt: skip


class Gold:
    """A gold answer with what the rules need to know about it."""

    def __init__(self, source: str, answer: str, problem: str):
        self.source = source
        self.text = answer
        self.problem = problem
        self.value = _rational(answer)
        self.is_int = self.value is not None and self.value.denominator == 1 and not _DEC.fullmatch(answer)
        self.is_interval = "interval" in problem.lower() or "\\cup" in answer or "\\infty" in answer
        self.list_parts = _solution_list(answer)


def _rational(g: str) -> Fraction | None:
    """The exact value of an integer, decimal, thousands-separated or simple-fraction gold."""
    s = g.strip()
    if _INT.fullmatch(s) or _DEC.fullmatch(s):
        return Fraction(s)
    if _THOUSANDS.fullmatch(s):
        return Fraction(re.sub(r"[,\\! ]", "", s))
    m = _FRAC.fullmatch(s)
    if m:
        a, b = (m.group(2), m.group(3)) if m.group(2) else (m.group(4), m.group(5))
        if int(b) == 0:
            return None
        return Fraction(int(a), int(b)) * (-1 if m.group(1) else 1)
    return None


def _split_top(text: str, seps: str = ",") -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch in seps and depth == 0 and text[i + 1 : i + 3] != "\\!" and text[i - 1 : i] != "\\":
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def _solution_list(g: str) -> list[str] | None:
    """The items of an unordered top-level list (``1,-2``, ``\\{a, b\\}``, ``3 \\pm 2\\sqrt2``)."""
    s = g.strip()
    if s.startswith("\\{") and s.endswith("\\}"):
        s = s[2:-2]
    if _THOUSANDS.fullmatch(s) or s.startswith(("(", "[", "\\left")) or "\\text" in s:
        return None
    parts = _split_top(s)
    if any(re.fullmatch(r"\d{3}", p) for p in parts[1:]):
        return None  # "\$115,000": thousands, not a list
    if len(parts) > 1 and len(set(parts)) == len(parts) and all(parts):
        return parts
    if s.count("\\pm") == 1 and "," not in s:
        return [s.replace("\\pm", "+"), s.replace("\\pm", "-")]
    return None


def _decimal(q: Fraction) -> str:
    """The exact decimal of a terminating fraction."""
    sign = "-" if q < 0 else ""
    q = abs(q)
    digits = 0
    while (q * 10**digits).denominator != 1:
        digits += 1
    s = str(int(q * 10**digits)).rjust(digits + 1, "0")
    return sign + (s[:-digits] + "." + s[-digits:] if digits else s)


def _terminating(q: Fraction) -> bool:
    d = q.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def _frac(q: Fraction, cmd: str = "\\frac") -> str:
    if q.denominator == 1:
        return str(q.numerator)
    sign = "-" if q < 0 else ""
    return f"{sign}{cmd}{{{abs(q.numerator)}}}{{{q.denominator}}}"


def _repeating(q: Fraction) -> str | None:
    """``0.1\\overline{6}`` for 1/6; None for a terminating fraction or a long period."""
    sign = "-" if q < 0 else ""
    q = abs(q)
    whole, rem, den = q.numerator // q.denominator, q.numerator % q.denominator, q.denominator
    digits: list[str] = []
    seen: dict[int, int] = {}
    while rem and rem not in seen:
        seen[rem] = len(digits)
        rem *= 10
        digits.append(str(rem // den))
        rem %= den
    if not rem or len(digits) - seen[rem] > 8:
        return None
    start = seen[rem]
    return f"{sign}{whole}.{''.join(digits[:start])}\\overline{{{''.join(digits[start:])}}}"


def _scientific(q: Fraction) -> str | None:
    if q == 0:
        return None
    exp = math.floor(math.log10(abs(q)))
    mantissa = q / Fraction(10) ** exp
    if not _terminating(mantissa) or len(_decimal(mantissa)) > 8:
        return None
    m = _decimal(mantissa)
    return random.choice(
        [
            f"{m} \\times 10^{{{exp}}}",
            f"{m}\\cdot 10^{{{exp}}}",
            f"{m}\\times10^{exp}" if 0 <= exp < 10 else f"{m}\\times10^{{{exp}}}",
        ]
    )


def _with_sep(n: int) -> str:
    sep = random.choice([",", "{,}", "\\,", ",\\!"])
    return f"{n:,}".replace(",", sep)


def _reorder_terms(expr: str) -> str | None:
    """``x^2 - 3x + 1`` -> ``1 - 3x + x^2`` (top-level terms reversed), None for one term."""
    terms, depth, cur = [], 0, ""
    for ch in expr.strip():
        if ch in "{(":
            depth += 1
        elif ch in "})":
            depth -= 1
        if ch in "+-" and depth == 0 and cur.strip() and not cur.rstrip().endswith(("^", "_")):
            terms.append(cur.strip())
            cur = ch
        else:
            cur += ch
    terms.append(cur.strip())
    if len(terms) < 2:
        return None
    signed = [t if t[0] in "+-" else "+" + t for t in terms][::-1]
    out = " ".join(f"{t[0]} {t[1:].strip()}" for t in signed)
    return out[2:] if out.startswith("+ ") else "-" + out[2:]


_POLY_TERM = re.compile(r"([+-]?)\s*(\d*)\s*(?:([a-z])(?:\^\{?(\d+)\}?)?)?")


def _poly(expr: str) -> tuple[str, dict[int, int]] | None:
    """(variable, {power: coefficient}) of a one-variable integer polynomial, else None."""
    s = expr.replace(" ", "")
    if not s or not re.fullmatch(r"[-+0-9a-z^{}]+", s):
        return None
    coeffs: dict[int, int] = {}
    var = None
    pos = 0
    while pos < len(s):
        m = _POLY_TERM.match(s, pos)
        if not m or m.end() == pos or not (m.group(2) or m.group(3)):
            return None
        if m.group(3):
            if var not in (None, m.group(3)):
                return None
            var = m.group(3)
        power = int(m.group(4) or 1) if m.group(3) else 0
        coef = int(m.group(2) or 1) * (-1 if m.group(1) == "-" else 1)
        coeffs[power] = coeffs.get(power, 0) + coef
        pos = m.end()
    return (var, coeffs) if var else None


def _poly_text(var: str, coeffs: dict[int, int]) -> str:
    out = ""
    for p in sorted(coeffs, reverse=True):
        c = coeffs[p]
        if c == 0:
            continue
        mag = abs(c)
        body = (str(mag) if mag != 1 or p == 0 else "") + (var if p else "") + (f"^{p}" if p > 1 else "")
        out += (" - " if c < 0 else " + ") + body if out else ("-" if c < 0 else "") + body
    return out or "0"


def _factored(expr: str) -> str | None:
    """A factored form of an integer polynomial: common factor, ``x(...)``, or integer roots."""
    parsed = _poly(expr)
    if parsed is None:
        return None
    var, coeffs = parsed
    if sum(1 for c in coeffs.values() if c) < 2:
        return None
    g = math.gcd(*coeffs.values())
    if g > 1:
        return f"{g}\\left({_poly_text(var, {p: c // g for p, c in coeffs.items()})}\\right)"
    low = min(p for p, c in coeffs.items() if c)
    if low > 0:
        inner = _poly_text(var, {p - low: c for p, c in coeffs.items()})
        return f"{var}{'^' + str(low) if low > 1 else ''}({inner})"
    if max(coeffs) == 2 and coeffs.get(2) == 1:
        b, c = coeffs.get(1, 0), coeffs.get(0, 0)
        disc = b * b - 4 * c
        root = math.isqrt(disc) if disc >= 0 else -1
        if root >= 0 and root * root == disc and (b + root) % 2 == 0:
            roots = ((-b + root) // 2, (-b - root) // 2)
            return "".join(f"({var} - {r})" if r > 0 else f"({var} + {-r})" for r in roots)
    return None


def _question(problem: str) -> str:
    """The last sentence of a problem (what it asks for)."""
    parts = [p for p in re.split(r"(?<=[.?!])\s+", problem.strip()) if p]
    return parts[-1].lower() if parts else ""


def _units_in(problem: str) -> str:
    low = problem.lower()
    for word, unit in _UNIT_WORDS:
        if re.search(rf"\b{word}\b", low):
            return unit
    return "units"


def _reasoned(answer: str) -> str:
    return random.choice(_REASONING) + random.choice(_BOXED).format(a=answer)


# --- equivalent families: each returns (answer, full output or None) or None ----------------------
Made = tuple[str, str | None] | None


def eq_same(g: Gold) -> Made:
    return g.text, None


def eq_prose_final(g: Gold) -> Made:
    out = random.choice(_REASONING) + f"The final answer is ${g.text}$. I hope it is correct."
    return g.text, out


def eq_prose_answer_is(g: Gold) -> Made:
    plain = g.value is not None and "\\" not in g.text
    answer = g.text if plain else f"${g.text}$"
    lead = random.choice(["So the answer is ", "Therefore, the answer is ", "The answer is: "])
    return g.text, random.choice(_REASONING) + lead + answer + random.choice([".", "", ".\n"])


def eq_gsm8k_hash(g: Gold) -> Made:
    if g.value is None or "\\" in g.text:
        return None
    answer = _with_sep(int(g.value)).replace("\\,", ",") if g.is_int and abs(g.value) >= 1000 else g.text
    answer = answer.replace("{,}", ",").replace(",\\!", ",")
    return answer, f"She makes 9 * 2 = <<9*2=18>>18 a day, then 18 + 4 = 22.\n#### {answer}"


def eq_a_colon(g: Gold) -> Made:
    if g.value is None:
        return None
    answer = g.text if "\\" not in g.text else f"${g.text}$"
    return g.text, f"Q: What is the result?\nWe add 2 and 3 to get 5, then work on.\nA: {answer}"


def eq_dfrac_tfrac(g: Gold) -> Made:
    if "frac" not in g.text:
        return None
    cmd = random.choice(["\\dfrac", "\\tfrac"]) if "\\dfrac" not in g.text else "\\frac"
    return re.sub(r"\\[dt]?frac(?![a-z])", lambda _: cmd, g.text), None


def eq_left_right(g: Gold) -> Made:
    s = g.text
    if "\\left" in s:
        return re.sub(r"\\(?:left|right)\s*", "", s), None
    if not re.search(r"[(\[]", s) or s.count("(") + s.count("[") != s.count(")") + s.count("]"):
        return None
    out = re.sub(r"(?<!\\)([(\[])", r"\\left\1 ", s)
    return re.sub(r"([)\]])", r" \\right\1", out), None


def eq_thin_space(g: Gold) -> Made:
    if g.is_int and g.value is not None and abs(g.value) >= 1000:
        return f"{int(g.value):,}".replace(",", ",\\!"), None
    if re.search(r"\d\s*(?:\\sqrt|\\pi|[a-z])", g.text):
        return re.sub(r"(\d)\s*(\\sqrt|\\pi|[a-z])", r"\1\\,\2", g.text, count=1), None
    return None


def eq_currency(g: Gold) -> Made:
    if "\\$" in g.text:
        return g.text.replace("\\$", ""), None
    if (
        g.value is None
        or g.value < 0
        or not re.search(r"\bdollars?\b|\bcents?\b|how much (?:money|did|does|do|will|would)", _question(g.problem))
    ):
        return None
    if g.is_int:
        return random.choice([f"\\${g.text}", f"\\$ {g.text}", f"\\${g.text}.00"]), None
    return f"\\${g.text}", None


def eq_percent(g: Gold) -> Made:
    if "\\%" in g.text:
        return g.text.replace("\\%", ""), None
    if g.value is None or not re.search(r"what percent|percentage|as a percent", _question(g.problem)):
        return None
    return g.text + random.choice(["\\%", "%", " \\%"]), None


def eq_degrees(g: Gold) -> Made:
    if re.fullmatch(r"-?\d+(?:\.\d+)?\s*\^\\circ", g.text):
        return g.text.replace("^\\circ", random.choice(["", "^{\\circ}", "°", " \\text{ degrees}"])), None
    if g.value is None or not re.search(r"in degrees|how many degrees|degree measure|measure of", _question(g.problem)):
        return None
    return g.text + random.choice(["^\\circ", "^{\\circ}", "°"]), None


def eq_units(g: Gold) -> Made:
    m = re.fullmatch(r"(.*?[\d}])\s*\\(?:text|mbox)\{\s*[a-z ]+\}(\^2)?", g.text)
    if m:
        return m.group(1), None
    if g.value is None or g.value < 0:
        return None
    unit = _units_in(g.problem)
    return g.text + random.choice([f" \\text{{ {unit}}}", f"\\text{{ {unit}}}", f"\\mbox{{ {unit}}}"]), None


def eq_thousands(g: Gold) -> Made:
    if not g.is_int or g.value is None or abs(g.value) < 1000:
        return None
    if not _INT.fullmatch(g.text):  # the gold is written with separators: give the plain number
        return str(int(g.value)), None
    return _with_sep(int(g.value)), None


def eq_named_var(g: Gold) -> Made:
    if re.search(r"[=,<>]|\\le|\\ge|\\text|\\mbox|\\in|\\cup|matrix|\\pm", g.text) or g.text.startswith("("):
        return None
    if re.search(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", g.text)):
        return None  # the gold has variables of its own: "x = x^2 + 1" would not name it
    return random.choice(["x = ", "k=", "n = ", "a=", "y = "]) + g.text, None


def eq_mixed_number(g: Gold) -> Made:
    q = g.value
    if q is None or q.denominator == 1 or abs(q) < 1:
        return None
    whole, rest = divmod(abs(q.numerator), q.denominator)
    sign = "-" if q < 0 else ""
    cmd = random.choice(["\\frac", "\\tfrac"])
    return f"{sign}{whole}{random.choice(['', ' '])}{cmd}{{{rest}}}{{{q.denominator}}}", None


def eq_plain_forms(g: Gold) -> Made:
    """``a/b``, an unreduced ``\\frac{3a}{3b}``, ``5.0``, ``\\frac{10}{2}``."""
    q = g.value
    if q is None:
        return None
    if g.is_int:
        n = int(q)
        return random.choice([f"{n}.0", f"{n}.00", f"\\frac{{{2 * n}}}{{2}}"]), None
    if "frac" not in g.text:
        return None
    sign = "-" if q < 0 else ""
    a, b = abs(q.numerator), q.denominator
    return random.choice([f"{sign}{a}/{b}", f"{sign}\\frac{{{3 * a}}}{{{3 * b}}}", f"\\frac{{{sign}{a}}}{{{b}}}"]), None


def eq_repeating(g: Gold) -> Made:
    if g.value is None or _terminating(g.value):
        return None
    rep = _repeating(g.value)
    return (rep, None) if rep else None


def eq_decimal_fraction(g: Gold) -> Made:
    q = g.value
    if q is None or q.denominator == 1 and g.is_int:
        return None
    if _DEC.fullmatch(g.text) or _THOUSANDS.fullmatch(g.text):
        if g.text.startswith((".", "-.")):
            return random.choice([g.text.replace(".", "0.", 1), _frac(q)]), None
        return _frac(q), None
    return (_decimal(q), None) if _terminating(q) else None


def eq_reordered_list(g: Gold) -> Made:
    parts = g.list_parts
    if not parts:
        return None
    rev = parts[::-1]
    options = [", ".join(rev), "\\{" + ", ".join(rev) + "\\}", ", ".join(f"x = {p}" for p in rev)]
    if len(parts) == 2:
        options.append(f"x = {rev[0]} \\text{{ or }} x = {rev[1]}")
    return random.choice(options), None


def eq_interval_spacing(g: Gold) -> Made:
    if not g.is_interval or not re.search(r"[(\[].*,.*[)\]]", g.text):
        return None
    s = re.sub(r"\\(?:left|right)\s*", "", g.text)
    if random.random() < 0.5:
        s = re.sub(r"\s*,\s*", " , ", s)
        s = re.sub(r"([(\[])\s*", r"\1 ", s)
        return re.sub(r"\s*([)\]])", r" \1", s), None
    return s.replace(" ", ""), None


def eq_matrix_env(g: Gold) -> Made:
    if "pmatrix" not in g.text:
        return None
    s = g.text.replace("pmatrix", "bmatrix")
    return (s if random.random() < 0.5 else re.sub(r"\s+", "", s).replace("\\end", " \\end")), None


def eq_symbolic_form(g: Gold) -> Made:
    s = g.text.replace(" ", "")
    m = re.fullmatch(r"(-?)\\frac\{\\sqrt\{(\d+)\}\}\{(\d+)\}", s)
    if m:
        return f"{m.group(1)}\\frac{{1}}{{{m.group(3)}}}\\sqrt{{{m.group(2)}}}", None
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\\sqrt\{(\d+)\}\}\{(\d+)\}", s)
    if m:
        return f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(4)}}}\\sqrt{{{m.group(3)}}}", None
    m = re.fullmatch(r"(-?)(\d+)\\sqrt\{?(\d+)\}?", s)
    if m:
        return f"{m.group(1)}\\sqrt{{{int(m.group(2)) ** 2 * int(m.group(3))}}}", None
    m = re.fullmatch(r"\\sqrt\{(\d+)\}", s)
    if m:
        return random.choice([f"{m.group(1)}^{{1/2}}", f"\\frac{{\\sqrt{{{4 * int(m.group(1))}}}}}{{2}}"]), None
    if re.search(r"[a-z]", re.sub(r"\\[a-z]+", "", g.text)) and not re.search(r"[=,<>()\\]", g.text):
        factored = _factored(g.text)
        if factored and random.random() < 0.7:
            return factored, None
        reordered = _reorder_terms(g.text)
        return (reordered, None) if reordered else None
    return None


def eq_pi_forms(g: Gold) -> Made:
    s = g.text.replace(" ", "")
    m = re.fullmatch(r"(-?)(\d+)\\pi", s)
    if m:
        return random.choice([f"{m.group(1)}\\pi\\cdot{m.group(2)}", f"{m.group(1)}{m.group(2)}\\cdot\\pi"]), None
    m = re.fullmatch(r"(-?)\\frac\{(\d*)\\pi\}\{(\d+)\}", s)
    if m:
        a = m.group(2) or "1"
        return random.choice(
            [f"{m.group(1)}\\frac{{{a}}}{{{m.group(3)}}}\\pi", f"{m.group(1)}{a}\\pi/{m.group(3)}"]
        ), None
    if s == "\\pi":
        return random.choice(["1\\pi", "\\frac{2\\pi}{2}"]), None
    if "\\pi" in s and re.fullmatch(r"[\d+\\pi]+", s):
        reordered = _reorder_terms(g.text)
        return (reordered, None) if reordered else None
    return None


def eq_multiple_choice(g: Gold) -> Made:
    m = re.fullmatch(r"\\text\{\(([A-E])\)\}", g.text)
    if not m:
        return None
    letter = m.group(1)
    return random.choice([f"({letter})", letter, f"\\textbf{{({letter})}}", f"\\mathrm{{({letter})}}"]), None


def eq_scientific(g: Gold) -> Made:
    q = g.value
    if q is None or not (abs(q) >= 1000 and g.is_int or 0 < abs(q) < Fraction(1, 100) and _terminating(q)):
        return None
    sci = _scientific(q)
    return (sci, None) if sci else None


# --- issue 12's answer forms ---------------------------------------------------------------------
_FLIP = {"<": ">", ">": "<", "\\le": "\\ge", "\\ge": "\\le", "\\leq": "\\geq", "\\geq": "\\leq"}


def _wrong(g: Gold) -> str | None:
    wrong = ne_off_by_one(g) or ne_symbolic_change(g) or ne_sign_flip(g)
    return None if wrong is None else wrong[0]


def eq_corrected_box(g: Gold) -> Made:
    """A wrong boxed answer, then prose, then the gold boxed: the last box is the answer."""
    w = _wrong(g)
    if w is None:
        return None
    fix = random.choice(["Wait, that is not right; correcting it, the answer is", "Correction: it should be"])
    return g.text, random.choice(_REASONING) + f"First attempt: $\\boxed{{{w}}}$. {fix} $\\boxed{{{g.text}}}$."


def eq_boxes_together(g: Gold) -> Made:
    """Each solution of an unordered list boxed on its own, the boxes side by side."""
    parts = g.list_parts
    if not parts:
        return None
    sep = random.choice([", ", " and ", "$ and $", ", \\quad "])
    boxed = sep.join(f"\\boxed{{{p}}}" for p in parts)
    return ", ".join(parts), random.choice(_REASONING) + f"The solutions are ${boxed}$."


def eq_final_sentence(g: Gold) -> Made:
    """A sentence after "Final Answer:", the number after its "is": "The volume of the box is X."."""
    if g.value is None:
        return None
    answer = g.text if "\\" not in g.text else f"${g.text}$"
    lead = random.choice(["The volume of the box is", "The number of ways is", "The requested value is"])
    return g.text, random.choice(_REASONING) + f"Final Answer: {lead} {answer}."


def _interval_relation(g: Gold) -> tuple[Fraction | None, Fraction | None, str, str] | None:
    """(lower, upper, lower op, upper op) of an interval gold with rational ends (None: infinite)."""
    s = re.sub(r"\\(?:left|right)\s*", "", g.text).replace(" ", "")
    m = re.fullmatch(r"([(\[])(.+?),(.+?)([)\]])", s)
    if not m or not g.is_interval:
        return None  # "(1, 2)" is a point unless the problem asks for an interval
    lo = None if m.group(2) in ("-\\infty", "-\\inf") else _rational(m.group(2))
    hi = None if m.group(3) in ("\\infty", "+\\infty") else _rational(m.group(3))
    if (lo is None and "infty" not in m.group(2)) or (hi is None and "infty" not in m.group(3)):
        return None
    if lo == hi is None or (lo is not None and hi is not None and lo >= hi):
        return None
    return lo, hi, "<" if m.group(1) == "(" else "\\le", "<" if m.group(4) == ")" else "\\le"


def eq_solved_relation(g: Gold) -> Made:
    """An interval gold as an unsolved inequality: ``2x > 6`` or ``-x < -3`` for ``(3, \\infty)``."""
    rel = _interval_relation(g)
    if rel is None:
        return None
    lo, hi, lo_op, hi_op = rel
    k = random.choice([2, 3])
    if lo is not None and hi is not None:
        return f"{_frac(k * lo)} {lo_op} {k}x {hi_op} {_frac(k * hi)}", None
    if hi is None:  # x > lo
        op = {"<": ">", "\\le": "\\ge"}[lo_op]
        return random.choice([f"{k}x {op} {_frac(k * lo)}", f"-x {lo_op} {_frac(-lo)}"]), None
    return random.choice([f"{k}x {hi_op} {_frac(k * hi)}", f"-x {_FLIP[hi_op]} {_frac(-hi)}"]), None


def eq_pm_set(g: Gold) -> Made:
    """``\\{\\pm a\\}`` for a gold ``-a, a`` (either order) or ``\\pm a``."""
    parts = g.list_parts
    if not parts or len(parts) != 2:
        return None
    a, b = (p.replace(" ", "") for p in parts)
    if a.lstrip("+") == b.lstrip("-") and b.startswith("-"):
        return f"\\{{\\pm {a.lstrip('+')}\\}}", None
    if b.lstrip("+") == a.lstrip("-") and a.startswith("-"):
        return f"\\{{\\pm {b.lstrip('+')}\\}}", None
    return None


EQUIVALENT: list[Callable[[Gold], Made]] = [
    eq_same, eq_prose_final, eq_prose_answer_is, eq_gsm8k_hash, eq_a_colon, eq_dfrac_tfrac,
    eq_left_right, eq_thin_space, eq_currency, eq_percent, eq_degrees, eq_units, eq_thousands,
    eq_named_var, eq_plain_forms, eq_mixed_number, eq_repeating, eq_decimal_fraction, eq_reordered_list,
    eq_interval_spacing, eq_matrix_env, eq_symbolic_form, eq_pi_forms, eq_multiple_choice,
    eq_scientific, eq_corrected_box, eq_boxes_together, eq_final_sentence, eq_solved_relation, eq_pm_set,
]  # fmt: skip


# --- non-equivalent families -------------------------------------------------------------------
def ne_near_miss_decimal(g: Gold) -> Made:
    if not _DEC.fullmatch(g.text):
        return None
    last = int(g.text[-1])
    return g.text[:-1] + random.choice([str((last + 1) % 10), str((last - 1) % 10)]), None


def ne_rounded_fraction(g: Gold) -> Made:
    if g.value is None or _terminating(g.value):
        return None
    return f"{float(g.value):.{random.choice([2, 3, 6])}f}", None


def ne_percent_scale(g: Gold) -> Made:
    if g.value is None or "%" in g.text or g.value == 0:
        return None
    return _decimal(g.value / 100) if g.is_int else (_decimal(g.value * 100) if _terminating(g.value) else None), None


def ne_interval_brackets(g: Gold) -> Made:
    if not g.is_interval or "\\cup" in g.text:
        return None
    m = re.fullmatch(r"(\\left)?\s*([(\[])(.*),(.*?)(\\right)?\s*([)\]])", g.text)
    if not m:
        return None
    flip = {"(": "[", "[": "(", ")": "]", "]": ")"}
    lo, left, right, hi = m.group(2), m.group(3), m.group(4), m.group(6)
    if "infty" in left and "infty" in right:
        return None
    if "infty" in left or ("infty" not in right and random.random() < 0.5):
        hi = flip[hi]
    else:
        lo = flip[lo]
    return f"{lo}{left.strip()}, {right.strip()}{hi}", None


def ne_factorial_shift(g: Gold) -> Made:
    if not re.search(r"(\d+)!", g.text):
        return None
    return re.sub(r"(\d+)!", lambda m: f"{int(m.group(1)) + 2}!", g.text, count=1), None


def ne_sign_flip(g: Gold) -> Made:
    if g.value is not None:
        if not g.value:
            return None
        return (_frac(-g.value) if "frac" in g.text else _decimal(-g.value)), None
    if re.search(r"[=,<>]|\\text|\\pm|matrix|\\cup|^\(|^\\left", g.text):
        return None
    if g.text.startswith("-") and not re.search(r"[+-]", g.text[1:]):
        return g.text[1:].strip(), None
    return (f"-{g.text}" if not re.search(r"[+-]", g.text) else f"-({g.text})"), None


def ne_off_by_one(g: Gold) -> Made:
    if g.value is None:
        return None
    if g.is_int:
        return str(int(g.value) + random.choice([1, -1])), None
    if "frac" in g.text:
        return _frac(Fraction(g.value.numerator + 1, g.value.denominator)), None
    return None


def ne_swapped_tuple(g: Gold) -> Made:
    if g.is_interval or "matrix" in g.text:
        return None
    s = re.sub(r"\\(?:left|right)\s*", "", g.text).strip()
    if not (s.startswith("(") and s.endswith(")")):
        return None
    parts = _split_top(s[1:-1])
    if len(parts) < 2 or parts[0] == parts[1]:
        return None
    return "(" + ", ".join([parts[1], parts[0], *parts[2:]]) + ")", None


def ne_dropped_solution(g: Gold) -> Made:
    parts = g.list_parts
    return (", ".join(parts[:-1]), None) if parts else None


def ne_extra_solution(g: Gold) -> Made:
    if g.list_parts:
        extra = next(str(n) for n in (0, 1, -1, 2) if str(n) not in g.list_parts)
        return ", ".join([*g.list_parts, extra]), None
    if g.is_int and g.value:
        n = int(g.value)
        return random.choice([f"{n}, {-n}", f"\\pm {abs(n)}"]), None
    return None


def ne_unit_multiplier(g: Gold) -> Made:
    if g.value is None or g.value == 0:
        return None
    factor = random.choice([100, 1000, 60, 12])
    wrong = g.value * factor
    answer = _decimal(wrong) if _terminating(wrong) else _frac(wrong)
    return (answer + random.choice(["", f" \\text{{ {_units_in(g.problem)}}}"]), None)


def ne_choice_letter(g: Gold) -> Made:
    m = re.fullmatch(r"\\text\{\(([A-E])\)\}", g.text)
    if not m:
        return None
    other = "ABCDE"[("ABCDE".index(m.group(1)) + random.randint(1, 4)) % 5]
    return random.choice([f"\\text{{({other})}}", f"({other})", other]), None


def ne_symbolic_change(g: Gold) -> Made:
    s = g.text
    if re.search(r"\\sqrt\{(\d+)\}", s):
        return re.sub(r"\\sqrt\{(\d+)\}", lambda m: f"\\sqrt{{{int(m.group(1)) + 1}}}", s, count=1), None
    if "\\pi" in s and re.search(r"\d", s):
        return re.sub(r"\d+", lambda m: str(int(m.group(0)) + 1), s, count=1), None
    if re.search(r"[a-z]\^(\d)", s):
        return re.sub(r"([a-z])\^(\d)", lambda m: f"{m.group(1)}^{int(m.group(2)) + 1}", s, count=1), None
    return None


def ne_two_boxed(g: Gold) -> Made:
    """The gold boxed, then a different answer boxed last (the last box is the answer)."""
    w = _wrong(g)
    if w is None:
        return None
    if random.random() < 0.5:
        out = f"First attempt: $\\boxed{{{g.text}}}$. Checking again, the answer is $\\boxed{{{w}}}$."
    else:
        out = f"So we get $\\boxed{{{g.text}}}$, or maybe $\\boxed{{{w}}}$."
    return g.text + " | " + w, out


def ne_side_by_side(g: Gold) -> Made:
    """A one-item gold, and it boxed side by side with a different answer (two answers at once)."""
    w = None if g.list_parts else _wrong(g)
    if w is None:
        return None
    first, second = random.sample([g.text, w], 2)
    return f"{first} | {w}", random.choice(_REASONING) + f"So $\\boxed{{{first}}}$ and $\\boxed{{{second}}}$."


def ne_flipped_relation(g: Gold) -> Made:
    """A half-line gold's relation flipped: ``x < 3`` or ``-x > -3`` (negated, relation flipped twice)
    for ``(3, \\infty)``."""
    rel = _interval_relation(g)
    if rel is None or (rel[0] is None) == (rel[1] is None):
        return None
    lo, hi, lo_op, hi_op = rel
    if hi is None:  # gold x > lo; wrong: x < lo
        return random.choice([f"x {lo_op} {_frac(lo)}", f"-x {_FLIP[lo_op]} {_frac(-lo)}"]), None
    op = _FLIP[hi_op]  # gold x < hi; wrong: x > hi
    return random.choice([f"x {op} {_frac(hi)}", f"-x {hi_op} {_frac(-hi)}"]), None


_LITERAL_SEGMENT = re.compile(r"\$([^$]{3,80})\$")


def ne_restated(g: Gold) -> Made:
    """The problem's own literal expression, unevaluated, whose value is the gold ("What is
    $501^2-499^2$?" answered ``501^2-499^2``): a restatement earns nothing (issue 12). Candidates are
    found with restem's expression parser; the label is the policy, not a verdict."""
    if g.value is None:
        return None
    from restem_pipeline.rewards.mathverify.evaluate import exact_value
    from restem_pipeline.rewards.mathverify.latex_expr import ExprParseError, parse_expr, symbols_of
    from restem_pipeline.rewards.mathverify.restatement import in_simplest_form

    for segment in _LITERAL_SEGMENT.findall(g.problem):
        if not re.search(r"[-+*/^!]|\\(?:frac|sqrt|binom|dbinom|cdot|times|lfloor|lceil)", segment.strip().lstrip("-")):
            continue
        try:
            node = parse_expr(segment.replace("\\dbinom", "\\binom").replace("\\dfrac", "\\frac"))
        except (ExprParseError, ValueError, RecursionError):
            continue
        if not symbols_of(node) and not in_simplest_form(node) and exact_value(node) == g.value:
            return segment.strip(), None
    return None


PERTURBED: list[Callable[[Gold], Made]] = [
    ne_near_miss_decimal, ne_rounded_fraction, ne_percent_scale, ne_interval_brackets,
    ne_factorial_shift, ne_sign_flip, ne_off_by_one, ne_swapped_tuple, ne_dropped_solution,
    ne_extra_solution, ne_unit_multiplier, ne_choice_letter, ne_symbolic_change, ne_two_boxed,
    ne_side_by_side, ne_flipped_relation, ne_restated,
]  # fmt: skip


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    while i < len(text) and depth:
        depth += 1 if text[i] == "{" else -1 if text[i] == "}" else 0
        i += 1
    return text[start + len("\\boxed{") : i - 1].strip() if depth == 0 else None


def golds_of(limit_gsm8k: int, *, math_test: bool = True) -> list[Gold]:
    """Gold answers (with their problems) from MATH-500, the GSM8K test set and, with
    ``math_test``, the non-integer answers of the rest of the MATH test set (the last ``\\boxed{}``
    of each solution), so that the rarer answer types (intervals, tuples, lists, matrices,
    ``\\pi``, radicals) have more than a handful of items."""
    out = []
    seen = set()
    for line in (DATA / "math500" / "test.jsonl").open():
        row = json.loads(line)
        seen.add(row["problem"])
        out.append(Gold("math500", row["answer"].strip(), row["problem"]))
    if math_test:
        for line in (DATA / "math" / "test.jsonl").open():
            row = json.loads(line)
            answer = _last_boxed(row["solution"])
            if row["problem"] in seen or not answer or _INT.fullmatch(answer) or len(answer) > 80:
                continue
            out.append(Gold("math", answer, row["problem"]))
    for i, line in enumerate((DATA / "gsm8k" / "test.jsonl").open()):
        if i >= limit_gsm8k:
            break
        row = json.loads(line)
        out.append(Gold("gsm8k", row["answer"].split("####")[-1].strip().replace(",", ""), row["question"]))
    return out


def _restates(answer: str, gold: Gold) -> bool:
    """The answer is, spaces aside, one of the problem's ``$...$`` expressions (and not the gold)."""
    key = answer.replace(" ", "")
    if key == gold.text.replace(" ", ""):
        return False
    return any(seg.replace(" ", "") == key for seg in _LITERAL_SEGMENT.findall(gold.problem))


def _family(rule: Callable) -> str:
    return rule.__name__.removeprefix("eq_").removeprefix("ne_")


def labelled_set(*, seed: int = 0, limit_gsm8k: int = 600, per_family: int | None = 150) -> list[dict]:
    """The labelled items (deterministic for a seed); each has a ``family``.

    Families that apply to almost every gold (prose outputs, ``x = 5``, off-by-one, ...) are
    sampled down to ``per_family`` items so that plain integers do not dominate the figures.
    """
    random.seed(seed)
    items = []
    for gold in golds_of(limit_gsm8k):
        for label, rules in ((True, EQUIVALENT), (False, PERTURBED)):
            for rule in rules:
                made = rule(gold)
                if made is None or made[0] is None:
                    continue
                answer, output = made
                if not label and answer.replace(" ", "") == gold.text.replace(" ", ""):
                    continue
                if label and _restates(answer, gold):
                    continue  # "\\sqrt{720}" for "Simplify $\\sqrt{720}$.": a restatement, never equivalent
                items.append(
                    {
                        "source": gold.source,
                        "family": _family(rule),
                        "prediction": output if output is not None else _reasoned(answer),
                        "answer": answer,
                        "gold": gold.text,
                        "problem": gold.problem,
                        "equivalent": label,
                    }
                )
    if per_family is None:
        return items
    by_family: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_family.setdefault(item["family"], []).append(i)
    keep = set()
    for indices in by_family.values():
        keep.update(indices if len(indices) <= per_family else random.sample(indices, per_family))
    return [item for i, item in enumerate(items) if i in keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-family", type=int, default=150, help="at most this many items per family")
    args = parser.parse_args()
    items = labelled_set(seed=args.seed, per_family=args.per_family)
    with args.out.open("w") as f:
        for item in items:
            f.write(json.dumps(item) + "\n")
    print(f"{len(items)} items ({sum(i['equivalent'] for i in items)} equivalent) -> {args.out}")
    for family, n in sorted(Counter(i["family"] for i in items).items()):
        print(f"  {family}: {n}")


if __name__ == "__main__":
    main()
