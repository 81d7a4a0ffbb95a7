"""The embedded offline problem set: multi-step arithmetic word problems, deterministic by seed.

A problem at level L applies L operations (+, -, x, /) to a starting quantity, in the style of
GSM8K. Each problem has two kinds of worked solution:

- ``worked_solution``: one equation per step (``12 + 5 = 17. 17 * 3 = 51.``) ending in
  ``\\boxed{answer}``. The *pretraining pool* that builds the base model is written this way, so the
  base model's own samples look like it.
- ``human_solution``: what a person writes: terser and varied (several steps folded into one
  expression, running totals without operators, or prose). The SFT baseline trains on these, as the
  paper's human-data baseline does.

Levels skew easy in the pretraining pool and are uniform in the train/validation/test splits.
``parse_problem`` reads a problem's steps back from its words and ``right_steps`` tells a sample that
works them from one that reaches the right answer by a wrong chain (a diagnostic, never the reward).
Splits and the pool never share a problem text; ``exclude`` keeps given texts (another data seed's
pool and splits) out of a draw. Nothing here tokenizes or trains.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from restem_pipeline.data.schema import Problem

NAMES = [
    ("Ann", "She", "her"),
    ("Ben", "He", "him"),
    ("Cara", "She", "her"),
    ("Dev", "He", "him"),
    ("Eli", "He", "him"),
    ("Fay", "She", "her"),
    ("Gus", "He", "him"),
    ("Hana", "She", "her"),
    ("Ivo", "He", "him"),
    ("Jade", "She", "her"),
    ("Kai", "He", "him"),
    ("Lena", "She", "her"),
]
ITEMS = ["apple", "marble", "coin", "stamp", "book", "shell", "card", "pencil", "sticker", "cookie"]
# The held-out transfer set ``arith_ood`` (paper Figure 7's "transfer"): the same skill with names and
# items that appear nowhere in pretraining or training, and starting quantities up to 30 (training: 20).
OOD_NAMES = [("Omar", "He", "him"), ("Pia", "She", "her"), ("Raj", "He", "him"), ("Sol", "She", "her"),
             ("Tom", "He", "him"), ("Uma", "She", "her"), ("Vic", "He", "him"), ("Wen", "She", "her")]  # fmt: skip
OOD_ITEMS = ["button", "ticket", "bead", "leaf", "brick", "feather", "pebble", "ribbon"]
MAX_VALUE = 60
# Pretraining pool per level (1..5): skewed to easy levels but holding some hard ones, so the base
# model's samples at hard levels are sometimes right for the right reason (see README).
POOL_PER_LEVEL = (7000, 7000, 3000, 1500, 1500)


@dataclass(frozen=True)
class Step:
    op: str  # one of + - * /
    operand: int
    before: int
    after: int


@dataclass(frozen=True)
class ArithProblem:
    text: str
    start: int
    steps: tuple[Step, ...]
    name: str
    item: str

    @property
    def answer(self) -> int:
        return self.steps[-1].after

    @property
    def level(self) -> int:
        return len(self.steps)


# Every step's sentence templates, per operation: ``_sentence`` writes them, ``parse_problem`` reads them.
_TEMPLATES = {
    "+": ["{pron} buys {x} more.", "{pron} finds {x} more {item}s.", "A friend gives {obj} {x} more."],
    "-": ["{pron} gives away {x}.", "{pron} loses {x} {item}s.", "{pron} sells {x} of them."],
    "*": ["Then {pron_lower} gets {x} times as many.", "{pron} makes the pile {x} times bigger."],
    "/": ["{pron} splits them equally into {x} groups and keeps one group.", "{pron} keeps one of {x} equal shares."],
}


def _sentence(op: str, x: int, pron: str, obj: str, item: str, rng: random.Random) -> str:
    template = rng.choice(_TEMPLATES[op])
    return template.format(pron=pron, pron_lower=pron.lower(), obj=obj, item=item, x=x)


def _next_step(value: int, rng: random.Random) -> Step:
    while True:
        op = rng.choice("++--*/")
        if op == "+":
            x = rng.randint(1, 9)
            after = value + x
        elif op == "-":
            x = rng.randint(1, 9)
            after = value - x
        elif op == "*":
            x = rng.randint(2, 3)
            after = value * x
        else:
            divisors = [d for d in (2, 3) if value % d == 0 and value > 0]
            if not divisors:
                continue
            x = rng.choice(divisors)
            after = value // x
        if 0 <= after <= MAX_VALUE:
            return Step(op, x, value, after)


def make_problem(level: int, rng: random.Random, held_out: bool = False) -> ArithProblem:
    """A level-``level`` problem; ``held_out``: the transfer set's unseen names, items and start range."""
    if not 1 <= level <= 5:
        raise ValueError(f"level must be 1..5, got {level}")
    name, pron, obj = rng.choice(OOD_NAMES if held_out else NAMES)
    item = rng.choice(OOD_ITEMS if held_out else ITEMS)
    start = rng.randint(2, 30 if held_out else 20)
    steps, value = [], start
    for _ in range(level):
        step = _next_step(value, rng)
        steps.append(step)
        value = step.after
    sentences = [f"{name} has {start} {item}s."]
    sentences += [_sentence(s.op, s.operand, pron, obj, item, rng) for s in steps]
    sentences.append(f"How many {item}s does {name} have now?")
    return ArithProblem(" ".join(sentences), start, tuple(steps), name, item)


