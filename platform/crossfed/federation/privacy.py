"""Central differential privacy for the aggregate (DP-FedAvg, McMahan et al. 2018, "Learning
Differentially Private Recurrent Language Models"), built as the accountant assumes it.

Client-level DP: it protects a whole experiment's contribution (its updates and metrics over the run),
not single events. Neighbouring runs differ by one client added or removed. With clip norm C, noise
multiplier σ, N clients and m = `clients_per_round` (or N) expected per round, q = m / N:

1. sampling (`draw`): every client independently with probability q (Poisson), from a key drawn from
   the OS's entropy when the driver starts. The sample must be secret for the amplification by
   subsampling that the accountant credits: a sample regenerable from the logged seed would make every
   round a full Gaussian mechanism for the clients in it, at ε far above what q < 1 reports. The key
   gives a retried round the same draw (redrawing until enough clients answer would raise each
   client's chance of being in a round above q); a resumed run has a new key. A drawn client still busy
   with a dropped fit sits the round out (its chance is then 0, below q).
2. clipping (`clip_update`): each client's delta Δ_i = state_i − global is scaled to L2 norm ≤ C (over all
   shared tensors together). The client clips before uploading (the unclipped update never leaves its
   site) and the driver clips again before any check, so the guarantee does not rest on clients' code.
   The driver's checks on an update then depend on that client's update alone (structure, finiteness):
   a rejected update counts as 0, still within the bound. The cross-client norm-outlier check is off
   under DP: it would let one client's update decide whether another's is counted (sensitivity above
   C), and clipping already bounds what any update can do.
3. the strategy's mean delta, uniform weights (example counts would let one client move it by more).
4. `add_noise`: the mean is rescaled to the fixed denominator, Σ_i Δ_i / m (not the realised count,
   which depends on who was sampled, dropped or too slow), and Gaussian noise of std σ·C/m is added to
   every coordinate, before any server optimiser step (post-processing). Adding or removing one client
   moves Σ_i Δ_i by at most C, so this is the sampled Gaussian mechanism Opacus' RDP accountant counts:
   one step (σ, q) per round. Dropped clients and stragglers change neither q nor the denominator.
5. validation metrics, only with `metric_noise_multiplier` σ_m (`noised_metric_means`): each client's K
   metrics clipped to [0, B], summed over every client and divided by N, plus noise of std
   σ_m·B·√K / N; one more accountant step (σ_m, q = 1) per round.

Noise comes from numpy's PCG64 seeded with 128 bits from `secrets` afresh for every draw; nothing of it
is logged or saved, so a run with DP is not bit-reproducible and a resumed run continues with fresh
noise. Nothing else about the clients is recorded under DP unless `per_client_metrics` opts out: counts
of sampled, dropped or rejected clients, traffic and timings would tell who took part in a round.
With σ = 0 there is no privacy and ε is infinite. Median and trimmed mean have no sensitivity bound,
so central DP refuses them.

Not covered: the driver (it sees the clipped updates, and the raw validation metrics it is to noise);
a run that stops because too few updates passed the checks (that it stopped is visible); choosing among
a sweep's trials (each trial's ε is its own); floating-point subtleties of sampling Gaussian noise.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import Callable

import numpy as np

from crossfed.config.federation import PrivacyConfig
from crossfed.errors import CrossfedError
from crossfed.federation.strategies.base import ClientUpdate, State, mismatch
from crossfed.federation.validation import update_norm


def fresh_rng() -> np.random.Generator:
    """A generator seeded from the operating system's entropy: its draws follow from nothing logged."""
    return np.random.default_rng(secrets.randbits(128))


def clip_update(global_state: State, state: State, clip_norm: float, dtype=np.float64) -> State:
    """global + Δ·min(1, C/‖Δ‖). A state that cannot be compared to the global one (keys, shapes) or is
    not finite is returned as it is, for the validation to reject."""
    if mismatch(global_state, state):
        return state
    norm = update_norm(global_state, state)
    if not math.isfinite(norm):
        return state
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    clipped = {}
    for name, reference in global_state.items():
        reference = np.asarray(reference, np.float64)
        clipped[name] = (reference + scale * (np.asarray(state[name], np.float64) - reference)).astype(dtype)
    return clipped


