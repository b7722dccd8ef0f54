"""What every aggregation strategy shares: the client update record, input checks, the weighted mean.

A round turns the global shared weights and the clients' new shared weights into the next global
weights in two steps:

1. `combine` reduces the clients' states to one aggregate *delta* `Δ = aggregate(client states) − global`
   (weighted mean, median, trimmed mean);
2. `step` applies Δ to the global weights: plain `global + Δ` for FedAvg-like strategies, or a server
   optimiser that treats Δ as a pseudo-gradient (Reddi et al. 2021, "Adaptive Federated Optimization").

Splitting the round there lets central differential privacy add its noise to Δ before the server step
(`perturb_delta`), so the noise is calibrated to the mean's sensitivity whatever optimiser follows.

Every state is handled as one flat float32 buffer (`Layout`: the global state's tensors end to end), the
clients' as the rows of one [clients, parameters] matrix, so that a round is a few vectorised operations
whatever the number of tensors. float32 is enough for the deltas and their mean (the result is float32,
and Δ = w_i − w is formed before any sum, so no large weights are summed); float64 is kept where the maths
needs it: the server optimisers' moment buffers, which accumulate over the whole run (Adagrad's v grows
without bound, m and v are divided), and the example weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

State = dict[str, np.ndarray]


@dataclass
class ClientUpdate:
    """One client's result of a round: its new shared weights after local training. `delta`: those weights
    less the global ones, w_i − w, as one float32 buffer in the global state's `Layout`, once made
    (validation makes it, aggregation reuses it)."""

    client: str
    state: State
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    delta: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Layout:
    """Where each tensor of a state lies in one flat buffer: the global state's tensors, in its order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    bounds: tuple[int, ...]  # tensor k is [bounds[k], bounds[k + 1])

    @classmethod
    def of(cls, state: State) -> Layout:
        shapes = tuple(tuple(np.shape(value)) for value in state.values())
        return cls(tuple(state), shapes, tuple(np.cumsum([0, *(int(np.prod(s)) for s in shapes)]).tolist()))

    @property
    def size(self) -> int:
        return self.bounds[-1]

    def flatten(self, state: State, out: np.ndarray | None = None, dtype=np.float32) -> np.ndarray:
        """The state as one buffer (written into `out` if given): one copy, no temporaries."""
        out = np.empty(self.size, dtype) if out is None else out
        for name, start, stop in zip(self.names, self.bounds, self.bounds[1:]):
            out[start:stop] = np.ravel(state[name])
        return out

    def as_vector(self, state: State) -> np.ndarray:
        """The state as one float32 buffer, to be read only: the buffer its tensors are views of, in this
        layout's order, where they are (a state `unflatten` made: the driver's global state after its first
        aggregation), else a copy (`flatten`). A new model-sized buffer costs more than its copy: its pages
        are faulted in one by one (0.07-0.13 s for 11M parameters on a 2-core VM)."""
        values = [state.get(name) for name in self.names]
        base = getattr(values[0], "base", None) if values and len(state) == len(values) else None
        if (isinstance(base, np.ndarray) and base.dtype == np.float32 and base.shape == (self.size,)
                and base.flags.c_contiguous and all(
                    isinstance(value, np.ndarray) and value.base is base and value.flags.c_contiguous
                    and value.size == stop - start and value.ctypes.data == base.ctypes.data + start * base.itemsize
                    for value, start, stop in zip(values, self.bounds, self.bounds[1:]))):
            return base
        return self.flatten(state)

    def unflatten(self, vector: np.ndarray) -> State:
        """The tensors of a flat buffer, as views into it (no copy)."""
        return {name: vector[start:stop].reshape(shape)
                for name, shape, start, stop in zip(self.names, self.shapes, self.bounds, self.bounds[1:])}

    def stack(self, updates: list[ClientUpdate], out: np.ndarray | None = None) -> np.ndarray:
        """The clients' states as the rows of a float32 [clients, parameters] matrix: the first rows of `out`
        where it has room for them (a buffer kept across rounds, whose pages are already in memory), else
        a new matrix."""
        fits = out is not None and out.dtype == np.float32 and out.ndim == 2 and out.shape[1] == self.size
        if fits and len(out) >= len(updates):
            matrix = out[:len(updates)]
        else:
            matrix = np.empty((len(updates), self.size), np.float32)
        for row, update in zip(matrix, updates):
            self.flatten(update.state, out=row)
        return matrix


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


def client_deltas(layout: Layout, global_vector: np.ndarray, updates: list[ClientUpdate]) -> np.ndarray:
    """The clients' deltas w_i − w, float32 [clients, parameters]: validation's (`ClientUpdate.delta`) where
    every update has one, else formed in the stacked matrix itself. Either way the same float32 subtraction."""
    if all(u.delta is not None and u.delta.shape == (layout.size,) for u in updates):
        return _as_one_matrix([u.delta for u in updates])
    matrix = layout.stack(updates)
    matrix -= global_vector
    return matrix


