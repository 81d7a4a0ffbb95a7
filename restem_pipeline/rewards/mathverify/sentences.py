"""The answer a sentence states: the concluding final sentence of an output that has no answer marker.

Covers: ``final_sentence_answer`` ("Therefore, there are 12 apples.", "So the ordered pair that
solves the system is $(7, 6)$.", "We find that $x < 3$.", "$x \\ge 5$ is the solution."): the last
sentence, after chat-template tokens ("<|im_start|>user") and "I hope it is correct." are dropped,
gives the answer when it concludes (it opens with "therefore", "thus", "so", "we find", ..., or
names the answer or solution, or the whole output is that one sentence; in text without sentence
punctuation the last capitalized "Therefore"/"So"/... starts it) and is not hedged ("about",
"roughly", "I think"). Its answer is the value after its last "is"/"are"/"="/":" when that value
ends the sentence (``stated_value``; "3 hours a week" gives 3), else its only value (``sole_value``:
one math segment or one number in the prose). ``sole_value`` also reads "Final Answer: Jane started
growing Sphere 3 hours ago." (``extraction``).

Does not cover: answer markers ("The final answer is", boxes, ``####``: ``extraction``) or what the
value means (``normalize``, ``grading``). Never any other number of the output: a sentence with two
values and no stated one gives nothing. All scans are linear, and a sentence over
``MAX_SENTENCE_CHARS`` is not read.
"""

from __future__ import annotations

import re

# Two English words in a row: the text is a sentence, not a bare answer.
PROSE = re.compile(r"(?<!\\)\b[A-Za-z]{2,}\s+[A-Za-z]{2,}\b")
TEXT_COMMAND = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}")

MAX_SENTENCE_CHARS = 400
_END_TOKEN = re.compile(r"(?:<\|[A-Za-z_]{1,24}\|>|</s>)\s*(?:user|assistant|system)?\s*$")
_SENTENCE_BREAK = re.compile(r"[.!?;](?=\s)|\n")
_BOILERPLATE = re.compile(
    r"(?:i\s+hope\s+(?:it|this|that)\s+(?:is|was)\s+(?:correct|right|helpful)|hope\s+(?:it|this)\s+helps)[.!]*",
    re.IGNORECASE,
)
_CONCLUDES = re.compile(
    r"(?:and\s+)?(?:therefore|thus|hence|so|consequently|finally|altogether|overall|in\s+(?:conclusion|total|all)"
    r"|we\s+(?:find|get|obtain|conclude|see|have)|this\s+(?:gives|means|shows))\b",
    re.IGNORECASE,
)
_NEW_CONCLUSION = re.compile(
    r"(?<![\w-])(?:Therefore|Thus|Hence|So|Consequently|Finally|In\s+conclusion|We\s+(?:find|get|obtain|conclude))\b"
)
# The sentence names the answer ("the answer", "our solution"; not the verb "answer the question").
_NAMES_ANSWER = re.compile(r"\b(?:the|our|my|final|an?)\s+(?:answer|solution)s?\b", re.IGNORECASE)
# A hedged value is no stated answer ("I think it is about 7 or so").
_HEDGE = re.compile(r"\b(?:about|around|approximately|roughly|nearly|almost|or\s+so|i\s+think|maybe|perhaps)\b", re.I)
# Where the stated value starts: after the last "is", "are", "be" (not "to be"), "it's", "=" or ":" of a sentence.
_TAIL_START = re.compile(r"\b(?:is|are|was|were|equals|(?<!to )be|it's|it’s)\s+|=\s*|:\s+")
# A number leading a tail, and the words that may follow it ("3 hours a week", "$31,800 a year").
_LEADING_NUMBER = re.compile(r"\$?(-?\d+(?:,\d{3})*(?:\.\d+)?%?)(?=\s)")
_WORDS_ONLY = re.compile(r"[A-Za-z/.\- ]+")
# A number in prose: digits with optional thousands commas, decimals, a fraction bar, a percent sign.
_PROSE_NUMBER = re.compile(r"(?<![\w.,/{^_\\])-?\d+(?:,\d{3})*(?:[.,]\d+)?(?:/\d+)?%?(?![\w/}^_])")
_MATH_OPEN = re.compile(r"\\\$|\$\$|\$|\\\(|\\\[")
_MATH_CLOSE = {"$$": re.compile(r"(?:\\.|[^$\\])*\$\$", re.DOTALL), "$": re.compile(r"(?:\\.|[^$\\])*\$", re.DOTALL)}


