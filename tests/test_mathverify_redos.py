"""Time bounds of the math verifier's in-process fast path on adversarial text (ReDoS and friends).

Covers: the reported hang (``strip_units`` used a regex exponential in the number of words after a
number), the other rewrites that were super-linear (degree marks, "or"/"and", GSM8K ``####`` and
"A:" lines, nested or unclosed boxes, many distinct boxes, exact arithmetic on huge quotients and
fractional powers), issue 21's scanners (final sentences, "Answer $9$", chains, decimal commas,
ratios, escaped LaTeX: long runs of each, and their pieces in the fuzz alphabet), the length limit
on predicted answers, and a seeded fuzz over the regexes' interesting characters through ``verify``
and ``normalize_answer`` with a time guard on every call.
The rewritten scanners are checked against the regexes and loops they replace on short inputs
(where those are fast).

Does not cover: the worker's time limit (``test_mathverify_workers``) or grading rules
(``test_mathverify_table``). Time limits here are hang guards, not benchmarks.
"""

from __future__ import annotations

import random
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from restem_pipeline.rewards.mathverify import Status, extract_answer, verify
from restem_pipeline.rewards.mathverify import api as api_module
from restem_pipeline.rewards.mathverify.evaluate import _int_nth_root
from restem_pipeline.rewards.mathverify.extraction import (
    MAX_ANSWER_CHARS,
    _a_colon_answer,
    _gsm8k_answer,
    boxed_answers,
    extract_answers,
)
from restem_pipeline.rewards.mathverify.grading import MAX_PREDICTED_CHARS, Grader, judge_answers
from restem_pipeline.rewards.mathverify.normalize import (
    MATH_WORDS,
    SHORT_UNITS,
    normalize_answer,
    strip_text_unit,
    strip_units,
)

REPORTED = "The answer is 5 word word word word word word word!"
CALL_LIMIT_S = 1.0  # any single call; the fast path takes milliseconds
HARD_STOP_S = 20.0  # past this a call is interrupted, so a regression fails instead of hanging


def _bounded(call: Callable[[], Any], what: str, limit_s: float = CALL_LIMIT_S) -> Any:
    """``call()``, failing when it takes ``limit_s`` or more (interrupted after ``HARD_STOP_S``)."""

    def _stop(signum, frame):
        raise TimeoutError(f"still running after {HARD_STOP_S:g}s: {what}")

    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _stop)
        signal.setitimer(signal.ITIMER_REAL, HARD_STOP_S)
    start = time.perf_counter()
    try:
        result = call()
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - start
    assert elapsed < limit_s, f"{elapsed:.2f}s (limit {limit_s:g}s): {what}"
    return result


def _show(text: str) -> str:
    return repr(text) if len(text) <= 120 else f"{text[:80]!r}... ({len(text)} chars)"


class _NoWorkers:
    """A pool that grades nothing: fuzzed pairs the fast path cannot decide come back as timeouts."""

    def run(self, jobs, *, timeout_s, workers=1):
        return [{"status": "timeout", "reason": "not sent to a worker in this test"} for _ in jobs]


