"""FedYogi (Reddi et al. 2021, Algorithm 2): like FedAdam, but v grows additively (Yogi).

    m ← β1·m + (1 − β1)·Δ
    v ← v − (1 − β2)·Δ²·sign(v − Δ²)
    w ← w + server_lr · m / (√v + τ)
m and v start at 0.
"""

import numpy as np

from crossfed.federation.strategies.base import ServerOptimizer


class FedYogi(ServerOptimizer):
    name = "fedyogi"

    def __init__(self, server_lr: float, beta1: float, beta2: float, tau: float):
        super().__init__(server_lr)
        self.beta1, self.beta2, self.tau = beta1, beta2, tau

    def server_update(self, name: str, delta: np.ndarray) -> np.ndarray:
        m, v = self.buffer("m", name, delta), self.buffer("v", name, delta)
        squared = delta**2
        m[...] = self.beta1 * m + (1 - self.beta1) * delta
        v[...] = v - (1 - self.beta2) * squared * np.sign(v - squared)
        return self.server_lr * m / (np.sqrt(v) + self.tau)
