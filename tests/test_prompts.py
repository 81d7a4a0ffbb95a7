"""Prompt styles: text (few-shot frames) and chat (the tokenizer's template), one Prompter for every stage."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast

from restem_pipeline.data.prompts import CHAT_INSTRUCTIONS, Prompter, resolve_style
from restem_pipeline.data.schema import Problem
from restem_pipeline.generation.modeling import prompt_input_ids, train_tokenizer
from restem_pipeline.generation.sampling import Completion, SamplingParams
from restem_pipeline.stages import draw_samples
from restem_pipeline.training.batching import tokenize_pairs

# A ChatML-like template small enough to write its output out by hand below.
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
GSM = Problem("gsm8k/test/1", "math", "What is 2+3?", "gsm8k", "test", answer="5", solution="2+3=5.")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    plain = train_tokenizer(["What is 2+3? The answer is 5."] * 4, 300)
    chat_dir = tmp_path_factory.mktemp("chat_tok")
    chat = train_tokenizer(["What is 2+3? The answer is 5."] * 4, 300)
    chat.chat_template = TEMPLATE
    chat.save_pretrained(chat_dir)
    return plain, chat, chat_dir


def test_resolve_style(tokenizers):
    plain, chat, _ = tokenizers
    assert resolve_style("auto", plain) == "text"
    assert resolve_style("auto", chat) == "chat"
    assert resolve_style("text", chat) == "text"
    with pytest.raises(ValueError, match="chat template"):
        resolve_style("chat", plain)
    with pytest.raises(ValueError, match="prompt_style must be one of"):
        resolve_style("fancy", chat)


def test_chat_render_zero_and_few_shot(tokenizers):
    _, _, chat_dir = tokenizers
    ask = CHAT_INSTRUCTIONS["gsm8k"]
    zero = Prompter("chat", few_shot=False, tokenizer_path=str(chat_dir))
    assert zero.render(GSM) == f"<|user|>What is 2+3?\n\n{ask}</s><|assistant|>"
    assert zero.name == "chat/zero-shot" and zero.stop(GSM) == ()
    assert zero.target(GSM, "  2+3=5.\n") == "2+3=5."
    few = Prompter("chat", few_shot=True, tokenizer_path=str(chat_dir))
    text = few.render(GSM)
    # the 4 GSM8K exemplars as earlier turns: 4 user + 4 assistant turns before the question's own
    assert text.count("<|user|>") == 5 and text.count("<|assistant|>") == 5
    assert "<|assistant|>There were 15 trees and then 21" in text
    assert text.endswith(f"<|user|>What is 2+3?\n\n{ask}</s><|assistant|>")


def test_text_style_is_the_paper_frame():
    p = Prompter("text", few_shot=False)
    assert p.render(GSM) == "Question: What is 2+3?\nAnswer:"
    assert p.target(GSM, "2+3=5.") == " 2+3=5."
    assert p.stop(GSM) == ("\nQuestion:",) and p.name == "text/zero-shot"


def test_bad_prompter_settings():
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        Prompter("auto")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tokenizer_path"):
        Prompter("chat")


def test_chat_examples_get_no_extra_bos(tokenizers):
    plain, _, _ = tokenizers
    assert isinstance(plain, PreTrainedTokenizerFast)
    prompt_ids = plain("Q", add_special_tokens=False).input_ids
    ((with_bos, n1),) = tokenize_pairs(plain, ["Q"], ["A"], 64)
    ((without, n2),) = tokenize_pairs(plain, ["Q"], ["A"], 64, add_bos=False)
    assert with_bos[0] == plain.bos_token_id and with_bos[1:] == without
    assert without[:n2] == prompt_ids and n1 == n2 + 1 and without[-1] == plain.eos_token_id


def test_a_prompt_opening_with_bos_gets_no_second_one(tokenizers):
    # SmolLM2's BOS is <|im_start|>, the first token of every rendered chat prompt: samplers must not
    # double it (the M-step never trains on a doubled BOS), and must still add it to a plain prompt
    plain, _, _ = tokenizers
    bos = plain.bos_token  # "<s>"
    q = plain("Q", add_special_tokens=False).input_ids
    opened, bare = prompt_input_ids(plain, [f"{bos}Q", "Q"])
    assert opened == [plain.bos_token_id, *q] and bare == [plain.bos_token_id, *q]
    ((train_ids, n),) = tokenize_pairs(plain, [f"{bos}Q"], ["A"], 64)
    assert train_ids[:n] == opened  # the M-step's prompt tokens are the sampler's
    assert train_ids.count(plain.bos_token_id) == 1


class _EchoSampler:
    """Isolates draw_samples from any model: returns fixed completions."""

    def generate(self, prompts, params, progress=None):
        return [[Completion(f"c{j}", 1, True) for j in range(params.n)] for _ in prompts]


def test_samples_record_the_prompt_style(tokenizers):
    _, _, chat_dir = tokenizers
    prompter = Prompter("chat", few_shot=False, tokenizer_path=str(chat_dir))
    df = draw_samples(_EchoSampler(), [GSM], SamplingParams(n=2), "gsm8k", "iter_1", "m", prompter)
    assert df["prompt_style"].to_list() == ["chat/zero-shot", "chat/zero-shot"]
