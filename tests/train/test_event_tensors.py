"""The trainer's batches: gathered from the events as torch tensors, the values numpy indexing gives."""

import numpy as np
import torch

from crossfed.data.events import EventBatch
from crossfed.train.trainer import EventTensors


def test_batches_equal_numpy_indexing_with_int64_types():
    rng = np.random.default_rng(0)
    events = EventBatch(rng.normal(size=(50, 7, 6)).astype(np.float32), rng.integers(0, 7, (50, 7)).astype(np.int8),
                        rng.uniform(size=(50, 7)) < 0.7)
    tensors = EventTensors(events, "cpu")
    assert tensors.home == "cpu" and np.shares_memory(tensors.features.numpy(), events.features)  # no copy on CPU
    index = np.array([3, 3, 49, 0, 17])
    features, types, mask = tensors.take(index)
    assert torch.equal(features, torch.from_numpy(events.features[index]))
    assert torch.equal(types.long(), torch.from_numpy(events.types[index].astype(np.int64)))
    assert torch.equal(mask, torch.from_numpy(events.mask[index]))
