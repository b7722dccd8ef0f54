"""FedAvgM (Hsu et al. 2019): server momentum on the weighted-mean delta.

    v ← momentum·v + Δ            (v starts at 0, so the first round's v is Δ, as in Flower)
    w ← w + server_lr·v
"""

import numpy as np

from crossfed.federation.strategies.base import ServerOptimizer


class FedAvgM(ServerOptimizer):
    name = "fedavgm"

    def __init__(self, server_lr: float, server_momentum: float):
        super().__init__(server_lr)
        self.server_momentum = server_momentum

    def server_update(self, delta: np.ndarray) -> np.ndarray:
        velocity = self.buffer("velocity")
        velocity *= self.server_momentum
        velocity += delta
        return self.server_lr * velocity
