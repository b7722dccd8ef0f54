"""The experiment data layer: ROOT files of any experiment in, common event tensors out.

    load_dataset(dataset, schema, data) -> EventBatch     files -> schema -> selection -> cache
    read_events(files, schema, ...) -> (EventBatch, ReadStats)   the same, without the cache
    split_indices(n, validation_fraction, test_fraction, seed), shard(indices, rank, world_size)
    augment(features, types, mask, cfg, generator)       torch augmentations
    load_schema(name_or_path) -> Schema;  Selection / parse_selection

Heavy libraries (uproot, awkward, torch) are imported only when one of these is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from crossfed.data.events import FEATURES, EventBatch, ObjectType

if TYPE_CHECKING:
    from crossfed.config import DataConfig, DatasetConfig

_LAZY = {
    "read_events": "reader", "ReadStats": "reader", "expand_files": "reader",
    "load_schema": "schema", "Schema": "schema", "BUILTIN_SCHEMAS": "schema",
    "Selection": "selection", "parse_selection": "selection", "VARIABLES": "selection",
    "split_indices": "split", "shard": "split",
    "augment": "augment",
    "cached_read": "cache",
}

__all__ = ["FEATURES", "EventBatch", "ObjectType", "load_dataset", *_LAZY]


def load_dataset(dataset: DatasetConfig, schema: str, data: DataConfig) -> EventBatch:
    """All events of one dataset (files, selection, max_events) as padded arrays, through the tensor cache.

    Non-finite events are dropped with a warning; a selection that keeps nothing is a CrossfedError.
    """
    from crossfed.data.cache import cached_read

    batch, _ = cached_read(dataset.files, schema, selection=dataset.selection, max_objects=data.max_objects,
                           chunk_size=data.chunk_size, max_events=dataset.max_events, cache_dir=data.cache_dir)
    return batch


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"crossfed.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'crossfed.data' has no attribute {name!r}")
