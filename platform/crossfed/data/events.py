"""The common event representation every experiment's data is mapped into.

Each event is a set of up to N physics objects. Per object: its type (`ObjectType`) and the features
in `FEATURES` — pT, η, φ, energy (GeV), electric charge and the experiment's own b-tag value (its
meaning differs per experiment; the private input adapter learns it). Events with fewer objects are
padded; `mask` is True on real objects. GeV everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np


class ObjectType(IntEnum):
    ELECTRON = 0
    MUON = 1
    TAU = 2
    PHOTON = 3
    JET = 4
    BJET = 5
    MET = 6


N_OBJECT_TYPES = len(ObjectType)
FEATURES = ("pt", "eta", "phi", "energy", "charge", "btag")
PT, ETA, PHI, ENERGY, CHARGE, BTAG = range(len(FEATURES))


@dataclass
class EventBatch:
    """Padded arrays for n events of at most N objects.

    features: float32 [n, N, len(FEATURES)]; types: int8 [n, N] (0 on padding); mask: bool [n, N];
    labels: optional int64 [n] (1 = signal, 0 = background) for the downstream task.
    """

    features: np.ndarray
    types: np.ndarray
    mask: np.ndarray
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, n_obj, n_feat = self.features.shape
        if n_feat != len(FEATURES):
            raise ValueError(f"features has {n_feat} columns, expected {len(FEATURES)} {FEATURES}")
        if self.types.shape != (n, n_obj) or self.mask.shape != (n, n_obj):
            raise ValueError("types and mask must have shape [n_events, max_objects]")
        if self.labels is not None and self.labels.shape != (n,):
            raise ValueError("labels must have shape [n_events]")

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def max_objects(self) -> int:
        return self.features.shape[1]

    def take(self, index: np.ndarray | slice) -> EventBatch:
        labels = None if self.labels is None else self.labels[index]
        return EventBatch(self.features[index], self.types[index], self.mask[index], labels)

    def with_labels(self, label: int) -> EventBatch:
        return EventBatch(self.features, self.types, self.mask, np.full(len(self), label, dtype=np.int64))

    @staticmethod
    def concat(batches: list[EventBatch]) -> EventBatch:
        if not batches:
            raise ValueError("nothing to concatenate")
        labelled = [b.labels is not None for b in batches]
        if any(labelled) and not all(labelled):
            raise ValueError("cannot concatenate labelled with unlabelled events")
        return EventBatch(
            np.concatenate([b.features for b in batches]),
            np.concatenate([b.types for b in batches]),
            np.concatenate([b.mask for b in batches]),
            np.concatenate([b.labels for b in batches]) if all(labelled) else None,
        )

    @staticmethod
    def zeros(n: int, max_objects: int) -> EventBatch:
        """n events of padding only (np.zeros maps its pages lazily: those never written cost no memory)."""
        return EventBatch(
            np.zeros((n, max_objects, len(FEATURES)), np.float32),
            np.zeros((n, max_objects), np.int8),
            np.zeros((n, max_objects), bool),
        )

    def save(self, path: str | Path) -> None:
        arrays = dict(features=self.features, types=self.types, mask=self.mask)
        if self.labels is not None:
            arrays["labels"] = self.labels
        np.savez(path, **arrays)

    @staticmethod
    def load(path: str | Path) -> EventBatch:
        with np.load(path) as f:
            return EventBatch(f["features"], f["types"], f["mask"], f["labels"] if "labels" in f else None)
