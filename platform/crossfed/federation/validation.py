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

The updates are screened as the rows of one float32 matrix (`Layout.stack`), which each accepted update
keeps as its `flat` for the aggregation: finiteness and norms are a few vectorised operations. The outlier
norms are float32 (a ratio test against the others' median needs no more); `update_norm`, which DP
clipping divides by, is float64 (the bound it enforces is the privacy guarantee).
"""

from __future__ import annotations

import numpy as np

from crossfed.config.federation import UpdateValidationConfig
from crossfed.federation.strategies.base import ClientUpdate, Layout, State, mismatch


def update_norm(global_state: State, state: State) -> float:
    """‖state − global‖₂ over all shared tensors, in float64."""
    layout = Layout.of(global_state)
    delta = layout.flatten(state, dtype=np.float64)
    delta -= layout.flatten(global_state, dtype=np.float64)
    return float(np.sqrt(delta @ delta))


def non_finite_tensor(layout: Layout, flat: np.ndarray) -> str | None:
    """The first tensor of a flat state holding a NaN or an infinity (None: all finite)."""
    for name, start, stop in zip(layout.names, layout.bounds, layout.bounds[1:]):
        if not np.isfinite(flat[start:stop]).all():
            return name
    return None


def validate_updates(
    global_state: State, updates: list[ClientUpdate], cfg: UpdateValidationConfig, *, compare_norms: bool = True,
    rows: np.ndarray | None = None,
) -> tuple[list[ClientUpdate], list[tuple[str, str]]]:
    """(accepted updates, [(client, reason), ...] for the rejected ones), in the input order.
    `compare_norms=False`: no norm-outlier check (it judges each update by the others'). `rows`: a float32
    [clients, parameters] buffer to screen the updates in (`Layout.stack`), which their deltas then are
    views of until the next call is given it."""
    order = {id(update): i for i, update in enumerate(updates)}
    rejected: list[tuple[ClientUpdate, str]] = []
    shaped = []
    for update in updates:
        problem = mismatch(global_state, update.state)
        if problem:
            rejected.append((update, problem))
        else:
            shaped.append(update)
    layout = Layout.of(global_state)
    matrix = layout.stack(shaped, out=rows)
    finite = np.isfinite(matrix).all(axis=1)
    # The deltas are formed in the matrix itself: the updates' weights arrive in fresh object-store pages,
    # read once here, and every further pass (norms, aggregation) runs on this one buffer, no temporaries.
    matrix -= layout.as_vector(global_state)
    sound, rows = [], []
    for update, row, is_finite in zip(shaped, matrix, finite):
        if not is_finite:
            rejected.append((update, f"non-finite values in tensor {non_finite_tensor(layout, row)!r}"))
        elif update.num_examples <= 0:
            rejected.append((update, f"reports {update.num_examples} training examples"))
        else:
            update.delta = row  # the aggregation reuses it
            sound.append(update)
            rows.append(row)

    rejected.sort(key=lambda pair: order[id(pair[0])])
    if not compare_norms:
        return sound, [(update.client, why) for update, why in rejected]
    norms = [float(np.linalg.norm(row)) for row in rows]
    accepted = []
    for i, update in enumerate(sound):
        others = norms[:i] + norms[i + 1 :]
        reference = float(np.median(others)) if others else 0.0
        if reference > 0 and norms[i] > cfg.max_norm_ratio * reference:
            rejected.append(
                (update, f"update norm {norms[i]:.4g} is more than {cfg.max_norm_ratio:g}× "
                 f"the others' median norm {reference:.4g}")
            )
        else:
            accepted.append(update)
    return accepted, [(update.client, why) for update, why in rejected]
