"""The embedded problem set: deterministic, correct, disjoint splits, solutions that check out."""

import random
import re
from fractions import Fraction

import pytest

from restem_pipeline.data import arith
from restem_pipeline.rewards.mathverify import verify


def _eval_expression(expr: str) -> Fraction:
    assert re.fullmatch(r"[\d\s()+\-*/]+", expr), expr
    return Fraction(eval(expr.replace("/", "//")))  # only digits and operators, checked above


def test_deterministic_by_seed():
    a = arith.embedded_problem_set(seed=3, n_train=50, n_validation=10, n_test=10)
    b = arith.embedded_problem_set(seed=3, n_train=50, n_validation=10, n_test=10)
    c = arith.embedded_problem_set(seed=4, n_train=50, n_validation=10, n_test=10)
    assert a == b
    assert [p.prompt for p in a] != [p.prompt for p in c]


def test_splits_sizes_levels_and_disjointness():
    ps = arith.embedded_problem_set(seed=0, n_train=100, n_validation=20, n_test=40)
    by = {s: [p for p in ps if p.split == s] for s in ("train", "validation", "test")}
    assert [len(by[s]) for s in by] == [100, 20, 40]
    assert sorted({p.level for p in by["train"]}) == [1, 2, 3, 4, 5]
    assert sum(p.level == 3 for p in by["train"]) == 20  # uniform levels in the splits
    assert len({p.prompt for p in ps}) == len(ps)
    pool = arith.pretraining_pool(seed=0, per_level=(50, 50, 20, 10, 10), exclude={p.prompt for p in ps})
    assert not {q for q, _ in pool} & {p.prompt for p in ps}


def test_worked_solution_steps_are_true_and_answer_matches():
    rng = random.Random(1)
    for level in range(1, 6):
        for _ in range(50):
            p = arith.make_problem(level, rng)
            sol = arith.worked_solution(p)
            steps = re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)\.", sol)
            assert len(steps) == level
            for a, op, b, c in steps:
                assert _eval_expression(f"{a} {op} {b}") == int(c)
            assert 0 <= p.answer <= arith.MAX_VALUE
            assert verify(sol, str(p.answer)).status == "correct"


def test_human_solutions_are_correct_and_terser():
    ps = arith.embedded_problem_set(seed=0, n_train=200, n_validation=0, n_test=0)
    styles = set()
    for p in ps:
        assert verify(p.solution, p.answer).status == "correct", p.solution
        for expr, value in re.findall(r"([\d\s()+\-*/]+?) = (\d+)", p.solution):
            assert _eval_expression(expr.strip(" ;,")) == int(value), p.solution
        styles.add(
            "prose"
            if ", then " in p.solution
            else "folded"
            if ", so " in p.solution
            else "halves"
            if p.solution.startswith("First")
            else "other"
        )
    assert styles == {"prose", "folded", "halves", "other"}  # varied, as people write
    hard = [p for p in ps if p.level == 5]
    worked_len = sum(len(arith.worked_solution(arith.make_problem(5, random.Random(i)))) for i in range(40)) / 40
    assert sum(len(p.solution) for p in hard) / len(hard) < worked_len  # terser than the model's style


def test_parse_problem_reads_back_every_generated_problem():
    """Every template, both sets: the words give back the generator's own start and steps."""
    from restem_pipeline.data.arith import make_problem, parse_problem

    rng = random.Random(11)
    for i in range(2000):
        p = make_problem(1 + i % 5, rng, held_out=i % 3 == 0)
        q = parse_problem(p.text)
        assert (q.start, q.steps, q.answer) == (p.start, p.steps, p.answer), p.text
    with pytest.raises(ValueError, match="not an arith step"):
        parse_problem("Ada has 3 coins. She juggles 2. How many coins does Ada have now?")


def test_right_steps_tells_a_lucky_answer_from_the_worked_one():
    """Hand-worked: 4 - 2 = 2, + 1 = 3, + 9 = 12, / 3 = 4, + 4 = 8; a sample that also ends at 8 by other steps."""
    from restem_pipeline.data.arith import right_steps

    text = (
        "Jade has 4 cards. She gives away 2. She buys 1 more. She finds 9 more cards. She keeps one of 3 equal "
        "shares. A friend gives her 4 more. How many cards does Jade have now?"
    )
    worked = " 4 - 2 = 2. 2 + 1 = 3. 3 + 9 = 12. 12 / 3 = 4. 4 + 4 = 8. The answer is \\boxed{8}."
    lucky = " 4 - 3 = 2. 2 + 4 = 6. 6 / 3 = 2. 2 + 4 = 6. 6 + 2 = 8. The answer is \\boxed{8}."
    assert right_steps(text, worked)
    assert not right_steps(text, lucky)
    assert not right_steps(text, " 4 - 2 = 2. 2 + 1 = 3. The answer is \\boxed{8}.")  # steps missing


def test_lucky_answers_script_counts_per_level(tmp_path):
    """studies/lucky_answers.py on a hand-made root: of two correct level-2 samples one has the right steps."""
    import importlib.util
    from pathlib import Path

    import polars as pl

    from restem_pipeline.storage.tables import DataRoot

    spec = importlib.util.spec_from_file_location("lucky", Path(__file__).parents[1] / "studies" / "lucky_answers.py")
    lucky = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lucky)
    text = "Ada has 6 coins. She buys 3 more. She keeps one of 3 equal shares. How many coins does Ada have now?"
    root = DataRoot(tmp_path)
    root.of("shared").write_table(pl.DataFrame({"id": ["p1"], "prompt": [text]}), "problems", "arith", "ingest")
    samples = pl.DataFrame(
        {
            "sample_id": ["s1", "s2", "s3"],
            "problem_id": ["p1"] * 3,
            "level": [2, 2, 2],
            "completion": [" 6 + 3 = 9. 9 / 3 = 3.", " 6 - 3 = 3. 3 * 1 = 3.", " 6 + 3 = 9. 9 - 3 = 6."],
            "reward": [1.0, 1.0, 0.0],
        }
    )
    root.of("restem").write_table(samples, "verified_samples", "arith", "iter_1")
    table = lucky.lucky_table(tmp_path, "arith", "restem", "iter_1")
    assert table.to_dicts() == [{"level": 2, "samples": 3, "correct": 2, "right_steps": 1, "lucky_share": 0.5}]


def test_an_excluded_text_is_never_drawn_and_levels_stay_uniform():
    """``exclude`` skips a text like a repeat: the same counts per level, the draw deterministic, and
    without ``exclude`` the draw this seed always made."""
    plain = arith.embedded_problem_set(seed=5, n_train=10, n_validation=5, n_test=5)
    assert arith.embedded_problem_set(seed=5, n_train=10, n_validation=5, n_test=5, exclude=set()) == plain
    gone = {p.prompt for p in plain if p.split == "test"}  # the 5 test problems, one per level
    again = arith.embedded_problem_set(seed=5, n_train=10, n_validation=5, n_test=5, exclude=gone)
    assert not {p.prompt for p in again} & gone
    for split, n in (("train", 2), ("validation", 1), ("test", 1)):  # 10 / 5 / 5 over 5 levels
        assert sorted(p.level for p in again if p.split == split) == sorted([1, 2, 3, 4, 5] * n)
    # train and validation come first from the same stream: unchanged until a skip
    assert [p.prompt for p in again if p.split != "test"] == [p.prompt for p in plain if p.split != "test"]
    assert again == arith.embedded_problem_set(seed=5, n_train=10, n_validation=5, n_test=5, exclude=gone)
