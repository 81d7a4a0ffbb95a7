"""Prompts: how a problem becomes model input, and how a solution becomes the trained target.

Two styles, one ``Prompter`` for sampling, fine-tuning and evaluation alike:

- ``text`` (base models, the paper's setting): a question/answer frame plus optional few-shot
  exemplars (Minerva-style 4-shot for MATH, 4-shot GSM8K, zero-shot for the embedded task, whose tiny
  model has a short context). ``stop`` strings end a completion where a model would start the next
  question.
- ``chat`` (instruction-tuned models): the tokenizer's own chat template. The problem is the user's
  turn, with a format instruction saying how to end the answer; with ``few_shot`` the exemplars are
  earlier user/assistant turns. The target is the assistant's reply only, and the model's end-of-turn
  token (its EOS, e.g. ``<|im_end|>``) ends both sampling and every training example.

``resolve_style("auto", tokenizer)`` picks ``chat`` when the tokenizer has a chat template, else
``text``. The resolved style is recorded with every sample. Not covered: system prompts of the
user's own, tool calls, multi-turn problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from restem_pipeline.data.schema import Problem

PromptStyle = Literal["text", "chat"]
PROMPT_STYLES: tuple[str, ...] = ("auto", "text", "chat")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    question_prefix: str = "Question: "
    answer_prefix: str = "\nAnswer:"
    exemplars: tuple[tuple[str, str], ...] = ()
    separator: str = "\n\n"
    stop: tuple[str, ...] = field(default=("\nQuestion:",))

    def render(self, problem_text: str) -> str:
        shots = [f"{self.question_prefix}{q}{self.answer_prefix} {a}" for q, a in self.exemplars]
        return self.separator.join([*shots, f"{self.question_prefix}{problem_text}{self.answer_prefix}"])

    def target(self, solution: str) -> str:
        """The completion trained on: what follows ``render()``'s last answer prefix."""
        return " " + solution.strip()

    def truncate(self, completion: str) -> str:
        """Cut a sampled completion at the first stop string."""
        cut = len(completion)
        for s in self.stop:
            i = completion.find(s)
            if i != -1:
                cut = min(cut, i)
        return completion[:cut]


MATH_EXEMPLARS = (
    (
        "Find the domain of the expression $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
        "The square root in the numerator needs $x-2 \\ge 0$, so $x \\ge 2$. The denominator needs "
        "$5-x > 0$, so $x < 5$. The domain is $\\boxed{[2,5)}$.",
    ),
    (
        "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
        "The determinant is multiplicative: $\\det(\\mathbf{A}\\mathbf{B}) = 2 \\cdot 12 = \\boxed{24}$.",
    ),
    (
        "Terrell lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many "
        "times must he lift them to lift the same total weight?",
        "He lifts $2\\cdot 12\\cdot 20 = 480$ pounds. With 15-pound weights he lifts $30n$ pounds, so "
        "$30n = 480$ and $n = \\boxed{16}$.",
    ),
    (
        "If the system $6x-4y=a$, $6y-9x=b$ has a solution with $x, y$ nonzero, find $\\frac{a}{b}$, "
        "assuming $b$ is nonzero.",
        "Multiplying the first equation by $-\\frac{3}{2}$ gives $6y-9x=-\\frac{3}{2}a$, which must "
        "equal $b$. So $\\frac{a}{b} = \\boxed{-\\frac{2}{3}}$.",
    ),
)

GSM8K_EXEMPLARS = (
    (
        "There are 15 trees in the grove. Grove workers will plant trees today. After they are done, "
        "there will be 21 trees. How many trees did the workers plant today?",
        "There were 15 trees and then 21, so they planted 21 - 15 = 6. The answer is \\boxed{6}.",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are there?",
        "3 + 2 = 5 cars. The answer is \\boxed{5}.",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left?",
        "Together they had 32 + 42 = 74. After eating 35 they have 74 - 35 = 39. The answer is \\boxed{39}.",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys "
        "does he have now?",
        "He got 2 * 2 = 4 more toys, so he has 5 + 4 = 9. The answer is \\boxed{9}.",
    ),
)

TEMPLATES: dict[str, PromptTemplate] = {
    "arith": PromptTemplate("arith"),
    "math": PromptTemplate("math", "Problem:\n", "\n\nSolution:", MATH_EXEMPLARS, stop=("\n\nProblem:",)),
    "gsm8k": PromptTemplate("gsm8k", exemplars=GSM8K_EXEMPLARS),
    "code": PromptTemplate("code", "### Problem\n", "\n### Python solution\n", stop=("\n### Problem",)),
}


