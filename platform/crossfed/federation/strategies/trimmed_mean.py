"""Coordinate-wise trimmed mean (Yin et al. 2018): per coordinate, drop the `trim_fraction` largest and
smallest client values (floor(trim_fraction·n) each end) and average the rest, unweighted like the median.
"""

import numpy as np

from crossfed.federation.strategies.base import Strategy


class TrimmedMean(Strategy):
    name = "trimmed_mean"
    mean_based = False

    def __init__(self, trim_fraction: float):
        self.trim_fraction = trim_fraction

    def combine(self, deltas: np.ndarray, updates) -> np.ndarray:
        cut = int(self.trim_fraction * len(updates))  # trim_fraction < 0.5 keeps at least one value
        deltas.sort(axis=0)  # in place: the matrix is this round's own
        return deltas[cut:len(updates) - cut].mean(axis=0)