def worked_solution(p: ArithProblem) -> str:
    lines = [f"{s.before} {s.op} {s.operand} = {s.after}." for s in p.steps]
    return " ".join(lines) + f" The answer is \\boxed{{{p.answer}}}."


def _expression(start: int, steps: tuple[Step, ...] | list[Step]) -> str:
    """Steps folded into one correctly parenthesized expression, e.g. ``(12 + 5) * 3 - 7``."""
    expr = str(start)
    for s in steps:
        expr = f"({expr}) {s.op} {s.operand}" if s.op in "*/" and " " in expr else f"{expr} {s.op} {s.operand}"
    return expr


def human_solution(p: ArithProblem, rng: random.Random) -> str:
    """A terse, varied reference, as people write them: prose, folded steps, a one-line expression."""
    style = rng.randrange(3)
    if style == 0 or p.level == 1:  # prose with the arithmetic inline
        parts = [f"{s.before} {s.op} {s.operand} = {s.after}" for s in p.steps]
        body = parts[0] if len(parts) == 1 else ", then ".join(parts)
        return f"{p.name} has {body}. \\boxed{{{p.answer}}}"
    if style == 1:  # two steps folded into one expression per clause
        pairs = [p.steps[i : i + 2] for i in range(0, len(p.steps), 2)]
        parts = [f"{_expression(pair[0].before, pair)} = {pair[-1].after}" for pair in pairs]
        return "; ".join(parts) + f", so {p.name} has \\boxed{{{p.answer}}}."
    if p.level <= 3:  # the whole computation as one expression
        return f"{_expression(p.start, p.steps)} = {p.answer}. \\boxed{{{p.answer}}}"
    mid = len(p.steps) // 2
    first, second = p.steps[:mid], p.steps[mid:]
    return (
        f"First {_expression(p.start, first)} = {first[-1].after}. "
        f"Then {_expression(first[-1].after, second)} = {p.answer}. Answer: \\boxed{{{p.answer}}}"
    )


def _generate(counts: list[int], rng: random.Random, seen: set[str], held_out: bool = False) -> list[ArithProblem]:
    out = []
    for level, n in enumerate(counts, start=1):
        made = 0
        while made < n:
            p = make_problem(level, rng, held_out)
            if p.text in seen:
                continue
            seen.add(p.text)
            out.append(p)
            made += 1
    rng.shuffle(out)
    return out


_OPENING = re.compile(r"^(\w+) has (\d+) (\w+)s\.$")


