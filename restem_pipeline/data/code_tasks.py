"""A small embedded code task: generated stdin/stdout problems with tests and a reference solution.

``embedded_code_problems(seed, n)`` draws ``n`` problems from eight templates (sum times K, reverse
words, range, count a character, digit sum, multiples of K, gcd, sort), each with its parameters and
five test inputs drawn from ``random.Random(seed)``: the same seed gives the same problems. Expected
outputs come from a host-side Python function per template (no program is executed here); the
reference ``solution`` is source code that ``restem demo`` and the tests run in the sandbox. Prompts
use the APPS format. Splits: every tenth problem is ``test``, the one before it ``validation``.
Not a benchmark: it only lets the pipeline exercise the code domain offline.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from restem_pipeline.data.code_problems import apps_prompt
from restem_pipeline.data.schema import Problem


@dataclass(frozen=True)
class _Template:
    name: str
    level: int
    statement: str  # may use {k} / {c}
    solution: str  # may use {k} / {c}
    make_input: Callable[[random.Random], str]
    solve: Callable[[str, dict], str]


def _ints(rng: random.Random, lo: int = -50, hi: int = 50) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(1, 8))]


def _list_input(rng: random.Random) -> str:
    xs = _ints(rng)
    return f"{len(xs)}\n{' '.join(map(str, xs))}\n"


def _nums(text: str) -> list[int]:
    return list(map(int, text.split()[1:]))


_WORDS = ["apple", "river", "stone", "cloud", "green", "quick", "lamp", "zebra", "tiger", "moon"]

TEMPLATES = [
    _Template(
        "sum_times_k",
        1,
        "Read N, then N integers. Print their sum multiplied by {k}.",
        "n = int(input())\nxs = list(map(int, input().split()))\nprint(sum(xs) * {k})\n",
        _list_input,
        lambda s, p: str(sum(_nums(s)) * p["k"]),
    ),
    _Template(
        "reverse_words",
        1,
        "Read one line of words separated by spaces. Print the words in reverse order, separated by single spaces.",
        "print(' '.join(input().split()[::-1]))\n",
        lambda r: " ".join(r.choice(_WORDS) for _ in range(r.randint(1, 6))) + "\n",
        lambda s, p: " ".join(s.split()[::-1]),
    ),
    _Template(
        "range",
        1,
        "Read N, then N integers. Print the largest minus the smallest.",
        "n = int(input())\nxs = list(map(int, input().split()))\nprint(max(xs) - min(xs))\n",
        _list_input,
        lambda s, p: str(max(_nums(s)) - min(_nums(s))),
    ),
    _Template(
        "count_char",
        1,
        "Read one line of lowercase letters. Print how many times the letter '{c}' occurs in it.",
        "print(input().count('{c}'))\n",
        lambda r: "".join(r.choice("abcde") for _ in range(r.randint(1, 20))) + "\n",
        lambda s, p: str(s.strip().count(p["c"])),
    ),
    _Template(
        "digit_sum",
        2,
        "Read a non-negative integer N (up to 30 digits). Print the sum of its decimal digits.",
        "print(sum(int(d) for d in input().strip()))\n",
        lambda r: str(r.randint(0, 10 ** r.randint(1, 30))) + "\n",
        lambda s, p: str(sum(int(d) for d in s.strip())),
    ),
    _Template(
        "multiples",
        2,
        "Read N. Print, separated by spaces, every integer from 1 to N divisible "
        "by {k}; print 'none' if there is none.",
        "n = int(input())\nm = [str(i) for i in range(1, n + 1) if i % {k} == 0]\n"
        "print(' '.join(m) if m else 'none')\n",
        lambda r: f"{r.randint(1, 40)}\n",
        lambda s, p: " ".join(str(i) for i in range(1, int(s) + 1) if i % p["k"] == 0) or "none",
    ),
    _Template(
        "gcd",
        2,
        "Read two positive integers A and B on one line. Print their greatest common divisor.",
        "import math\na, b = map(int, input().split())\nprint(math.gcd(a, b))\n",
        lambda r: f"{r.randint(1, 10**6)} {r.randint(1, 10**6)}\n",
        lambda s, p: str(math.gcd(*map(int, s.split()))),
    ),
    _Template(
        "sort",
        3,
        "Read N, then N integers. Print them in non-decreasing order on one line, "
        "separated by spaces, then on a second line the number of distinct values.",
        "n = int(input())\nxs = sorted(map(int, input().split()))\nprint(*xs)\nprint(len(set(xs)))\n",
        _list_input,
        lambda s, p: " ".join(map(str, sorted(_nums(s)))) + f"\n{len(set(_nums(s)))}",
    ),
]


def embedded_code_problems(seed: int = 0, n: int = 40, tests_per_problem: int = 5) -> list[Problem]:
    """``n`` generated stdin/stdout problems, deterministic in ``seed``, each with a reference solution."""
    if n < 1 or tests_per_problem < 1:
        raise ValueError(f"need n >= 1 and tests_per_problem >= 1, got n={n}, tests={tests_per_problem}")
    rng = random.Random(seed)
    problems = []
    for i in range(n):
        t = TEMPLATES[i % len(TEMPLATES)]
        params = {"k": rng.randint(2, 9), "c": rng.choice("abcde")}
        inputs = [t.make_input(rng) for _ in range(tests_per_problem)]
        outputs = [t.solve(s, params) + "\n" for s in inputs]
        split = "test" if i % 10 == 9 else "validation" if i % 10 == 8 else "train"
        problems.append(
            Problem(
                id=f"gen{seed}/{i:04d}-{t.name}",
                domain="code",
                source="embedded_code",
                split=split,
                prompt=apps_prompt(t.statement.format(**params), "", call_based=False),
                tests=json.dumps({"inputs": inputs, "outputs": outputs}),
                level=t.level,
                solution=t.solution.format(**params),
            )
        )
    return problems
