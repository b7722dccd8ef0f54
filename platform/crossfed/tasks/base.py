"""What a self-supervised pre-training task is: a head for the shared model and a loss.

A task corrupts the input itself (hides an object, masks features), runs the model and scores its
head's prediction. `loss_terms` keeps every metric on the device so a training loop can run without
a host sync per step; `loss` is the same with the metrics as plain floats.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class Task(ABC):
    name: str
    metrics: tuple[str, ...]  # the keys of the metrics dict that loss() returns

    @abstractmethod
    def head(self, dim: int) -> nn.Module:
        """The task's head, stored as `model.heads[<name>]` (shared across experiments)."""

    @abstractmethod
    def loss_terms(self, model, features: torch.Tensor, types: torch.Tensor, mask: torch.Tensor, experiment: str,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(scalar loss, metrics as 0-dim detached tensors)."""

    def loss(self, model, features: torch.Tensor, types: torch.Tensor, mask: torch.Tensor, experiment: str,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        loss, metrics = self.loss_terms(model, features, types, mask, experiment, generator)
        return loss, to_floats(metrics)


def to_floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """One device->host copy for all metrics instead of one per metric."""
    if not metrics:
        return {}
    values = torch.stack([m.detach().float() for m in metrics.values()]).tolist()
    return dict(zip(metrics, values))


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn from `generator` (on its own device), then moved to `device`."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device, non_blocking=True)


def masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `weights` is 1; 0 (not NaN) when nothing is selected."""
    weights = weights.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)
