"""Prompt templates: how a problem becomes model input, and how a solution becomes the target.

A template is a question/answer frame plus optional few-shot exemplars, as in the paper (few-shot
prompts are the inputs for both sampling and fine-tuning; Minerva-style 4-shot for MATH). The
embedded task uses zero-shot (its tiny model has a short context); MATH and GSM8K ship 4-shot
exemplars written for restem, so a pretrained model a user names runs through the same loop.
``stop`` strings end a completion where a model would start the next question.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from restem_pipeline.schema import Problem


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