# Exemplars for chat few-shot where the text template has none: the embedded arith task's text prompts
# stay zero-shot (the 1.1M model is pretrained on that frame), but an instruction-tuned model rambles
# without an example of the answer's shape. Hand-written; names outside arith's own, so never a split's text.
CHAT_EXEMPLARS: dict[str, tuple[tuple[str, str], ...]] = {
    "arith": (
        (
            "Mia has 9 marbles. She buys 4 more. How many marbles does Mia have now?",
            "Mia has 9 + 4 = 13 marbles. The answer is \\boxed{13}.",
        ),
        (
            "Omar has 20 cards. He loses 6 cards. He makes the pile 2 times bigger. How many cards does Omar have now?",
            "Omar has 20 - 6 = 14, then 14 * 2 = 28. The answer is \\boxed{28}.",
        ),
        (
            "Mia has 18 shells. She keeps one of 3 equal shares. A friend gives her 5 more. She sells 2 of "
            "them. How many shells does Mia have now?",
            "Mia has 18 / 3 = 6, then 6 + 5 = 11, then 11 - 2 = 9. The answer is \\boxed{9}.",
        ),
    ),
}

# What a chat prompt asks for, per family: the answer in the form the verifier reads (and the human
# solutions end with), so sampled and human targets agree.
CHAT_INSTRUCTIONS = {
    "math": "Solve the problem step by step. End with: The answer is \\boxed{ANSWER}.",
    "gsm8k": "Solve the problem step by step. End with: The answer is \\boxed{N}.",
    "arith": "Solve the problem step by step. End with: The answer is \\boxed{N}.",
    "code": "Write a complete Python solution. Reply with the code only, in one ```python block.",
}


def template_for(problem: Problem, few_shot: bool = True) -> PromptTemplate:
    """The template for a problem's source family; ``few_shot=False`` drops the exemplars."""
    family = problem.source.split("/")[0].lower()
    if family in ("math", "math500"):
        tpl = TEMPLATES["math"]
    elif family in TEMPLATES:
        tpl = TEMPLATES[family]
    elif problem.domain == "code":
        tpl = TEMPLATES["code"]
    else:
        tpl = TEMPLATES["arith"]
    if not few_shot and tpl.exemplars:
        tpl = PromptTemplate(tpl.name, tpl.question_prefix, tpl.answer_prefix, (), tpl.separator, tpl.stop)
    return tpl


def chat_instruction(template: PromptTemplate) -> str:
    return CHAT_INSTRUCTIONS.get(template.name, CHAT_INSTRUCTIONS["arith"])


def resolve_style(style: str, tokenizer) -> PromptStyle:
    """``auto`` -> ``chat`` when ``tokenizer`` has a chat template, else ``text``; others as given."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {style!r}")
    if style == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt_style 'chat' needs a tokenizer with a chat template; this one has none (use 'text')")
    if style == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "text"
    return style  # type: ignore[return-value]


@dataclass(frozen=True)
class Prompter:
    """Renders prompts and targets in one style; the same object serves the E-step, M-step and evaluation.

    ``tokenizer_path`` (chat style only) names the tokenizer whose chat template is used: the base
    model's, so every iteration's prompts are identical.
    """

    style: PromptStyle = "text"
    few_shot: bool = True
    tokenizer_path: str | None = None

    def __post_init__(self) -> None:
        if self.style not in ("text", "chat"):
            raise ValueError(f"style must be 'text' or 'chat' (resolve 'auto' first), got {self.style!r}")
        if self.style == "chat" and not self.tokenizer_path:
            raise ValueError("a chat-style Prompter needs tokenizer_path (the model whose chat template it uses)")

    @property
    def name(self) -> str:
        """What is recorded with every sample, e.g. ``chat/zero-shot``."""
        return f"{self.style}/{'few-shot' if self.few_shot else 'zero-shot'}"

    @cached_property
    def _tokenizer(self):
        from transformers import AutoTokenizer  # only its chat template is read (no padding setup needed)

        return AutoTokenizer.from_pretrained(str(self.tokenizer_path))

    def template(self, problem: Problem) -> PromptTemplate:
        return template_for(problem, self.few_shot)

    def render(self, problem: Problem) -> str:
        tpl = self.template(problem)
        if self.style == "text":
            return tpl.render(problem.prompt)
        ask = chat_instruction(tpl)
        messages = []
        shots = tpl.exemplars or (CHAT_EXEMPLARS.get(tpl.name, ()) if self.few_shot else ())
        for q, a in shots:
            messages += [{"role": "user", "content": f"{q}\n\n{ask}"}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": f"{problem.prompt}\n\n{ask}"})
        return self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def target(self, problem: Problem, solution: str) -> str:
        """The trained completion. Chat: the reply alone (training appends the EOS = end-of-turn token)."""
        return self.template(problem).target(solution) if self.style == "text" else solution.strip()

    def stop(self, problem: Problem) -> tuple[str, ...]:
        """Stop strings for sampling. Chat replies end at the end-of-turn token (the model's EOS)."""
        return self.template(problem).stop if self.style == "text" else ()


TEXT_PROMPTS = Prompter()  # the default: text style, few-shot where the family has exemplars
