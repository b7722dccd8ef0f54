"""Masked-object regression (masked-particle-modelling style).

A fraction of the real objects of each event (at least one) are replaced by the dummy object; the head
regresses their kinematics — log pT, η, sin φ, cos φ, log E, in the fixed experiment-independent scaling
of `kinematic_features` — from their output tokens. Loss: mean squared error over the masked objects.
"""

from __future__ import annotations

from torch import nn

from crossfed.model.adapters import N_KINEMATIC, kinematic_features
from crossfed.tasks.base import Task, masked_mean, uniform


class MaskedRegressionTask(Task):
    name = "masked_regression"
    metrics = ("loss", "masked_fraction")

    def __init__(self, mask_fraction: float = 0.15):
        self.mask_fraction = mask_fraction

    def head(self, dim: int) -> nn.Module:
        return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, N_KINEMATIC))

    def loss_terms(self, model, features, types, mask, experiment, generator):
        draws = uniform(tuple(mask.shape), generator, mask.device)
        draws = draws.masked_fill(~mask, 2.0)
        # Each real object with probability mask_fraction, plus the lowest draw so no event goes unmasked.
        lowest = draws == draws.min(dim=1, keepdim=True).values
        hidden = mask & ((draws < self.mask_fraction) | lowest)
        tokens = model.encode(features, types, mask, experiment, replaced=hidden)
        predicted = model.heads[self.name](tokens).float()
        target = kinematic_features(features.masked_fill(~mask[..., None], 1.0))
        squared_error = ((predicted - target) ** 2).mean(-1)
        loss = masked_mean(squared_error, hidden)
        return loss, {"loss": loss.detach(), "masked_fraction": masked_mean(hidden.float(), mask).detach()}
