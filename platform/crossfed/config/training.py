"""The local trainer each client runs: DeepSpeed engine, optimizer, schedule, pre-training tasks."""

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator

from crossfed.config.base import Section


class TrainingConfig(Section):
    tasks: dict[str, float] = Field(
        default_factory=lambda: {"replaced_object": 1.0},
        description="self-supervised tasks and their loss weights",
    )
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: PositiveFloat = 0.05
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    warmup_steps: NonNegativeInt = 0
    batch_size: PositiveInt = 512
    grad_accum: PositiveInt = 1
    grad_clip: PositiveFloat | None = 1.0
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    zero_stage: Literal[0, 1, 2, 3] = 0
    steps: PositiveInt = Field(200, description="optimizer steps for local or centralized pre-training")
    eval_batches: PositiveInt = 8
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("tasks")
    @classmethod
    def _weights_positive(cls, tasks: dict[str, float]) -> dict[str, float]:
        if not tasks:
            raise ValueError("at least one pre-training task is needed")
        for name, weight in tasks.items():
            if not weight > 0:
                raise ValueError(f"task {name!r} has weight {weight}; weights must be positive")
        return tasks
