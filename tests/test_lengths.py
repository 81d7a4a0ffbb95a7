"""Length budgets: a too-long example loses prompt from the left, never its completion; settings that
cannot fit fail before any work, naming the setting and the length needed.

The tokenizer is a real byte-level BPE with no merges (259 tokens: 256 bytes and 3 specials), so every
character is one token and every expected length below is counted by hand.
"""

import pytest

from restem_pipeline.generation.modeling import train_tokenizer
from restem_pipeline.training.batching import tokenize_pairs
from restem_pipeline.training.lengths import LengthError, check_lengths, effective_max_length


@pytest.fixture(scope="module")
def tok():
    t = train_tokenizer(["abc"], 259)  # bytes + <pad> <s> </s>: nothing left for merges
    assert len(t("hello world", add_special_tokens=False)["input_ids"]) == 11
    return t


def test_a_pair_that_fits_is_whole(tok):
    ((ids, plen),) = tokenize_pairs(tok, ["abcd"], ["xy"], 20)
    assert tok.decode(ids) == "<s>abcdxy</s>" and plen == 5  # BOS + 4 prompt tokens


def test_a_long_pair_loses_prompt_from_the_left_never_the_completion(tok):
    # BOS + 10 prompt + 4 completion + EOS = 16 > 10: keep 10 - 1 - 5 = 4 prompt tokens, the last four
    ((ids, plen),) = tokenize_pairs(tok, ["0123456789"], ["wxyz"], 10)
    assert tok.decode(ids) == "<s>6789wxyz</s>" and len(ids) == 10 and plen == 5
    # a prompt that carries its own BOS keeps it first
    ((ids, plen),) = tokenize_pairs(tok, ["<s>0123456789"], ["wxyz"], 10, add_bos=False)
    assert tok.decode(ids) == "<s>6789wxyz</s>" and plen == 5


def test_no_limit_and_a_completion_that_cannot_fit(tok):
    ((ids, _),) = tokenize_pairs(tok, ["p" * 50], ["c" * 50], 0)
    assert len(ids) == 102
    with pytest.raises(ValueError, match="max_length must be at least 9"):  # BOS + 6 + EOS + one prompt token
        tokenize_pairs(tok, ["prompt"], ["cccccc"], 7)


def test_check_lengths_measures_with_the_tokenizer(tok):
    got = check_lengths(tok, ["a", "b"], ["12345", "123"], ["xyzxyz", ""], 8, 0, 64)
    assert (got.longest_prompt, got.longest_prompt_id) == (6, "a")  # BOS + 5
    assert (got.longest_solution, got.longest_solution_id) == (6, "a")
    assert got.context == 64 and got.max_length == 64  # max_length 0: the model's context


def test_sampling_must_fit_the_context(tok):
    with pytest.raises(LengthError, match=r"max_new_tokens \(60\).*\(b\) has 11 tokens.*at most 53"):
        check_lengths(tok, ["a", "b"], ["1234", "1234567890"], ["", ""], 60, 0, 64)


def test_a_set_max_length_must_hold_a_sample_and_a_solution(tok):
    with pytest.raises(LengthError, match=r"trainer.max_length \(10\).*E-step sample of 8 tokens.*at least 11"):
        check_lengths(tok, ["a"], ["12"], ["s"], 8, 10, 64)
    with pytest.raises(LengthError, match=r"trainer.max_length \(12\).*human solution of 20 tokens \(b\).*at least 23"):
        check_lengths(tok, ["a", "b"], ["12", "12"], ["s", "s" * 20], 8, 12, 64)
    assert check_lengths(tok, ["a", "b"], ["12", "12"], ["s", "s" * 20], 8, 23, 64).max_length == 23


def test_effective_max_length():
    assert effective_max_length(300, 8192, 40) == 300
    assert effective_max_length(0, 8192, 40) == 8192
    assert effective_max_length(0, None, 40) == 40
