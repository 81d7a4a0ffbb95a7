"""pass@k against hand-worked values, and majority vote."""

import math

import pytest

from restem_pipeline.evaluation.metrics import majority_answer, pass_at_k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (4, 1, 1, 0.25),  # c/n when k = 1
        (4, 2, 2, 1 - 1 / 6),  # 1 - C(2,2)/C(4,2) = 1 - 1/6
        (5, 1, 2, 1 - 6 / 10),  # 1 - C(4,2)/C(5,2) = 1 - 6/10
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (8, 6, 3, 1.0),  # only 2 wrong: any 3 contain a correct one
        (8, 0, 8, 0.0),
    ],
)
def test_pass_at_k_hand_worked(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_combinatorial_formula():
    for n in range(1, 12):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_is_not_best_of_first_k():
    # 1 correct of 4, correct one last: best-of-first-2 would say 0, the estimator says 0.5
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError, match="need"):
        pass_at_k(n, c, k)


def test_majority_answer():
    assert majority_answer(["3", "4", "4", None, "3", "4"]) == "4"
    assert majority_answer(["5", "6", "6", "5"]) == "5"  # tie: first seen wins
    assert majority_answer([None, None]) is None
