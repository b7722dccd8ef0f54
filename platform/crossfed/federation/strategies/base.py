"""What every aggregation strategy shares: the client update record, input checks, the weighted mean.

A round turns the global shared weights and the clients' new shared weights into the next global
weights in two steps:

1. `combine` reduces the clients' states to one aggregate *delta* `Δ = aggregate(client states) − global`
   (weighted mean, median, trimmed mean);
2. `step` applies Δ to the global weights: plain `global + Δ` for FedAvg-like strategies, or a server
   optimiser that treats Δ as a pseudo-gradient (Reddi et al. 2021, "Adaptive Federated Optimization").

Splitting the round there lets central differential privacy add its noise to Δ before the server step
(`perturb_delta`), so the noise is calibrated to the mean's sensitivity whatever optimiser follows.
Maths in float64, results float32.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

State = dict[str, np.ndarray]


@dataclass
class ClientUpdate:
    """One client's result of a round: its new shared weights after local training."""

    client: str
    state: State
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


def mismatch(global_state: State, state: State) -> str | None:
    """Why `state` cannot be aggregated with `global_state` (missing/extra keys, shapes), or None."""
    missing = sorted(global_state.keys() - state.keys())
    extra = sorted(state.keys() - global_state.keys())
    if missing or extra:
        return f"keys differ from the global state (missing: {missing}, unexpected: {extra})"
    for name, reference in global_state.items():
        if np.shape(state[name]) != np.shape(reference):
            return f"tensor {name!r} has shape {np.shape(state[name])}, the global state has {np.shape(reference)}"
    return None


def check_updates(global_state: State, updates: list[ClientUpdate]) -> None:
    if not updates:
        raise ValueError("no client updates to aggregate")
    for update in updates:
        problem = mismatch(global_state, update.state)
        if problem:
            raise ValueError(f"update from client {update.client!r}: {problem}")
        if update.num_examples <= 0:
            raise ValueError(f"update from client {update.client!r} reports {update.num_examples} examples")


def deltas(global_state: State, updates: list[ClientUpdate], name: str) -> np.ndarray:
    """Stack of the clients' deltas for one tensor: shape [n_clients, *tensor shape], float64."""
    reference = np.asarray(global_state[name], dtype=np.float64)
    return np.stack([np.asarray(u.state[name], dtype=np.float64) - reference for u in updates])


def weighted_mean_delta(global_state: State, updates: list[ClientUpdate]) -> State:
    """Σ_i n_i (w_i − w) / Σ_i n_i, with n_i the client's number of training examples."""
    weights = np.array([u.num_examples for u in updates], dtype=np.float64)
    weights /= weights.sum()
    return {name: np.tensordot(weights, deltas(global_state, updates, name), axes=1) for name in global_state}


class Strategy(ABC):
    """Turns the global state and the clients' updates into the next global state."""

    name: str = ""
    # A mean of client deltas has a bounded sensitivity once the deltas are clipped, so central DP can
    # noise it; a median or trimmed mean has no such bound (see federation/privacy.py).
    mean_based: bool = True

    def aggregate(
        self,
        global_state: State,
        updates: list[ClientUpdate],
        *,
        perturb_delta: Callable[[State], State] | None = None,
    ) -> State:
        """The next global state (float32, same keys and shapes). ValueError on mismatch or no updates.

        `perturb_delta`, if given, is applied to the aggregate delta before the server step (central DP).
        With it, no updates is a zero delta: a DP round whose sample is empty still releases its noise.
        """
        if perturb_delta is not None and not self.mean_based:
            raise ValueError(f"strategy {self.name!r} is not a mean of updates; its delta cannot be noised for DP")
        if updates or perturb_delta is None:
            check_updates(global_state, updates)
            delta = self.combine(global_state, updates)
        else:
            delta = {name: np.zeros(np.shape(value)) for name, value in global_state.items()}
        if perturb_delta is not None:
            delta = perturb_delta(delta)
        new_state = self.step(global_state, delta)
        return {name: np.asarray(new_state[name], dtype=np.float32) for name in global_state}

    @abstractmethod
    def combine(self, global_state: State, updates: list[ClientUpdate]) -> State:
        """The aggregate delta Δ (float64) the server step applies."""

    def step(self, global_state: State, delta: State) -> State:
        return {name: np.asarray(global_state[name], dtype=np.float64) + delta[name] for name in global_state}

    def client_options(self) -> dict:
        """Keyword arguments every client passes to its local `train` (FedProx: proximal_mu)."""
        return {}

    def state_dict(self) -> dict:
        """Server-side optimiser state, for resuming a run exactly (plain numbers and numpy arrays)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ServerOptimizer(Strategy):
    """Weighted-mean delta as a pseudo-gradient, stepped by a server optimiser holding moment buffers.

    Subclasses implement `server_update(name, delta)`, keeping their buffers via `buffer(...)`.
    Moments start at zero (as in Flower) and are created on the first round.
    """

    def __init__(self, server_lr: float):
        self.server_lr = server_lr
        self.moments: dict[str, State] = {}  # buffer name (m, v) -> tensor name -> array

    def combine(self, global_state: State, updates: list[ClientUpdate]) -> State:
        return weighted_mean_delta(global_state, updates)

    def buffer(self, buffer_name: str, name: str, like: np.ndarray) -> np.ndarray:
        return self.moments.setdefault(buffer_name, {}).setdefault(name, np.zeros_like(like, dtype=np.float64))

    def step(self, global_state: State, delta: State) -> State:
        return {
            name: np.asarray(global_state[name], dtype=np.float64) + self.server_update(name, delta[name])
            for name in global_state
        }

    @abstractmethod
    def server_update(self, name: str, delta: np.ndarray) -> np.ndarray:
        """Update the moment buffers of tensor `name` with its delta; return the change to the weights."""

    def state_dict(self) -> dict:
        return {"moments": {b: {n: a.copy() for n, a in tensors.items()} for b, tensors in self.moments.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.moments = {
            b: {n: np.array(a, dtype=np.float64) for n, a in tensors.items()} for b, tensors in state["moments"].items()
        }


class AdaptiveServerOptimizer(ServerOptimizer):
    """Reddi et al. 2021, Algorithm 2: m ← β1·m + (1 − β1)·Δ, then w ← w + server_lr · m / (√v + τ).

    FedAdagrad, FedAdam and FedYogi differ only in how the second moment v follows Δ²:
    subclasses implement `update_second_moment(v, squared)` in place.
    """

    def __init__(self, server_lr: float, beta1: float, tau: float):
        super().__init__(server_lr)
        self.beta1, self.tau = beta1, tau

    def server_update(self, name: str, delta: np.ndarray) -> np.ndarray:
        m, v = self.buffer("m", name, delta), self.buffer("v", name, delta)
        m[...] = self.beta1 * m + (1 - self.beta1) * delta
        self.update_second_moment(v, delta**2)
        return self.server_lr * m / (np.sqrt(v) + self.tau)

    @abstractmethod
    def update_second_moment(self, v: np.ndarray, squared: np.ndarray) -> None:
        """Move v (in place) given the squared delta Δ²."""
