"""Compute resources: ``SamplerResource`` (transformers on CPU/GPU, or vLLM) and ``TrainerResource``."""

from typing import Literal

import dagster as dg
from pydantic import Field, field_validator

from restem_pipeline.sampling import Sampler, TransformersSampler
from restem_pipeline.training import TrainConfig


class SamplerResource(dg.ConfigurableResource):
    """How completions are generated. ``backend='vllm'`` needs the ``vllm`` extra and a GPU."""

    backend: Literal["transformers", "vllm"] = "transformers"
    device: str = Field(default="cpu", description="torch device for the transformers backend")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch_size: int = Field(default=256, description="sequences per generate() call")
    tensor_parallel_size: int = Field(default=1, description="vLLM: GPUs to shard the model over")

    @field_validator("batch_size", "tensor_parallel_size")
    @classmethod
    def _positive(cls, v: int, info) -> int:
        if v < 1:
            raise ValueError(f"{info.field_name} must be >= 1, got {v}")
        return v

    def sampler(self, model_path: str, stop: tuple[str, ...] = ()) -> Sampler:
        if self.backend == "vllm":
            from restem_pipeline.sampling_vllm import VLLMSampler

            return VLLMSampler(model_path, tensor_parallel_size=self.tensor_parallel_size, stop=stop)
        return TransformersSampler(
            model_path, device=self.device, dtype=self.dtype, batch_size=self.batch_size, stop=stop
        )


class TrainerResource(dg.ConfigurableResource):
    """Fine-tuning settings for the M-step and the SFT baseline (loss on solution tokens only)."""

    device: str = "cpu"
    epochs: float = 3.0
    max_steps: int = Field(default=0, description="0 means: run `epochs` epochs")
    batch_size: int = 32
    learning_rate: float = Field(default=2e-4, description="peak; linear warm-up then cosine decay")
    warmup_ratio: float = 0.1
    max_length: int = 320

    def train_config(self, seed: int, epochs: float | None = None) -> TrainConfig:
        return TrainConfig(
            epochs=epochs or self.epochs,
            max_steps=self.max_steps or None,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            warmup_ratio=self.warmup_ratio,
            max_length=self.max_length,
            seed=seed,
        )
