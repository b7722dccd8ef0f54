"""Self-supervised pre-training tasks, one per file; `TASKS` is the registry.

Adding a task: write `tasks/<name>.py` with a `Task` subclass and add one line to `TASKS`.
The trainer calls `pretraining_loss` only.
"""

from __future__ import annotations

import torch

from crossfed.errors import CrossfedError
from crossfed.tasks.base import Task, to_floats
from crossfed.tasks.masked_regression import MaskedRegressionTask
from crossfed.tasks.replaced_object import ReplacedObjectTask

__all__ = ["TASKS", "Task", "build_tasks", "get_task", "pretraining_loss"]

TASKS: dict[str, type[Task]] = {
    "replaced_object": ReplacedObjectTask,
    "masked_regression": MaskedRegressionTask,
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise CrossfedError(f"unknown pre-training task {name!r} in training.tasks; known tasks: {', '.join(TASKS)}")
    return TASKS[name]()


def build_tasks(weights: dict[str, float]) -> list[tuple[Task, float]]:
    """`training.tasks` ({name: weight}) -> [(task, weight)], in the config's order."""
    if not weights:
        raise CrossfedError("training.tasks is empty: at least one pre-training task is needed")
    return [(get_task(name), float(weight)) for name, weight in weights.items()]


def pretraining_loss(model, tasks: list[tuple[Task, float]], features: torch.Tensor, types: torch.Tensor,
                     mask: torch.Tensor, experiment: str, generator: torch.Generator | None = None, *,
                     sync: bool = True) -> tuple[torch.Tensor, dict]:
    """Weighted sum of the tasks' losses on one batch, and metrics `<task>/<metric>` plus `loss`.

    sync=False keeps the metrics as 0-dim device tensors (no host sync, for tight training loops);
    sync=True returns floats. `model` may be a DeepSpeed engine or DDP wrapper: tasks call the
    underlying module's `encode` and heads.
    """
    model = getattr(model, "module", model)
    total = 0.0
    metrics: dict[str, torch.Tensor] = {}
    for task, weight in tasks:
        loss, task_metrics = task.loss_terms(model, features, types, mask, experiment, generator)
        total = total + weight * loss
        metrics.update({f"{task.name}/{key}": value for key, value in task_metrics.items()})
    metrics["loss"] = total.detach()
    return total, to_floats(metrics) if sync else metrics
