"""FedAdam (Reddi et al. 2021, Algorithm 2): Adam on the weighted-mean delta as pseudo-gradient.

    m ← β1·m + (1 − β1)·Δ
    v ← β2·v + (1 − β2)·Δ²
    w ← w + server_lr · m / (√v + τ)
No bias correction, as in the paper; m and v start at 0.
"""

import numpy as np

from crossfed.federation.strategies.base import AdaptiveServerOptimizer


class FedAdam(AdaptiveServerOptimizer):
    name = "fedadam"

    def __init__(self, server_lr: float, beta1: float, beta2: float, tau: float):
        super().__init__(server_lr, beta1, tau)
        self.beta2 = beta2

    def update_second_moment(self, v: np.ndarray, squared: np.ndarray) -> None:
        v[...] = self.beta2 * v + (1 - self.beta2) * squared
