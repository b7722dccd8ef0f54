"""FedAdagrad (Reddi et al. 2021, Algorithm 2): Adagrad on the weighted-mean delta.

    m ← β1·m + (1 − β1)·Δ
    v ← v + Δ²
    w ← w + server_lr · m / (√v + τ)
m and v start at 0 (β2 is not used).
"""

import numpy as np

from crossfed.federation.strategies.base import ServerOptimizer


class FedAdagrad(ServerOptimizer):
    name = "fedadagrad"

    def __init__(self, server_lr: float, beta1: float, tau: float):
        super().__init__(server_lr)
        self.beta1, self.tau = beta1, tau

    def server_update(self, name: str, delta: np.ndarray) -> np.ndarray:
        m, v = self.buffer("m", name, delta), self.buffer("v", name, delta)
        m[...] = self.beta1 * m + (1 - self.beta1) * delta
        v += delta**2
        return self.server_lr * m / (np.sqrt(v) + self.tau)