def schedule_epsilon(steps: list[tuple[float, float, int]], delta: float) -> float:
    """ε at δ of composing (noise multiplier, sample rate, number of steps) sampled Gaussian mechanisms:
    what Opacus' `RDPAccountant.get_epsilon` computes for that history (same orders, same analysis), with
    each mechanism's RDP computed once (it is linear in the steps; Opacus' is slow pure Python)."""
    from opacus.accountants.analysis.rdp import get_privacy_spent

    if not steps:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in steps):
        return float("inf")
    rdp = sum(count * _rdp_of_one_step(float(sigma), float(rate)) for sigma, rate, count in steps)
    epsilon, _ = get_privacy_spent(orders=_rdp_orders(), rdp=rdp, delta=delta)
    return float(epsilon)


def _rdp_orders() -> list[float]:
    from opacus.accountants import RDPAccountant

    return RDPAccountant.DEFAULT_ALPHAS


@functools.lru_cache(maxsize=64)
def _rdp_of_one_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    from opacus.accountants.analysis.rdp import compute_rdp

    return compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=_rdp_orders())


def _bounded(value: float, bound: float) -> float:
    """`value` clipped to [0, bound]; a non-finite value counts 0."""
    value = float(value)
    return min(max(value, 0.0), bound) if math.isfinite(value) else 0.0


