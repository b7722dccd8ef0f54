"""Four-vector conversions, with their edge cases defined once for generation and reading alike.

- pT = 0: η is ±ETA_AT_ZERO_PT with the sign of pz (0 when pz = 0 too), never ±inf/NaN, so an object
  along the beam does not make its whole event non-finite.
- E < |p| (rounding, or a smeared energy): the object is massless: mass 0, energy |p|.

numpy arrays in, float64 arrays out (torch's augmentations keep their own copy of the boost maths).
"""

from __future__ import annotations

import numpy as np

# The η of pz/pT = 1e9: far outside any detector (|η| < 5), finite in float32.
ETA_AT_ZERO_PT = float(np.arcsinh(1e9))


def pt_eta_phi(px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(pt > 0, np.arcsinh(pz / pt), np.sign(pz) * ETA_AT_ZERO_PT)
    return pt, eta, np.arctan2(py, px)


def _momentum_squared(px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
    return np.power(px, 2) + np.power(py, 2) + np.power(pz, 2)


def physical_energy(energy: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
    """The energy, raised to |p| where it is below it (the object is then massless)."""
    return np.maximum(energy, np.sqrt(_momentum_squared(px, py, pz)))


def mass(energy: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
    """The invariant mass; 0 where E < |p|."""
    return np.sqrt(np.maximum(np.power(energy, 2) - _momentum_squared(px, py, pz), 0.0))


def energy_from_pt_eta(pt: np.ndarray, eta: np.ndarray, mass_squared: np.ndarray | float) -> np.ndarray:
    """E = sqrt((pT cosh η)² + m²); np.power, not ** 2, as the reader has always computed it (bit for bit)."""
    return np.sqrt(np.power(pt * np.cosh(eta), 2) + mass_squared)