def math_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of each ``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]`` in order; one pass
    (an unclosed segment ends the scan)."""
    spans: list[tuple[int, int, str]] = []
    pos = 0
    while (m := _MATH_OPEN.search(text, pos)) is not None:
        opener = m.group()
        if opener == "\\$":
            pos = m.end()
            continue
        if opener in _MATH_CLOSE:
            close = _MATH_CLOSE[opener].match(text, m.end())
            if close is None:
                break
            end = close.end()
        else:
            end = text.find("\\)" if opener == "\\(" else "\\]", m.end())
            if end < 0:
                break
            end += 2
        spans.append((m.start(), end, text[m.end() : end - len(opener)].strip()))
        pos = end
    return spans


def masked_prose(text: str, spans: list[tuple[int, int, str]]) -> str:
    """``text`` with each math segment blanked out (same length), for reading its prose."""
    parts, pos = [], 0
    for start, end, _ in spans:
        parts += [text[pos:start], "\0" * (end - start)]
        pos = end
    return "".join([*parts, text[pos:]])


def _a_value(text: str) -> str | None:
    """``text`` unless it is empty or a lone letter (``$x$`` names the unknown, it states no value)."""
    return None if not text or re.fullmatch(r"[a-zA-Z]\.?", text) else text


def sole_value(sentence: str) -> str | None:
    """The only value of a sentence (one math segment, or one number in its prose), else None."""
    spans = math_spans(sentence)
    prose = masked_prose(sentence, spans)
    numbers = [m.group() for m in _PROSE_NUMBER.finditer(prose)]
    values = [content for _, _, content in spans] + numbers
    return _a_value(values[0]) if len(values) == 1 else None


def stated_value(sentence: str) -> str | None:
    """What follows the last "is"/"are"/"="/":" outside math when it is one value that ends the sentence
    ("... which is 1,000.99€", "... is $(7, 6)$"): one math segment, or plain text with at most one
    number that is not prose and not a negation ("is not 10"). A word with no number after it ("8
    quarts are used") is a value only in a sentence without any digit or math ("the day is Sunday")."""
    spans = math_spans(sentence)
    prose = masked_prose(sentence, spans)
    last = None
    for last in _TAIL_START.finditer(prose):  # noqa: B007 (the last match is wanted)
        pass
    if last is None:
        return None
    tail, rest = sentence[last.end() :].strip(), prose[last.end() :]
    tail_spans = [s for s in spans if s[0] >= last.end()]
    if len(tail_spans) == 1 and not rest.replace("\0", "").strip():
        return _a_value(tail_spans[0][2])  # exactly one math segment
    if tail_spans or not tail or tail.lower().startswith(("not ", "no ")):
        return None
    if PROSE.search(TEXT_COMMAND.sub("", tail)):
        return None
    numbers = len(_PROSE_NUMBER.findall(rest))
    if numbers > 1 or (numbers == 0 and (spans or re.search(r"\d", prose))):
        return None
    lead = _LEADING_NUMBER.match(tail)
    words = tail[lead.end() :].strip() if lead is not None else ""
    if _WORDS_ONLY.fullmatch(words) and re.search(r"[A-Za-z]", words):
        return lead.group(1)  # "3 hours a week": the number, its words dropped
    return tail


def final_sentence_answer(text: str) -> str | None:
    """The answer stated by the output's concluding final sentence (see above), or None."""
    if "\\boxed" in text or "\\fbox" in text:
        return None  # a box that could not be read (never closed) is where the answer was
    body = text.rstrip()
    for _ in range(8):  # chat-template tokens at the end ("... 2/3. <|im_start|>user")
        m = _END_TOKEN.search(body, max(0, len(body) - 48))
        if m is None:
            break
        body = body[: m.start()].rstrip()
    for _ in range(2):
        end = len(body.rstrip().rstrip(".!").rstrip())
        start = 0
        for m in _SENTENCE_BREAK.finditer(body, 0, end):
            start = m.end()
        sentence = body[start:end].strip()
        if not _BOILERPLATE.fullmatch(sentence):
            break
        body = body[:start]  # "I hope it is correct." closes the answer, it is none
    if not sentence or sentence.endswith("?"):
        return None
    whole = start == 0
    # Text without sentence punctuation ("... $y = 6$ So, the ordered pair is $(7, 6)$"): the last
    # capitalized conclusion word starts the final sentence.
    clause = None
    for clause in _NEW_CONCLUSION.finditer(sentence):  # noqa: B007 (the last match is wanted)
        pass
    if clause is not None and clause.start() > 0:
        sentence, whole = sentence[clause.start() :], False
    if len(sentence) > MAX_SENTENCE_CHARS:
        return None
    if not (whole or _CONCLUDES.match(sentence) or _NAMES_ANSWER.search(sentence)):
        return None
    if _HEDGE.search(masked_prose(sentence, math_spans(sentence))):
        return None
    return stated_value(sentence) or sole_value(sentence)