def _template_pattern(template: str) -> re.Pattern[str]:
    """A template as a full-sentence pattern: the operand captured, names, pronouns and items any word."""
    pattern = re.escape(template).replace(re.escape("{x}"), r"(\d+)")
    for word in ("{pron}", "{pron_lower}", "{obj}", "{item}"):
        pattern = pattern.replace(re.escape(word), r"\w+")
    return re.compile(f"^{pattern}$")


_SENTENCES = [(_template_pattern(t), op) for op, templates in _TEMPLATES.items() for t in templates]
_EQUATION = re.compile(r"(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)")
_APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


def parse_problem(text: str) -> ArithProblem:
    """The problem ``make_problem`` wrote as ``text`` (its start and steps), read back from the words."""
    sentences = re.findall(r"[^.?]+[.?]", text)
    opening = _OPENING.match(sentences[0].strip()) if sentences else None
    if not opening or not sentences[-1].strip().startswith("How many"):
        raise ValueError(f"not an arith problem: {text!r}")
    name, value, item = opening.group(1), int(opening.group(2)), opening.group(3)
    start, steps = value, []
    for sentence in sentences[1:-1]:
        found = next(((m, op) for pattern, op in _SENTENCES if (m := pattern.match(sentence.strip()))), None)
        if found is None:
            raise ValueError(f"not an arith step: {sentence.strip()!r} in {text!r}")
        x = int(found[0].group(1))
        after = _APPLY[found[1]](value, x)
        steps.append(Step(found[1], x, value, after))
        value = after
    return ArithProblem(text, start, tuple(steps), name, item)


def right_steps(problem_text: str, completion: str) -> bool:
    """Whether ``completion`` works the problem's own steps (``worked_solution``'s equations, in order).

    The binary reward checks only the final answer; with answers of at most ``MAX_VALUE`` a wrong chain
    of steps often lands on the right one. This tells the two apart (a diagnostic, never the reward).
    """
    worked = worked_solution(parse_problem(problem_text))
    return _EQUATION.findall(completion) == _EQUATION.findall(worked)


def embedded_problem_set(
    seed: int = 0,
    n_train: int = 600,
    n_validation: int = 200,
    n_test: int = 400,
    name: str = "arith",
    exclude: set[str] | frozenset[str] | None = None,
) -> list[Problem]:
    """Train / validation / test problems, levels uniform, with human reference solutions.

    ``name="arith_ood"``: the held-out transfer set (``OOD_NAMES``, ``OOD_ITEMS``, starts up to 30).
    ``exclude``: problem texts never drawn (skipped like a repeat, so the counts per level stay): what
    another data seed's base model trained on and its runs scored (``assets/ingest.py``). Without it the
    draw is the one this seed always made.
    """
    held_out = name == "arith_ood"
    rng = random.Random(f"{name}-splits-{seed}" if held_out else f"arith-splits-{seed}")
    seen: set[str] = set(exclude or ())
    problems: list[Problem] = []
    for split, n in (("train", n_train), ("validation", n_validation), ("test", n_test)):
        per_level = [n // 5 + (1 if i < n % 5 else 0) for i in range(5)]
        for i, p in enumerate(_generate(per_level, rng, seen, held_out)):
            problems.append(
                Problem(
                    id=f"{name}/{split}/{i}",
                    domain="math",
                    prompt=p.text,
                    source=name,
                    split=split,
                    answer=str(p.answer),
                    level=p.level,
                    solution=human_solution(p, rng),
                )
            )
    return problems


def pretraining_pool(
    seed: int = 0, per_level: tuple[int, ...] = POOL_PER_LEVEL, exclude: set[str] | None = None
) -> list[tuple[str, str]]:
    """(problem text, worked solution) pairs for pretraining, disjoint from ``exclude`` texts."""
    rng = random.Random(f"arith-pool-{seed}")
    seen = set(exclude or ())
    return [(p.text, worked_solution(p)) for p in _generate(list(per_level), rng, seen)]
