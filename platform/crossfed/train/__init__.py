"""Local training: the DeepSpeed trainer of one client rank, Ray worker groups, fine-tuning and metrics.

    LocalTrainer(config, experiments, *, rank, world_size, data=None, total_steps=None)   trainer.py
    WorkerGroup(config, experiments, *, num_workers, ...).call(method, ...) -> per-rank results   workers.py
    crossfed.train.finetune.finetune(config, experiment, labelled_events, pretrained_state, *, data, seed, features)
    crossfed.train.finetune.encode_events(config, experiment, pretrained_state, events)  frozen encoder, once
    roc_auc, background_rejection, accuracy, roc_curve, classification_metrics              metrics.py

Torch, DeepSpeed and Ray are imported only when one of these is first used.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "LocalTrainer": "trainer", "WorkerGroup": "workers",
    # `finetune` itself is not here: the name is taken by the submodule (from crossfed.train.finetune import finetune)
    "FinetuneMetrics": "finetune", "load_labelled_events": "finetune",
    "roc_auc": "metrics", "roc_curve": "metrics", "background_rejection": "metrics", "accuracy": "metrics",
    "classification_metrics": "metrics",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"crossfed.train.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'crossfed.train' has no attribute {name!r}")
