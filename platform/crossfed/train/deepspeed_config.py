"""The DeepSpeed engine configuration, optimizer and learning-rate schedule from a `TrainingConfig`."""

from __future__ import annotations

import math

from crossfed.config import TrainingConfig
from crossfed.errors import CrossfedError


def micro_batch_size(training: TrainingConfig, world_size: int) -> int:
    """Events per forward pass on one rank.

    `training.batch_size` is the number of events per optimizer step summed over ranks and accumulation
    micro-steps, so a run means the same thing whatever the number of workers.
    """
    per_step_passes = training.grad_accum * world_size
    if training.batch_size < per_step_passes:
        raise CrossfedError(
            f"training.batch_size {training.batch_size} is smaller than grad_accum × workers = {per_step_passes}"
        )
    return training.batch_size // per_step_passes


def check_precision(training: TrainingConfig) -> None:
    """Refuse, in one line, a precision this machine's DeepSpeed accelerator cannot train in."""
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    supported = {"fp32": True, "fp16": accelerator.is_fp16_supported(), "bf16": accelerator.is_bf16_supported()}
    if not supported[training.precision]:
        raise CrossfedError(
            f"training.precision: {training.precision} is not supported by DeepSpeed on this device "
            f"({accelerator.device_name()}); use {' or '.join(p for p, ok in supported.items() if ok)}"
        )


def deepspeed_config(training: TrainingConfig, world_size: int) -> dict:
    check_precision(training)
    micro = micro_batch_size(training, world_size)
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": training.grad_accum,
        "train_batch_size": micro * training.grad_accum * world_size,
        "gradient_clipping": training.grad_clip or 0.0,
        "zero_optimization": {"stage": training.zero_stage},
        # DeepSpeed only vouches for its own Adam variants under ZeRO; torch SGD/AdamW work fine.
        "zero_allow_untested_optimizer": True,
        "fp16": {"enabled": training.precision == "fp16", "initial_scale_power": 12},
        "bf16": {"enabled": training.precision == "bf16"},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def make_optimizer(training: TrainingConfig):
    """A callable DeepSpeed calls with the parameter groups (so ZeRO-3 can hand it partitioned ones)."""
    import torch

    def build(params):
        if training.optimizer == "sgd":
            return torch.optim.SGD(params, lr=training.lr, momentum=training.momentum,
                                   weight_decay=training.weight_decay)
        return torch.optim.AdamW(params, lr=training.lr, weight_decay=training.weight_decay)

    return build


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base learning rate after `step` optimizer steps: linear warmup, then the schedule."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine annealing to zero


def make_scheduler(training: TrainingConfig, total_steps: int):
    import torch

    def build(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, training.schedule, training.warmup_steps, total_steps)
        )

    return build