class CentralPrivacy:
    def __init__(self, cfg: PrivacyConfig, total_clients: int, expected_clients: int | None = None):
        from opacus.accountants import RDPAccountant

        if total_clients < 1:
            raise ValueError(f"total_clients must be positive, got {total_clients}")
        self.cfg = cfg
        self.total_clients = total_clients
        self.expected_clients = min(expected_clients or total_clients, total_clients)
        self.sample_rate = self.expected_clients / total_clients
        self.accountant = RDPAccountant()
        self._sampling_key = secrets.randbits(128)  # never stored: a resumed run draws its samples afresh

    # -- 1. sampling ----------------------------------------------------------------------------------
    def draw(self, names: list[str], round_number: int) -> list[str]:
        """Poisson sampling: each of `names` independently with probability q, in their order. The same
        for every call in one round of this driver (retries), unpredictable from anything logged."""
        if self.sample_rate >= 1.0:
            return list(names)
        coins = np.random.default_rng([self._sampling_key, round_number]).random(len(names))
        return [name for name, coin in zip(names, coins) if coin < self.sample_rate]

    # -- 2.-4. the update -----------------------------------------------------------------------------
    def clip(self, global_state: State, updates: list[ClientUpdate]) -> list[ClientUpdate]:
        """The updates clipped to `clip_norm` (what every check under DP looks at), weights unchanged."""
        return [ClientUpdate(u.client, clip_update(global_state, u.state, self.cfg.clip_norm), u.num_examples,
                             dict(u.metrics)) for u in updates]

    def privatize(self, global_state: State, updates: list[ClientUpdate]) -> list[ClientUpdate]:
        """Updates whose states are global + Δ_i clipped to `clip_norm`, all with weight 1."""
        return [ClientUpdate(u.client, u.state, 1, {}) for u in self.clip(global_state, updates)]

    def noise_std(self) -> float:
        """σ·C/m: the fixed denominator m is the expected number of clients per round."""
        return self.cfg.noise_multiplier * self.cfg.clip_norm / self.expected_clients

    def add_noise(self, mean_delta: State, n_updates: int, rng: np.random.Generator | None = None) -> State:
        """Σ Δ_i / m + N(0, (σ·C/m)²) per coordinate, from the mean of `n_updates` clipped deltas; records
        one round with the accountant. `rng`: only for tests; by default fresh OS entropy."""
        rng = rng or fresh_rng()
        to_fixed_denominator = n_updates / self.expected_clients
        std = self.noise_std()
        noised = {name: np.asarray(value, np.float64) * to_fixed_denominator + rng.normal(0.0, std, np.shape(value))
                  for name, value in mean_delta.items()}
        self.accountant.step(noise_multiplier=self.cfg.noise_multiplier, sample_rate=self.sample_rate)
        return noised

    def perturbation(self, n_updates: int, rng: np.random.Generator | None = None) -> Callable[[State], State]:
        """The noise for the mean of `n_updates` clipped updates, as the strategy's `perturb_delta`.

        One private round is `strategy.aggregate(global, privatize(global, updates),
        perturb_delta=perturbation(len(updates)))`: clip → the strategy's mean delta → fixed denominator
        and noise → the strategy's server step. The strategy refuses it unless it is mean-based.
        """
        return functools.partial(self.add_noise, n_updates=n_updates, rng=rng)

    # -- 5. validation metrics ------------------------------------------------------------------------
    @property
    def releases_metrics(self) -> bool:
        return self.cfg.metric_noise_multiplier is not None

    def metric_noise_std(self, n_metrics: int) -> float:
        return self.cfg.metric_noise_multiplier * self.cfg.metric_clip * math.sqrt(n_metrics) / self.total_clients

    def noised_metric_means(self, evaluations: dict[str, dict[str, float]], keys: list[str],
                            rng: np.random.Generator | None = None) -> dict[str, float]:
        """{key: noised mean over all clients} of each client's metric clipped to [0, metric_clip] (a
        missing client or value counts 0); records one step (σ_m, q=1) with the accountant."""
        rng = rng or fresh_rng()
        bound = self.cfg.metric_clip
        std = self.metric_noise_std(len(keys))
        noised = {}
        for key in keys:
            total = sum(_bounded(metrics.get(key, 0.0), bound) for metrics in evaluations.values())
            noised[key] = total / self.total_clients + float(rng.normal(0.0, std))
        self.accountant.step(noise_multiplier=self.cfg.metric_noise_multiplier, sample_rate=1.0)
        return noised

    # -- accounting -----------------------------------------------------------------------------------
    def round_steps(self, rounds: int = 1) -> list[tuple[float, float, int]]:
        """What `rounds` rounds add to the accountant's history."""
        steps = [(self.cfg.noise_multiplier, self.sample_rate, rounds)]
        if self.releases_metrics:
            steps.append((self.cfg.metric_noise_multiplier, 1.0, rounds))
        return steps

    def epsilon(self) -> float:
        """ε spent so far at the configured δ (0 before the first round; inf without noise)."""
        return schedule_epsilon(self.accountant.history, self.cfg.delta)

    def check_budget(self, round_number: int) -> None:
        """CrossfedError if round `round_number` would take ε above `target_epsilon`."""
        target = self.cfg.target_epsilon
        if target is None:
            return
        after = schedule_epsilon([*self.accountant.history, *self.round_steps()], self.cfg.delta)
        if after > target:
            raise CrossfedError(
                f"privacy budget spent: round {round_number} would bring ε to {after:.4g} (δ={self.cfg.delta:g}), "
                f"above federation.privacy.target_epsilon={target:g}; the run stops after round {round_number - 1} "
                f"at ε={self.epsilon():.4g}"
            )

    def state_dict(self) -> dict:
        return {"history": [tuple(step) for step in self.accountant.history]}

    def load_state_dict(self, state: dict) -> None:
        self.accountant.history = [tuple(step) for step in state["history"]]


def check_planned_budget(cfg: PrivacyConfig, total_clients: int, expected_clients: int | None, rounds: int) -> None:
    """Before a run starts: CrossfedError naming how many rounds fit if `rounds` would exceed
    `target_epsilon` (the schedule is fixed, so its ε is known in advance)."""
    if cfg.target_epsilon is None:
        return
    privacy = CentralPrivacy(cfg, total_clients, expected_clients)
    planned = schedule_epsilon(privacy.round_steps(rounds), cfg.delta)
    if planned <= cfg.target_epsilon:
        return
    fitting, over = 0, rounds  # ε grows with the rounds: bisect for the last round within the budget
    while over - fitting > 1:
        middle = (fitting + over) // 2
        if schedule_epsilon(privacy.round_steps(middle), cfg.delta) <= cfg.target_epsilon:
            fitting = middle
        else:
            over = middle
    raise CrossfedError(
        f"federation.rounds={rounds} would spend ε={planned:.4g} (δ={cfg.delta:g}), above "
        f"federation.privacy.target_epsilon={cfg.target_epsilon:g}: {fitting} round(s) fit; lower the rounds "
        f"or raise federation.privacy.noise_multiplier"
    )
