"""Screen client updates before aggregation; a rejected update is dropped and the round goes on.

Rejected: wrong keys or shapes, non-finite values, no training examples, and norm outliers.
Norm outlier: ‖state − global‖ (L2 over all shared tensors) above `max_norm_ratio` × a reference norm:
- with ≥ 3 screened updates, the reference is the median of the *other* updates' norms;
- with 2, it is the other update's norm (so of two updates only the much larger one can be rejected;
  neither can tell which is right, but a blown-up update is the usual failure);
- with 1 there is nothing to compare to, and it is kept.
A reference norm of 0 (the others did not move) gives no scale to judge by, and the update is kept.
Under central DP the driver clips the updates first and turns the norm check off (`compare_norms=False`):
every remaining check looks at one update alone, as the privacy analysis needs (federation/privacy.py).
"""

from __future__ import annotations

import numpy as np

from crossfed.config.federation import UpdateValidationConfig
from crossfed.federation.strategies.base import ClientUpdate, State, mismatch


def update_norm(global_state: State, state: State) -> float:
    squares = sum(
        float(np.sum((np.asarray(state[n], np.float64) - np.asarray(global_state[n], np.float64)) ** 2))
        for n in global_state
    )
    return float(np.sqrt(squares))


def structural_problem(global_state: State, update: ClientUpdate) -> str | None:
    problem = mismatch(global_state, update.state)
    if problem:
        return problem
    for name, tensor in update.state.items():
        if not np.all(np.isfinite(tensor)):
            return f"non-finite values in tensor {name!r}"
    if update.num_examples <= 0:
        return f"reports {update.num_examples} training examples"
    return None


def validate_updates(
    global_state: State, updates: list[ClientUpdate], cfg: UpdateValidationConfig, *, compare_norms: bool = True
) -> tuple[list[ClientUpdate], list[tuple[str, str]]]:
    """(accepted updates, [(client, reason), ...] for the rejected ones), in the input order.
    `compare_norms=False`: no norm-outlier check (it judges each update by the others')."""
    rejected: list[tuple[str, str]] = []
    sound: list[ClientUpdate] = []
    for update in updates:
        problem = structural_problem(global_state, update)
        if problem:
            rejected.append((update.client, problem))
        else:
            sound.append(update)

    if not compare_norms:
        return sound, rejected
    norms = [update_norm(global_state, u.state) for u in sound]
    accepted = []
    for i, update in enumerate(sound):
        others = norms[:i] + norms[i + 1 :]
        reference = float(np.median(others)) if others else 0.0
        if reference > 0 and norms[i] > cfg.max_norm_ratio * reference:
            rejected.append(
                (update.client, f"update norm {norms[i]:.4g} is more than {cfg.max_norm_ratio:g}× "
                 f"the others' median norm {reference:.4g}")
            )
        else:
            accepted.append(update)
    return accepted, rejected
