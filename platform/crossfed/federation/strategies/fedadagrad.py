"""FedAdagrad (Reddi et al. 2021, Algorithm 2): Adagrad on the weighted-mean delta.

    m ← β1·m + (1 − β1)·Δ
    v ← v + Δ²
    w ← w + server_lr · m / (√v + τ)
m and v start at 0 (β2 is not used).
"""

import numpy as np

from crossfed.federation.strategies.base import AdaptiveServerOptimizer


class FedAdagrad(AdaptiveServerOptimizer):
    name = "fedadagrad"

    def update_second_moment(self, v: np.ndarray, squared: np.ndarray) -> None:
        v += squared
