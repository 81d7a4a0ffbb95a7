"""Compute resources: ``SamplerResource`` (restem's engine, transformers or vLLM) and ``TrainerResource``."""

from typing import Literal

import dagster as dg
from pydantic import Field, field_validator, model_validator

from restem_pipeline.generation import backends
from restem_pipeline.generation.sampling import Sampler
from restem_pipeline.training.finetune import DEFAULT_LORA_TARGETS, TrainConfig
from restem_pipeline.training.lora import MISSING_PEFT, peft_available


class SamplerResource(dg.ConfigurableResource):
    """How completions are generated.

    ``backend='auto'`` (default) is restem's own cached decode loop (``restem_pipeline.generation.engine``) on
    CPU, and on a CUDA GPU the variant measured fastest there (``backends.CUDA_AUTO``, in
    ``backends.CUDA_AUTO_DTYPE``), falling back to transformers ``generate()`` for a model the engine does
    not run; ``'restem'``, ``'transformers'`` (``generate()``), ``'static'`` / ``'static_compile'``
    (``generate()`` over a static cache, eager / ``torch.compile``d) and ``'continuous'`` (transformers'
    continuous batching) force one; ``'vllm'`` needs the ``vllm`` extra and a GPU. See
    ``restem_pipeline.generation.backends``.
    """

    backend: Literal["auto", "restem", "transformers", "continuous", "static", "static_compile", "vllm"] = Field(
        default="auto",
        description="auto: restem on CPU (transformers for other architectures), backends.CUDA_AUTO on a CUDA GPU",
    )
    device: str = Field(default="cpu", description="torch device for every backend but vLLM (e.g. cpu, cuda)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="auto: restem uses bf16 where native and sane (else float32), transformers float32, static "
        "and continuous bf16 on a bf16 GPU (else float32), vLLM the model's own; auto on a GPU: CUDA_AUTO_DTYPE",
    )
    batch_size: int = Field(default=256, description="sequences per batch (restem may run fewer to fit memory)")
    memory_budget_mb: float = Field(
        default=0.0, description="restem: MB for KV cache + activations; 0 = half of the memory available"
    )
    threads: int = Field(
        default=0,
        description="restem on CPU: torch threads while decoding; 0 = picked by timing (fastest on a shared "
        "machine), N = fixed (with a fixed memory_budget_mb, the same completions on every run: restem demo)",
    )
    tensor_parallel_size: int = Field(default=1, description="vLLM: GPUs to shard the model over")
    gpu_memory_utilization: float = Field(default=0.85, description="vLLM: fraction of GPU memory it may take")
    max_model_len: int = Field(default=0, description="vLLM: context length; 0 = the model's own")

    @field_validator("batch_size", "tensor_parallel_size")
    @classmethod
    def _positive(cls, v: int, info) -> int:
        if v < 1:
            raise ValueError(f"{info.field_name} must be >= 1, got {v}")
        return v

    @field_validator("gpu_memory_utilization")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {v}")
        return v

    @field_validator("max_model_len", "threads")
    @classmethod
    def _non_negative(cls, v: int, info) -> int:
        if v < 0:
            raise ValueError(f"{info.field_name} must be >= 0 (0 = the default), got {v}")
        return v

    @field_validator("memory_budget_mb")
    @classmethod
    def _budget(cls, v: float) -> float:
        if not v >= 0:
            raise ValueError(f"memory_budget_mb must be >= 0 (0 = half of the memory available), got {v}")
        return v

    def resolved_backend(self) -> str:
        """The variant ``backend`` stands for on ``device`` (``auto``: see ``backends.resolve``)."""
        return backends.resolve(self.backend, self.device)

    def sampler(self, model_path: str, stop: tuple[str, ...] = ()) -> Sampler:
        vllm = {  # vLLM raises VLLMNotInstalled, naming what to install, where it is absent
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len": self.max_model_len or None,
        }
        return backends.sampler_for(
            self.backend,
            model_path,
            device=self.device,
            dtype=self.dtype,
            batch_size=self.batch_size,
            stop=stop,
            memory_budget_mb=self.memory_budget_mb or None,
            vllm=vllm,
            threads=self.threads or None,
        )


