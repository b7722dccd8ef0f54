"""FedAvg (McMahan et al. 2017): the mean of the clients' weights, weighted by their example counts."""

import numpy as np

from crossfed.federation.strategies.base import Strategy, weighted_mean


class FedAvg(Strategy):
    name = "fedavg"

    def combine(self, deltas: np.ndarray, updates) -> np.ndarray:
        return weighted_mean(deltas, updates)
