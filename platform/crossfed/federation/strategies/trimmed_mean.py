"""Coordinate-wise trimmed mean (Yin et al. 2018): per coordinate, drop the `trim_fraction` largest and
smallest client values (floor(trim_fraction·n) each end) and average the rest, unweighted like the median.
"""

import numpy as np

from crossfed.federation.strategies.base import State, Strategy, deltas


class TrimmedMean(Strategy):
    name = "trimmed_mean"
    mean_based = False

    def __init__(self, trim_fraction: float):
        self.trim_fraction = trim_fraction

    def combine(self, global_state: State, updates) -> State:
        cut = int(self.trim_fraction * len(updates))  # trim_fraction < 0.5 keeps at least one value
        kept = slice(cut, len(updates) - cut)
        return {
            name: np.sort(deltas(global_state, updates, name), axis=0)[kept].mean(axis=0) for name in global_state
        }
