"""Per-experiment input adapters: an experiment's own objects -> tokens in the common space.

An adapter is private to its experiment (it never leaves the client by default). It turns the raw
features (pt, eta, phi, energy, charge, btag) into engineered ones, normalises them with its own running
statistics — so CMS's DeepFlavB score in [0, 1] and ATLAS's MV2c10 in [-1, 1] each get their own scale —
and embeds them with an MLP plus an object-type embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from crossfed.data.events import BTAG, CHARGE, ENERGY, ETA, N_OBJECT_TYPES, PHI, PT

# log pT, eta, sin phi, cos phi, log E: the experiment-independent kinematics (also the regression targets).
N_KINEMATIC = 5
N_ENGINEERED = N_KINEMATIC + 2  # + charge, b-tag


def kinematic_features(features: torch.Tensor) -> torch.Tensor:
    """[..., 6] raw features -> [..., 5] O(1) kinematics with fixed, experiment-independent scaling.

    Fixed centring (log 30 GeV, log 60 GeV, eta / 2) keeps these comparable across experiments, which the
    shared masked-regression head needs. Clamping keeps log() finite on padding and zero-energy entries.
    """
    features = features.float()
    log_pt = torch.log(features[..., PT].clamp_min(1e-3)) - 3.4
    log_energy = torch.log(features[..., ENERGY].clamp_min(1e-3)) - 4.1
    phi = features[..., PHI]
    return torch.stack([log_pt, features[..., ETA] / 2.0, torch.sin(phi), torch.cos(phi), log_energy], dim=-1)


def engineered_features(features: torch.Tensor) -> torch.Tensor:
    """[..., 6] raw features -> [..., 7]: kinematics, charge and the experiment's own b-tag value."""
    features = features.float()
    return torch.cat([kinematic_features(features), features[..., [CHARGE, BTAG]]], dim=-1)


class RunningNormaliser(nn.Module):
    """Standardises features with the mean and variance of this experiment's real objects.

    The statistics are the average over the first `max_updates` training batches, then frozen, so the
    input scale settles early and stays fixed. They are updated after use, so an output never depends on
    the other events of its batch. Everything stays on the device (no host sync per step).

    With `across_ranks` (set by the trainer of a client with several DeepSpeed ranks) a batch's statistics
    are those of every rank's micro-batch together, so all ranks hold the same buffers: a checkpoint that
    keeps one rank's copy (ZeRO 0-2 save only rank 0's module state) then restores every rank exactly.
    """

    def __init__(self, n_features: int, max_updates: int = 1000):
        super().__init__()
        self.max_updates = max_updates
        self.across_ranks = False
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("var", torch.ones(n_features))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        normalised = (x - self.mean.float()) * torch.rsqrt(self.var.float() + 1e-5)
        if self.training:
            self._update(x, mask)
        return normalised

    def _sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the ranks (a collective: every rank trains the same number of passes)."""
        if self.across_ranks:
            torch.distributed.all_reduce(tensor)
        return tensor

    @torch.no_grad()
    def _update(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        weights = mask[..., None].float()
        totals = self._sum(torch.cat([weights.sum((0, 1)), (x * weights).sum((0, 1))]))  # [objects, sums...]
        count = totals[:1].clamp_min(1.0)
        batch_mean = totals[1:] / count
        batch_var = self._sum(((x - batch_mean) ** 2 * weights).sum((0, 1))) / count
        # Cumulative average: rate 1/(k+1) for the k-th update, then 0 once frozen; a batch without real
        # objects contributes nothing. Written with tensor ops only, so no .item() sync.
        has_objects = (totals[0] > 0).float()
        rate = torch.where(self.updates < self.max_updates, 1.0 / (self.updates + 1).float(), 0.0) * has_objects
        self.mean.lerp_(batch_mean.to(self.mean.dtype), rate.to(self.mean.dtype))
        self.var.lerp_(batch_var.to(self.var.dtype), rate.to(self.var.dtype))
        self.updates += (rate > 0).long()


class InputAdapter(nn.Module):
    """One experiment's objects -> tokens [B, N, dim]: type embedding + MLP(normalised features)."""

    def __init__(self, dim: int):
        super().__init__()
        self.normaliser = RunningNormaliser(N_ENGINEERED)
        self.type_embedding = nn.Embedding(N_OBJECT_TYPES, dim)
        self.mlp = nn.Sequential(nn.Linear(N_ENGINEERED, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, features: torch.Tensor, types: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Padding may hold anything (even NaN): replace it before any arithmetic touches it.
        features = torch.where(mask[..., None], features.float(), 0.0)
        x = self.normaliser(engineered_features(features), mask)
        weight = self.mlp[0].weight
        tokens = self.mlp(x.to(weight.dtype)) + self.type_embedding(types.long() * mask)
        return torch.where(mask[..., None], tokens, 0.0)
