"""Choosing a b-tag discriminant per chunk among a schema's candidates.

Real files fill some taggers with placeholders: the 2015 CMS open-data NanoAOD stores -3000 as
Jet_btagDeepFlavB for every jet while Jet_btagCSVV2 is filled. A candidate is unusable over a chunk when
no jet's value lies inside its physical range, or when at least two jets were seen and every value is
the same (a constant). The first usable candidate is taken; each rejection is reported by the reader.
"""

from __future__ import annotations

import numpy as np

from crossfed.data.schema import BtagCandidate


def choose(values: list[np.ndarray], candidates: list[BtagCandidate]) -> tuple[int | None, list[str]]:
    """(index of the first usable candidate or None, why each one before it was rejected).

    `values[i]`: the flat discriminant values of all jets of the chunk for candidate i.
    """
    rejected = []
    for index, (jets, candidate) in enumerate(zip(values, candidates)):
        problem = placeholder_problem(jets, candidate)
        if problem is None:
            return index, rejected
        rejected.append(f"{candidate.branch} {problem}")
    return None, rejected


def placeholder_problem(values: np.ndarray, candidate: BtagCandidate) -> str | None:
    """Why these values cannot be a discriminant ('constant (-3000)', ...), or None if they can."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None  # no jets in this chunk: nothing to judge
    if candidate.range is not None:
        low, high = candidate.range
        if not ((values >= low) & (values <= high)).any():
            return f"has no value inside its range [{low:g}, {high:g}]" + _constant_note(values)
    if values.size >= 2 and (values == values[0]).all():
        return f"is constant ({values[0]:g})"
    return None


def _constant_note(values: np.ndarray) -> str:
    return f" (all {values[0]:g})" if (values == values[0]).all() else ""


def clip(values: np.ndarray, candidate: BtagCandidate) -> np.ndarray:
    """Single jets outside the physical range (-1: no tracks) are clipped into it, so no -1000s reach the model."""
    if candidate.range is None:
        return values
    low, high = candidate.range
    return np.where(values < low, low, np.where(values > high, high, values))
