"""Problem-set loaders on the real data in ../shared/data, and clear errors for malformed files."""

import json

import pytest

from restem_pipeline.data import problems as L
from restem_pipeline.data.schema import Problem, ProblemFormatError


def test_math_jsonl_train_and_test(shared_data):
    train = L.load_math_jsonl(shared_data / "math" / "train.jsonl", "train")
    test = L.load_math_jsonl(shared_data / "math" / "test.jsonl", "test")
    assert len(test.problems) == 5000 and not test.rejected
    # two train rows box nothing (empty \boxed{}): set aside with their ids, never an error
    assert len(train.problems) + len(train.rejected) == 7500
    assert {r["id"] for r in train.rejected} <= {"train/number_theory/7115.json", "train/number_theory/7117.json"}
    p = next(p for p in test.problems if p.id == "test/algebra/1.json")
    assert p.answer == "2" and p.level == 3 and p.domain == "math" and p.split == "test"
    assert sum(p.level is None for p in train.problems) == 2  # the two "Level ?" rows


def test_math_original_layout_matches_jsonl(shared_data):
    layout = L.load_math_layout(shared_data / "math" / "original_layout")
    assert len(layout.problems) == 42
    jsonl = {p.id: p for p in L.load_math_jsonl(shared_data / "math" / "test.jsonl", "test").problems}
    for p in layout.problems:
        if p.split == "test":
            assert jsonl[p.id].answer == p.answer and jsonl[p.id].prompt == p.prompt


def test_math500_and_gsm8k(shared_data):
    m500 = L.load_math_jsonl(shared_data / "math500" / "test.jsonl", "test", source="math500")
    assert len(m500.problems) == 500 and all(p.source == "math500" for p in m500.problems)
    gsm = L.load_gsm8k(shared_data / "gsm8k" / "test.jsonl", "test")
    assert len(gsm.problems) == 1319 and not gsm.rejected
    first = gsm.problems[0]
    assert first.answer == "18" and "<<" not in first.solution and first.solution.endswith("\\boxed{18}.")


def test_builtin_sets_get_a_validation_split(shared_data, monkeypatch):
    monkeypatch.setenv("RESTEM_EXTERNAL_DATA", str(shared_data))
    gsm = L.load_builtin("gsm8k")
    splits = {s: sum(p.split == s for p in gsm.problems) for s in ("train", "validation", "test")}
    assert splits == {"train": 7473 - 373, "validation": 373, "test": 1319}
    assert L.load_builtin("gsm8k").problems == gsm.problems  # seeded


def test_auto_detects_each_format(shared_data, tmp_path):
    assert L.load_jsonl_auto(shared_data / "math500" / "test.jsonl", "test").problems[0].source == "math500"
    assert L.load_jsonl_auto(shared_data / "gsm8k" / "test.jsonl", "test").problems[0].source == "gsm8k"
    own = tmp_path / "own.jsonl"
    own.write_text(json.dumps(Problem("a/1", "math", "1+1?", "mine", answer="2", level=1).to_row()) + "\n")
    assert L.load_jsonl_auto(own).problems[0].answer == "2"


@pytest.mark.parametrize(
    ("content", "line", "field"),
    [
        ('{"question": "q", "answer": "#### 3"}\n{"question": "q2"\n', 2, "<json>"),
        ('{"question": "q", "answer": "#### 3"}\n{"question": "q2"}\n', 2, "answer"),
        ('{"question": "", "answer": "#### 3"}\n', 1, "question"),
        ('{"question": "q", "answer": 3}\n', 1, "answer"),
        ("[1, 2]\n", 1, "<json>"),
    ],
)
def test_malformed_gsm8k_names_file_line_and_field(tmp_path, content, line, field):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ProblemFormatError) as err:
        L.load_gsm8k(path, "train")
    assert err.value.record == line and err.value.field == field
    assert str(path) in str(err.value) and f"line {line}" in str(err.value) and field in str(err.value)


def test_normalized_jsonl_rejects_bad_split(tmp_path):
    path = tmp_path / "own.jsonl"
    row = Problem("a/1", "math", "1+1?", "mine", answer="2").to_row() | {"split": "dev"}
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ProblemFormatError, match=r"line 1: field 'split'.*'dev'"):
        L.load_normalized_jsonl(path)


def test_unknown_format_is_named(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"foo": 1}\n')
    with pytest.raises(ProblemFormatError, match="unrecognized fields"):
        L.load_jsonl_auto(path)


def test_only_the_embedded_sets_draw_around_excluded_texts():
    """A real data set is a fixed file: ``exclude`` is refused (its held-out slice is an id list), before
    any file is read; the embedded sets pass it on (tests/test_arith.py checks the draw)."""
    with pytest.raises(ValueError, match="'gsm8k': only the embedded sets"):
        L.load_builtin("gsm8k", exclude={"a problem"})
    plain = L.load_builtin("arith", seed=2, arith_sizes=(5, 5, 5)).problems
    first_test = next(p.prompt for p in plain if p.split == "test")
    again = L.load_builtin("arith", seed=2, arith_sizes=(5, 5, 5), exclude={first_test}).problems
    assert first_test not in {p.prompt for p in again} and len(again) == 15
    ood = L.load_builtin("arith_ood", seed=2, arith_sizes=(5, 8, 8)).problems  # 5 / 2 / 4: min(5, 20), 8 // 4, 8 // 2
    excluded = L.load_builtin("arith_ood", seed=2, arith_sizes=(5, 8, 8), exclude={ood[0].prompt}).problems
    assert ood[0].prompt not in {p.prompt for p in excluded} and len(excluded) == len(ood) == 11
