"""Central differential privacy for the aggregate (DP-FedAvg, McMahan et al. 2018, "Learning
Differentially Private Recurrent Language Models").

Per round, with clip norm C, noise multiplier σ and n = the number of updates aggregated:
1. `privatize`: each client's delta Δ_i = state_i − global is scaled to L2 norm ≤ C (norm over all
   shared tensors together), and every client gets the same weight (num_examples = 1): with
   example-count weights one large client could move the mean by up to C, not C/n.
2. the strategy reduces the clipped updates to their mean delta (FedAvg, FedProx, and the pseudo-gradient
   of FedAvgM/FedAdam/FedYogi/FedAdagrad);
3. `add_noise`: Gaussian noise of std σ·C/n is added to every coordinate of that mean delta, before
   any server optimiser step (which is then post-processing and costs no privacy).
Sensitivity: a client's clipped delta changes the sum Σ Δ_i by at most C in L2 when it is added or
removed (replaced by zero), so the mean with the fixed denominator n has sensitivity C/n, and the
noise std is σ times it. This is client-level (user-level) DP: it protects a whole experiment's
contribution in a round, not single events.
Accounting: Opacus' RDP accountant for the subsampled Gaussian mechanism, one step per round, with
sample rate q = n / total_clients. It assumes Poisson sampling of clients; sampling a fixed number per
round is the usual approximation. With σ = 0 there is no privacy and ε is infinite.
Median and trimmed mean have no such sensitivity bound, so central DP refuses them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from crossfed.config.federation import PrivacyConfig
from crossfed.federation.strategies.base import ClientUpdate, State
from crossfed.federation.validation import update_norm


class CentralPrivacy:
    def __init__(self, cfg: PrivacyConfig, total_clients: int):
        from opacus.accountants import RDPAccountant

        if total_clients < 1:
            raise ValueError(f"total_clients must be positive, got {total_clients}")
        self.cfg = cfg
        self.total_clients = total_clients
        self.accountant = RDPAccountant()

    def privatize(self, global_state: State, updates: list[ClientUpdate]) -> list[ClientUpdate]:
        """Updates whose states are global + Δ_i clipped to `clip_norm`, all with weight 1."""
        clipped = []
        for update in updates:
            norm = update_norm(global_state, update.state)
            scale = min(1.0, self.cfg.clip_norm / norm) if norm > 0 else 1.0
            state = {
                name: np.asarray(reference, np.float64)
                + scale * (np.asarray(update.state[name], np.float64) - np.asarray(reference, np.float64))
                for name, reference in global_state.items()
            }
            clipped.append(ClientUpdate(update.client, state, 1, dict(update.metrics)))
        return clipped

    def noise_std(self, n_clients: int) -> float:
        return self.cfg.noise_multiplier * self.cfg.clip_norm / n_clients

    def add_noise(self, delta: State, n_clients: int, rng: np.random.Generator) -> State:
        """The mean delta plus N(0, (σ·C/n)²) per coordinate; records one round with the accountant."""
        std = self.noise_std(n_clients)
        noised = {name: value + rng.normal(0.0, std, size=np.shape(value)) for name, value in delta.items()}
        self.accountant.step(
            noise_multiplier=self.cfg.noise_multiplier, sample_rate=min(1.0, n_clients / self.total_clients)
        )
        return noised

    def perturbation(self, n_clients: int, rng: np.random.Generator) -> Callable[[State], State]:
        """The noise for the mean of `n_clients` clipped updates, as the strategy's `perturb_delta`.

        One private round is `strategy.aggregate(global, privatize(global, updates),
        perturb_delta=perturbation(len(updates), rng))`: clip → the strategy's mean delta → noise → the
        strategy's server step. The strategy refuses it unless it is mean-based.
        """
        return partial(self.add_noise, n_clients=n_clients, rng=rng)

    def epsilon(self) -> float:
        """ε spent so far at the configured δ (0 before the first round; inf without noise)."""
        if not self.accountant.history:
            return 0.0
        if self.cfg.noise_multiplier == 0:
            return float("inf")
        return float(self.accountant.get_epsilon(self.cfg.delta))

    def state_dict(self) -> dict:
        return {"history": [tuple(step) for step in self.accountant.history]}

    def load_state_dict(self, state: dict) -> None:
        self.accountant.history = [tuple(step) for step in state["history"]]
