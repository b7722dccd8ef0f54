"""Physics symmetries as augmentations (KEK study): azimuthal rotation, z flip, longitudinal boost.

Each draws one random value per event; padding stays exactly as it was. MET is only rotated (it has no
longitudinal component). The boost shifts every object's rapidity y by the same Δy: pT and masses are
invariant, E and η change. The maths runs in float64 and is cast back.
"""

from __future__ import annotations

import math

import torch

from crossfed.config.data import AugmentConfig
from crossfed.data.events import ENERGY, ETA, PHI, PT, ObjectType


def wrap_phi(phi: torch.Tensor) -> torch.Tensor:
    """Map angles into (-π, π]."""
    return phi - 2 * math.pi * torch.ceil((phi - math.pi) / (2 * math.pi))


def augment(features: torch.Tensor, types: torch.Tensor, mask: torch.Tensor, cfg: AugmentConfig,
            generator: torch.Generator) -> torch.Tensor:
    """features [B, N, 6], types [B, N], mask [B, N] -> augmented copy of features."""
    batch = features.shape[0]
    out = features.to(torch.float64).clone()
    real = mask.bool()
    visible = real & (types != int(ObjectType.MET))

    def uniform(low: float, high: float) -> torch.Tensor:  # one value per event, shape [B, 1]
        draw = torch.rand(batch, 1, generator=generator, device=generator.device, dtype=torch.float64)
        return (low + (high - low) * draw).to(features.device)

    if cfg.phi_rotation:
        rotated = wrap_phi(out[..., PHI] + uniform(-math.pi, math.pi))
        out[..., PHI] = torch.where(real, rotated, out[..., PHI])
    if cfg.z_flip:
        flip = uniform(0.0, 1.0) < 0.5
        out[..., ETA] = torch.where(visible & flip, -out[..., ETA], out[..., ETA])
    if cfg.boost and cfg.max_rapidity_shift > 0:
        eta, energy = _boost(out[..., PT], out[..., ETA], out[..., ENERGY],
                             uniform(-cfg.max_rapidity_shift, cfg.max_rapidity_shift))
        out[..., ETA] = torch.where(visible, eta, out[..., ETA])
        out[..., ENERGY] = torch.where(visible, energy, out[..., ENERGY])
    return out.to(features.dtype)


def _boost(pt: torch.Tensor, eta: torch.Tensor, energy: torch.Tensor, rapidity_shift: torch.Tensor):
    """Lorentz boost along z by rapidity Δy: (E, pz) -> (E coshΔy + pz sinhΔy, pz coshΔy + E sinhΔy)."""
    pz = pt * torch.sinh(eta)
    energy = torch.maximum(energy, torch.hypot(pt, pz))  # rounding may leave E a hair below |p|
    cosh, sinh = torch.cosh(rapidity_shift), torch.sinh(rapidity_shift)
    new_energy = energy * cosh + pz * sinh
    new_pz = pz * cosh + energy * sinh
    safe_pt = torch.where(pt > 0, pt, torch.ones_like(pt))  # padding / zero-pT objects keep their η
    new_eta = torch.where(pt > 0, torch.asinh(new_pz / safe_pt), eta)
    return new_eta, new_energy