def _as_one_matrix(rows: list[np.ndarray]) -> np.ndarray:
    """The rows as one [rows, size] matrix: a view where they are consecutive rows of one matrix (validation's,
    when no update in between was rejected), else a copy. A new model-sized buffer costs more than its copy:
    its pages are faulted in one by one."""
    base = rows[0].base
    if isinstance(base, np.ndarray) and base.ndim == 2 and base.flags.c_contiguous:
        first = (rows[0].ctypes.data - base.ctypes.data) // base.strides[0]
        block = base[first:first + len(rows)]
        if len(block) == len(rows) and all(row.ctypes.data == own.ctypes.data for row, own in zip(rows, block)):
            return block
    return np.stack(rows)


def weighted_mean(deltas: np.ndarray, updates: list[ClientUpdate]) -> np.ndarray:
    """Σ_i n_i Δ_i / Σ_i n_i, with n_i the client's number of training examples (weights normalised in
    float64, then one float32 matrix-vector product)."""
    weights = np.array([u.num_examples for u in updates], dtype=np.float64)
    return (weights / weights.sum()).astype(np.float32) @ deltas


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
        layout = Layout.of(global_state)
        global_vector = layout.as_vector(global_state)
        if updates or perturb_delta is None:
            check_updates(global_state, updates)
            delta = self.combine(client_deltas(layout, global_vector, updates), updates)
        else:
            delta = np.zeros(layout.size, np.float32)
        if perturb_delta is not None:
            delta = layout.flatten(perturb_delta(layout.unflatten(delta)), dtype=np.float64)
        return layout.unflatten(self.step(layout, global_vector, delta).astype(np.float32, copy=False))

    @abstractmethod
    def combine(self, deltas: np.ndarray, updates: list[ClientUpdate]) -> np.ndarray:
        """The aggregate delta Δ, flat, from the clients' deltas (float32 [clients, parameters])."""

    def step(self, layout: Layout, global_vector: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """The next global weights, flat: w + Δ."""
        return global_vector + delta

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

    Subclasses implement `server_update(delta)` on the flat float64 delta, keeping their buffers via
    `buffer(...)`. Moments start at zero (as in Flower) and are created on the first round; they are saved
    per tensor (`state_dict`), whatever the layout.
    """

    def __init__(self, server_lr: float):
        self.server_lr = server_lr
        self.moments: dict[str, np.ndarray] = {}  # buffer name (m, v) -> flat float64 buffer
        self.saved: dict[str, State] = {}  # buffers loaded per tensor, flattened once the layout is known
        self.layout: Layout | None = None

    def combine(self, deltas: np.ndarray, updates: list[ClientUpdate]) -> np.ndarray:
        return weighted_mean(deltas, updates)

    def buffer(self, buffer_name: str) -> np.ndarray:
        if buffer_name not in self.moments:
            saved = self.saved.pop(buffer_name, None)
            self.moments[buffer_name] = (self.layout.flatten(saved, dtype=np.float64) if saved is not None
                                         else np.zeros(self.layout.size, np.float64))
        return self.moments[buffer_name]

    def step(self, layout: Layout, global_vector: np.ndarray, delta: np.ndarray) -> np.ndarray:
        if self.layout is not None and self.layout != layout:
            raise ValueError("the global state's tensors changed between rounds; the server optimiser's moments "
                             "no longer fit")
        self.layout = layout
        return global_vector + self.server_update(np.asarray(delta, np.float64))

    @abstractmethod
    def server_update(self, delta: np.ndarray) -> np.ndarray:
        """Update the moment buffers with the flat delta; return the change to the weights."""

    def state_dict(self) -> dict:
        moments = {b: {n: a.copy() for n, a in self.layout.unflatten(vector).items()}
                   for b, vector in self.moments.items()}
        return {"moments": {**{b: dict(t) for b, t in self.saved.items()}, **moments}}

    def load_state_dict(self, state: dict) -> None:
        self.moments, self.layout = {}, None
        self.saved = {b: {n: np.array(a, dtype=np.float64) for n, a in tensors.items()}
                      for b, tensors in state["moments"].items()}


class AdaptiveServerOptimizer(ServerOptimizer):
    """Reddi et al. 2021, Algorithm 2: m ← β1·m + (1 − β1)·Δ, then w ← w + server_lr · m / (√v + τ).

    FedAdagrad, FedAdam and FedYogi differ only in how the second moment v follows Δ²:
    subclasses implement `update_second_moment(v, squared)` in place.
    """

    def __init__(self, server_lr: float, beta1: float, tau: float):
        super().__init__(server_lr)
        self.beta1, self.tau = beta1, tau

    def server_update(self, delta: np.ndarray) -> np.ndarray:
        m, v = self.buffer("m"), self.buffer("v")
        m *= self.beta1
        m += (1 - self.beta1) * delta
        self.update_second_moment(v, delta**2)
        return self.server_lr * m / (np.sqrt(v) + self.tau)

    @abstractmethod
    def update_second_moment(self, v: np.ndarray, squared: np.ndarray) -> None:
        """Move v (in place) given the squared delta Δ²."""
