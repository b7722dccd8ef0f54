"""FedAdam (Reddi et al. 2021, Algorithm 2): Adam on the weighted-mean delta as pseudo-gradient.

    m ← β1·m + (1 − β1)·Δ
    v ← β2·v + (1 − β2)·Δ²
    w ← w + server_lr · m / (√v + τ)
No bias correction, as in the paper; m and v start at 0.
"""

import numpy as np

from crossfed.federation.strategies.base import ServerOptimizer


class FedAdam(ServerOptimizer):
    name = "fedadam"

    def __init__(self, server_lr: float, beta1: float, beta2: float, tau: float):
        super().__init__(server_lr)
        self.beta1, self.beta2, self.tau = beta1, beta2, tau

    def server_update(self, name: str, delta: np.ndarray) -> np.ndarray:
        m, v = self.buffer("m", name, delta), self.buffer("v", name, delta)
        m[...] = self.beta1 * m + (1 - self.beta1) * delta
        v[...] = self.beta2 * v + (1 - self.beta2) * delta**2
        return self.server_lr * m / (np.sqrt(v) + self.tau)