class TrainerResource(dg.ConfigurableResource):
    """Fine-tuning settings for the M-step and the SFT baseline (loss on solution tokens only).

    By default examples are packed (no padding computed) and, on a CPU with native bf16, run under
    bf16 autocast with fp32 master weights; see ``restem_pipeline.training.finetune``. ``validation_fraction``
    holds out that fraction of the training set's *problems* (every row of each, never trained on) and
    reports their loss: for an M-step, held-out correct samples of the model itself, the text it is
    trained on; for SFT, held-out human solutions. Off by default, since it trains on fewer problems.

    ``finetune='lora'`` trains LoRA adapters (``peft``, an optional dependency) instead of every weight
    and merges them into the weights before saving, so the checkpoint is a plain model either way.

    ``strategy='ddp'`` / ``'fsdp'`` trains on ``processes`` ranks (DDP, or FSDP2 ``fully_shard``) started
    with ``torchrun`` as a subprocess of the asset (gloo on CPU, NCCL on CUDA, one GPU per rank); a step
    then takes ``batch_size`` examples on each rank. ``checkpoint_every_steps`` saves a resumable train
    state beside the checkpoint, which a re-run of the asset continues from (``restem_pipeline.training.state``).
    Mixed precision is ``dtype`` (bf16 autocast, fp32 master weights), the same for every strategy.
    """

    device: str = "cpu"
    epochs: float = 3.0
    max_steps: int = Field(default=0, description="0 means: run `epochs` epochs")
    batch_size: int = Field(
        default=32, description="examples per optimizer step and process (global batch: batch_size x processes)"
    )
    learning_rate: float = Field(
        default=5e-5,
        description="peak; linear warm-up, then `lr_schedule`. 5e-5 was chosen on validation for the M-step of the "
        "embedded default from {5e-5, 2e-4} (the earlier default 2e-4 overfits: docs, 'The paper's findings')",
    )
    warmup_ratio: float = 0.1
    lr_schedule: Literal["cosine", "linear", "constant"] = Field(
        default="cosine", description="after warm-up: cosine or linear decay to 10% of the peak, or constant"
    )
    max_length: int = Field(
        default=0,
        description="tokens per example (prompt + solution); 0 = the model's context. A longer example loses prompt "
        "tokens from the left, never its solution",
    )
    packing: bool = Field(default=True, description="pack examples into rows instead of padding them")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="autocast dtype; auto = bf16 where the CPU/GPU has native bf16, else fp32"
    )
    grad_accum_steps: int = Field(default=1, description="micro-batches per optimizer step (at least)")
    max_tokens_per_micro_batch: int = Field(
        default=16384, description="token budget of one forward pass; halved automatically on out-of-memory"
    )
    eval_every: int = Field(default=0, description="validation loss every N steps (0: only at the end)")
    attention: Literal["auto", "varlen", "flex", "flex_dense"] = Field(
        default="auto",
        description="packed rows' attention: varlen (one sdpa per example: the CPU's), flex (FlexAttention with a "
        "document mask: the GPU's), flex_dense (flex's mask through sdpa, for checks); auto: flex on CUDA, else varlen",
    )
    loss: Literal["auto", "full", "chunked"] = Field(
        default="auto", description="cross-entropy: chunked (the output layer in token chunks) or full (auto: chunked)"
    )
    compile: Literal["auto", "on", "off"] = Field(
        default="auto", description="torch.compile the decoder layers; auto: on CUDA only"
    )
    validation_fraction: float = Field(
        default=0.0, description="fraction of the training set's problems held out for a validation loss"
    )
    finetune: Literal["full", "lora"] = Field(
        default="full",
        description="full: train every weight; lora: train low-rank adapters (needs peft), merged into the "
        "weights before the checkpoint is saved",
    )
    lora_rank: int = Field(default=16, description="lora: rank r of each adapter")
    lora_alpha: float = Field(default=32.0, description="lora: adapter updates are scaled by lora_alpha / lora_rank")
    lora_dropout: float = Field(default=0.0, description="lora: dropout on the adapters' input, in [0, 1)")
    lora_targets: list[str] = Field(
        default=list(DEFAULT_LORA_TARGETS),
        description="lora: linear layers to adapt, by the last component of their name (default: attention "
        "and MLP projections)",
    )
    strategy: Literal["single", "ddp", "fsdp"] = Field(
        default="single",
        description="single: one process, in the asset's; ddp / fsdp: `processes` ranks under torchrun (a subprocess)",
    )
    processes: int = Field(
        default=1, description="training processes (ranks; on CUDA one GPU each); > 1 needs ddp/fsdp"
    )
    gradient_checkpointing: bool = Field(
        default=False, description="recompute each layer's activations in backward: less memory, more compute"
    )
    checkpoint_every_steps: int = Field(
        default=0, description="save a resumable train state every N optimizer steps (0: never); a re-run resumes"
    )

    @field_validator("batch_size", "grad_accum_steps", "max_tokens_per_micro_batch", "lora_rank", "processes")
    @classmethod
    def _trainer_positive(cls, v: int, info) -> int:
        if v < 1:
            raise ValueError(f"{info.field_name} must be >= 1, got {v}")
        return v

    @field_validator("max_steps", "eval_every", "checkpoint_every_steps", "max_length")
    @classmethod
    def _trainer_non_negative(cls, v: int, info) -> int:
        if v < 0:
            raise ValueError(f"{info.field_name} must be >= 0, got {v}")
        return v

    @field_validator("validation_fraction", "lora_dropout")
    @classmethod
    def _trainer_fraction(cls, v: float, info) -> float:
        if not 0 <= v < 1:
            raise ValueError(f"{info.field_name} must be in [0, 1), got {v}")
        return v

    @field_validator("lora_alpha")
    @classmethod
    def _trainer_lora_alpha(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"lora_alpha must be > 0, got {v}")
        return v

    @field_validator("lora_targets")
    @classmethod
    def _trainer_lora_targets(cls, v: list[str]) -> list[str]:
        if not v or not all(t.strip() for t in v):
            raise ValueError(f"lora_targets must be a non-empty list of layer names, got {v!r}")
        return v

    @model_validator(mode="after")
    def _trainer_consistent(self) -> "TrainerResource":
        if self.finetune == "lora" and not peft_available():
            raise ValueError(MISSING_PEFT)
        if self.grad_accum_steps > self.batch_size:
            raise ValueError(f"grad_accum_steps ({self.grad_accum_steps}) must be <= batch_size ({self.batch_size})")
        if self.max_length == 1:  # (negative values: the field validator)
            raise ValueError(f"max_length must be 0 (the model's context) or > 1, got {self.max_length}")
        if self.max_tokens_per_micro_batch < self.max_length:
            raise ValueError(
                f"max_tokens_per_micro_batch ({self.max_tokens_per_micro_batch}) must be >= max_length "
                f"({self.max_length})"
            )
        if self.strategy == "single" and self.processes > 1:
            raise ValueError(f"processes={self.processes} needs strategy 'ddp' or 'fsdp' ('single' is one process)")
        if self.finetune == "lora" and self.strategy != "single":
            raise ValueError(f"finetune='lora' runs with strategy='single', not {self.strategy!r}")
        return self

    @property
    def uses_worker(self) -> bool:
        """Whether the M-step runs as a ``train_worker`` job (torchrun, or in-process with a train state)."""
        return self.strategy != "single" or self.checkpoint_every_steps > 0

    def train_config(self, seed: int, epochs: float | None = None) -> TrainConfig:
        return TrainConfig(
            epochs=epochs or self.epochs,
            max_steps=self.max_steps or None,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            warmup_ratio=self.warmup_ratio,
            lr_schedule=self.lr_schedule,
            max_length=self.max_length,
            seed=seed,
            packing=self.packing,
            dtype=self.dtype,
            grad_accum_steps=self.grad_accum_steps,
            max_tokens_per_micro_batch=self.max_tokens_per_micro_batch,
            eval_every=self.eval_every,
            finetune=self.finetune,
            lora_rank=self.lora_rank,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            lora_targets=tuple(self.lora_targets),
            gradient_checkpointing=self.gradient_checkpointing,
            attention=self.attention,
            loss=self.loss,
            compile=self.compile,
        )
