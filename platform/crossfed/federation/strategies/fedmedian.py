"""FedMedian (Yin et al. 2018): the coordinate-wise median of the clients' weights.

Unweighted: a median that weighted clients by example count would let one large client decide it,
which defeats its purpose (robustness to a few bad updates).
"""

import numpy as np

from crossfed.federation.strategies.base import State, Strategy, deltas


class FedMedian(Strategy):
    name = "fedmedian"
    mean_based = False

    def combine(self, global_state: State, updates) -> State:
        return {name: np.median(deltas(global_state, updates, name), axis=0) for name in global_state}