@pytest.fixture
def fast_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``verify`` without sympy workers, so each call times the in-process path alone."""
    monkeypatch.setattr(api_module, "default_pool", lambda: _NoWorkers())


# -- the reported hang --------------------------------------------------------------------------


def test_reported_hang_verifies_in_well_under_a_second() -> None:
    r = _bounded(lambda: verify(REPORTED, "5"), REPORTED, limit_s=2.0)
    assert r.status is Status.INCORRECT and r.reward == 0.0
    assert r.predicted == "5 word word word word word word word!"


@pytest.mark.parametrize("words", [7, 8, 30, 90])
def test_words_after_a_number_are_graded_quickly(words: int) -> None:
    prediction = "The answer is 5" + " word" * words + "!"
    r = _bounded(lambda: verify(prediction, "5"), _show(prediction))
    assert r.status is Status.INCORRECT


@pytest.mark.parametrize("words", [7, 100, 1000, 5000])
def test_strip_units_is_linear_in_the_words_after_a_number(words: int) -> None:
    no_unit = "5" + " word" * words + "!"
    assert _bounded(lambda: strip_units(no_unit), _show(no_unit)) == no_unit
    assert _bounded(lambda: normalize_answer(no_unit), _show(no_unit)) == no_unit
    units = "5" + " miles" * words
    assert _bounded(lambda: strip_units(units), _show(units)) == "5"
    dotted = "5 " + "ab." * words + "!"
    assert _bounded(lambda: strip_units(dotted), _show(dotted)) == dotted


def test_strip_units_cases() -> None:
    assert strip_units("20 miles") == "20"
    assert strip_units("4 cm^2") == "4"
    assert strip_units("4 cm^{2} per sq. ft.") == "4"
    assert strip_units("99\\pi square inches") == "99\\pi"
    assert strip_units("(1, 2) units") == "(1, 2)"
    assert strip_units("5\nmiles") == "5"
    assert strip_units("a\n5 miles") == "a\n5 miles"  # the value is one line
    assert strip_units("5 cm 5 miles") == "5 cm 5"  # the unit tail has no bare digits
    assert strip_units("2 ab cm") == "2 ab cm"  # the shortest value wins, and "ab" is no unit
    for kept in ("3qr", "2 ab", "5 n", "5 pi", "3 sin x", "5 word!", "miles", "5 miles 3"):
        assert strip_units(kept) == kept
    assert strip_text_unit("0.54\\text{ m}") == "0.54"
    assert strip_text_unit("15\\mbox{ cm}^2") == "15"


# -- the rewritten scanners are the regexes and loops they replace --------------------------------

# The regexes and loop as they were (fast on the short inputs used here).
_OLD_UNIT_TAIL = re.compile(r"^(?P<value>.*?(?:[\d}).°%]|\\pi))\s+(?P<unit>(?:[a-zA-Z]+\.?\s*(?:\^\s*\{?\d\}?)?\s*)+)$")
_OLD_GSM8K = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_OLD_A_COLON = re.compile(r"^\s*A\s*:\s*(.+?)\s*$", re.MULTILINE)


def _old_strip_units(text: str) -> str:
    m = _OLD_UNIT_TAIL.match(text)
    if not m:
        return text
    words = re.findall(r"[a-zA-Z]+", m.group("unit"))
    if any(w.lower() in MATH_WORDS or (len(w) < 3 and w.lower() not in SHORT_UNITS) for w in words):
        return text
    return m.group("value").strip()


def _old_gsm8k(text: str) -> str | None:
    found = _OLD_GSM8K.findall(text)
    return found[-1].strip() if found else None


def _old_a_colon(text: str) -> str | None:
    found = _OLD_A_COLON.findall(text)
    return found[-1].strip().rstrip(".").strip("$").strip() if found else None


def _old_boxed(text: str) -> list[str]:
    found: list[str] = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*(\{|[^\s{\\])", text):
        if m.group(1) != "{":
            token = re.match(r"[^\s$.,;]+", text[m.start(1) :])
            if token:
                found.append(token.group(0))
            continue
        depth, i = 1, m.end()
        while i < len(text) and depth:
            ch = text[i]
            if ch == "\\":
                i += 2
                continue
            depth += 1 if ch == "{" else -1 if ch == "}" else 0
            i += 1
        if depth == 0:
            found.append(text[m.end() : i - 1].strip())
    return found


def _random_texts(seed: int, alphabet: list[str], count: int, max_tokens: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_tokens))) for _ in range(count)]


UNIT_ALPHABET = [
    "5", "2", "}", ")", ".", "°", "%", "\\pi", " ", "  ", "\n", "\t", "\u2003", "cm", "m", "mi", "miles",
    "sq", "ft", "pi", "ab", "a", "in", "and", "^", "^2", "^{2}", "^{2", "^2}", "^ {3}", "{", "x", "!",
    "\\", "٣", "\\text{ m}",
]  # fmt: skip


def test_unit_scanner_matches_the_regex_it_replaces() -> None:
    for text in _random_texts(11, UNIT_ALPHABET, 4000, 9):
        assert strip_units(text) == _old_strip_units(text), repr(text)


def test_line_scanners_match_the_regexes_they_replace() -> None:
    alphabet = ["#", "##", "####", "A", "A:", ":", " ", "  ", "\n", "\n\n", "\t", "\r", "5", "x", ".", "$", "\u00a0"]
    for text in _random_texts(12, alphabet, 6000, 12):
        assert _gsm8k_answer(text) == _old_gsm8k(text), repr(text)
        assert _a_colon_answer(text) == _old_a_colon(text), repr(text)


def test_boxed_scanner_matches_the_loop_it_replaces() -> None:
    alphabet = ["\\boxed", "\\fbox", "\\boxed{", "{", "}", "\\", "\\\\", " ", "1", "x", "$", ",", "\\{", "\\}", "\n"]
    for text in _random_texts(13, alphabet, 6000, 12):
        assert boxed_answers(text) == _old_boxed(text), repr(text)


# -- answers too long to grade ---------------------------------------------------------------------


def test_an_overlong_answer_is_not_graded() -> None:
    # Worth 5, but 607 characters: not graded (and never a reward), whatever its value.
    long_five = "5" + "+0" * 303
    r = verify(f"\\boxed{{{long_five}}}", "5")
    assert r.status is Status.UNPARSEABLE_PREDICTION and r.reward == 0.0
    assert "too long" in r.reason
    # The same limit holds in the worker (``judge_answers`` runs there too).
    status, _ = judge_answers([long_five], "5", Grader())
    assert status == "unparseable_prediction"
    # Boxes side by side form one answer: an overlong one among them is not graded either.
    assert verify(f"\\boxed{{{long_five}}}, \\boxed{{5}}", "5").status is Status.UNPARSEABLE_PREDICTION
    # A later box after prose corrects the overlong one: only the later one is graded.
    assert verify(f"\\boxed{{{long_five}}} so \\boxed{{5}}", "5").status is Status.CORRECT


def test_answers_up_to_the_limit_are_graded() -> None:
    sum_201 = "+".join(["1"] * 201)  # 401 characters
    assert len(sum_201) <= MAX_PREDICTED_CHARS
    assert verify(f"\\boxed{{{sum_201}}}", "201").status is Status.CORRECT
    # A long gold allows predictions twice its length.
    gold = "+".join(["1"] * 300)  # 599 characters
    spaced = " + ".join(["1"] * 300)  # 1,197 characters
    assert verify(f"\\boxed{{{spaced}}}", gold).status is Status.CORRECT
    assert verify(f"\\boxed{{{spaced} + 0}}", gold).status is Status.UNPARSEABLE_PREDICTION


def test_an_overlong_answer_is_extracted_whole_but_reported_cut() -> None:
    answer = "1" * 3000
    assert extract_answer(f"\\boxed{{{answer}}}") == answer  # never a truncated answer to grade
    r = verify(f"\\boxed{{{answer}}}", "1")
    assert r.status is Status.UNPARSEABLE_PREDICTION
    assert r.predicted == answer[:MAX_ANSWER_CHARS] and r.candidates == (answer[:MAX_ANSWER_CHARS],)


# -- exact arithmetic stays bounded ----------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "(3^{5000})^{\\frac{9999}{2}}",  # a 40-million-bit power
        "/".join(["9^{9999}", "7^{9998}"] * 27),  # a chain of quotients of 30,000-bit numbers
        "\\frac{3000!+1}{2999!}^{\\frac{1}{2}}",  # the square root of a 30,000-bit number
    ],
)
def test_huge_exact_values_are_refused_quickly(fast_path_only: None, answer: str) -> None:
    r = _bounded(lambda: verify(f"\\boxed{{{answer}}}", "5"), answer)
    assert r.status is not Status.CORRECT


def test_integer_roots() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        n = rng.randint(2, 64)
        x = rng.getrandbits(rng.randint(1, 4000))
        if rng.random() < 0.4:
            x = max(0, rng.getrandbits(rng.randint(1, 300)) ** n + rng.choice([-1, 0, 1]))
        root = _int_nth_root(x, n)
        assert root**n <= x < (root + 1) ** n, (x, n)


# -- adversarial inputs and fuzz ---------------------------------------------------------------------

ADVERSARIAL = {
    "words after a number": "5 " + "word " * 200 + "!",
    "one-letter words": "1" + " a" * 500,
    "unit words": "5" + " cm^2 miles." * 300 + " x",
    "nested boxes": "\\boxed{" * 300,
    "closed nested boxes": "\\boxed{" * 300 + "1" + "}" * 300,
    "boxes without braces": "\\boxedx" * 700,
    "many distinct boxes": "".join(f"\\boxed{{{i}}}" for i in range(700)),
    "text commands": "\\text{" * 700,
    "text units": "1\\text{ a" * 600,
    "exponents": "^{" * 1000,
    "degree spaces": "1^" + " " * 4000 + "x",
    "spaces before or": "1" + " " * 4000 + "x or 2",
    "digits": "1" * 4000,
    "commas": "1," * 2000,
    "spaces": " " * 4000 + "x",
    "dollars": "$" * 4000,
    "newlines": "\n" * 4000,
    "blank lines then A": " \n" * 2000 + "A: 5",
    "gsm8k spaces": "#### a" + " " * 4000 + "b",
    "hashes": "#" * 4000,
    "A: spaces": "A: a" + " " * 4000 + "b",
    "answer is spaces": "The answer is" + " " * 4000 + "x",
    "nested sets": "\\{1," * 80 + "2" + "\\}" * 80,
    "nested parentheses": "(" * 1000 + "1" + ")" * 1000,
    "fractions": "\\frac{" * 500 + "1" + "}{2}" * 500,
    "sqrt": "\\sqrt{" * 500 + "2" + "}" * 500,
    "pm": "1 \\pm " * 500,
    "matrix": "\\begin{pmatrix}" + "1 & " * 500 + "\\end{pmatrix}",
    # Issue 21's scanners: final sentences, markers, chains, commas, escapes.
    "conclusion words": "Therefore " * 800 + "5",
    "copulas": "So it is " + "is " * 1500 + "5",
    "digit commas": "Therefore it is " + "1," * 2000 + "x",
    "digit runs with words": "So he has " + "12 apples " * 400,
    "unclosed dollars": "Therefore " + "$ a " * 1000,
    "unclosed parens math": "So " + "\\( a " * 1000,
    "chat tokens": "So it is 5. " + "<|im_start|>user " * 500,
    "hope": "I hope it is correct. " * 500,
    "answer spaces": "Answer" + " " * 4000 + "x",
    "final answers": "\\boxed{1} " + "Final Answer: " * 800,
    "approx chain": "x = " + "1 \\approx " * 300 + "2",
    "equals chain": "x = " + "1+1 = " * 300 + "2",
    "ratios": "1:" * 1000 + "2",
    "semicolons": "(" + "0;" * 1000 + "0)",
    "abs bars": "1 < " + "|x|" * 300 + " < 2",
    "doubled backslashes": "\\\\frac{1}{2}\\n" * 500,
    "escaped runs": "\\\\" * 2000 + "n",
    "sums": "\\sum_{k=0}^{n} " * 200 + "k",
    "glued units": "1," * 2000 + "m²",
    "decimal comma": "1" * 3000 + ",5",
    "connective words": "\\boxed{1}" + " papers and \\boxed{2}" * 300,
    "named lists": ",".join(f"A{i}=1" for i in range(300)),
}

GOLDS = ["5", "\\frac{1}{2}", "\\text{Friday}", "(1, 2]", "x = 3", "20\\%", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"]
WRAPPERS = ["{}", "\\boxed{{{}}}", "The final answer is {}", "#### {}", "A: {}", "${}$"]


def _check_everywhere(text: str, gold: str) -> None:
    _bounded(lambda: normalize_answer(text), f"normalize_answer({_show(text)})")
    _bounded(lambda: extract_answers(text, last_number_fallback=True), f"extract_answers({_show(text)})")
    for wrapper in WRAPPERS:
        prediction = wrapper.format(text)
        r = _bounded(lambda p=prediction: verify(p, gold), f"verify({_show(prediction)}, {gold!r})")
        assert isinstance(r.status, Status)
        if r.predicted is not None and len(r.predicted) > max(MAX_PREDICTED_CHARS, 2 * len(gold)):
            assert r.status is Status.UNPARSEABLE_PREDICTION


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_inputs_are_bounded(fast_path_only: None, name: str) -> None:
    _check_everywhere(ADVERSARIAL[name], "5")


# The characters and pieces the verifier's regexes look for.
FUZZ_ALPHABET = [
    "5", "1", "0", "9", " ", "  ", "\n", "\t", ".", ",", ";", ":", "}", "{", ")", "(", "[", "]", "°", "%",
    "$", "$$", "#", "####", "A:", "A", "^", "^{", "^2", "_", "\\", "\\\\", "\\pi", "\\circ", "\\text{",
    "\\mbox{", "\\mathrm{", "\\boxed{", "\\boxed ", "\\fbox{", "\\frac", "\\dfrac", "\\left(", "\\right)",
    "\\sqrt", "\\!", "\\,", "\\{", "\\}", "\\in", "\\le", "\\infty", "\\overline{", "\\begin{pmatrix}",
    "\\end{pmatrix}", "&", "word", "cm", "m", "miles", "pi", "or", "and", "x", "The answer is ",
    "final answer: ", "=", "<", "-", "+", "*", "/", "!", "²", "\u00a0", "−", "×", "π",
    "Therefore, ", "So ", " is ", "<|im_start|>", "I hope it is correct.", "Answer ", "\\approx", "≈", "€",
    "m²", "\\sum_{k=0}^{n}", "|", "\\n", '\\"', "\\\\", " and ", "AB=", "about ",
]  # fmt: skip


def _fuzz_text(rng: random.Random) -> str:
    """Random tokens, long runs of one or two tokens, or a mixture; up to about 5,000 characters."""
    target = rng.choice([20, 100, 300, 480, 1000, 5000])
    parts: list[str] = []
    size = 0
    while size < target:
        mode = rng.random()
        if mode < 0.4:
            piece = "".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randint(1, 40)))
        else:
            unit = "".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randint(1, 2)))
            piece = unit * rng.randint(1, max(1, (target - size) // len(unit)))
        parts.append(piece)
        size += len(piece)
    return "".join(parts)[: rng.randint(1, target)]


def test_fuzz_is_bounded(fast_path_only: None) -> None:
    rng = random.Random(20240611)
    for _ in range(600):
        _check_everywhere(_fuzz_text(rng), rng.choice(GOLDS))
