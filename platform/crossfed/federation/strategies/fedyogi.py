"""FedYogi (Reddi et al. 2021, Algorithm 2): like FedAdam, but v grows additively (Yogi).

    m ← β1·m + (1 − β1)·Δ
    v ← v − (1 − β2)·Δ²·sign(v − Δ²)
    w ← w + server_lr · m / (√v + τ)
m and v start at 0.
"""

import numpy as np

from crossfed.federation.strategies.fedadam import FedAdam


class FedYogi(FedAdam):
    name = "fedyogi"

    def update_second_moment(self, v: np.ndarray, squared: np.ndarray) -> None:
        v[...] = v - (1 - self.beta2) * squared * np.sign(v - squared)
