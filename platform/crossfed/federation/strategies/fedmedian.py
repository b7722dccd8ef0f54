"""FedMedian (Yin et al. 2018): the coordinate-wise median of the clients' weights.

Unweighted: a median that weighted clients by example count would let one large client decide it,
which defeats its purpose (robustness to a few bad updates).
"""

import numpy as np

from crossfed.federation.strategies.base import Strategy


class FedMedian(Strategy):
    name = "fedmedian"
    mean_based = False

    def combine(self, deltas: np.ndarray, updates) -> np.ndarray:
        return np.median(deltas, axis=0)
