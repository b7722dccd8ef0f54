"""Deterministic train/validation/test split, and sharding of one split across data-parallel ranks."""

from __future__ import annotations

import numpy as np


def split_indices(n: int, validation_fraction: float, test_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle 0..n-1 with `seed` and cut it into (train, validation, test); the same inputs give the same split.

    Validation and test get floor(n * fraction) events each, training keeps the rest.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not (0 <= validation_fraction and 0 <= test_fraction and validation_fraction + test_fraction < 1):
        raise ValueError("fractions must be >= 0 and sum to less than 1")
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = int(n * validation_fraction), int(n * test_fraction)
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]


def shard(indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank `rank`'s share: every world_size-th index. Shards are disjoint, cover all, differ in size by <= 1."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    return np.asarray(indices)[rank::world_size]
