"""One pre-training's run configuration, and one fine-tuning job: a pre-trained model (or none) of one
experiment fine-tuned on every task, ladder point and fine-tuning seed, run as a Ray task at that
experiment's site (its node group) on its own labelled events.
"""

from __future__ import annotations

import numpy as np

from crossfed.config import RunConfig, config_from_dict
from crossfed.study import plan
from crossfed.study.config import StudyConfig
from crossfed.study.samples import ExperimentData

# Signal efficiencies at which each fine-tuning's background rejection is kept (the ROC plot's points).
EFFICIENCY_GRID = np.round(np.arange(0.05, 1.0, 0.025), 3)


def pretrain_config(study: StudyConfig, data: dict[str, ExperimentData], setup: plan.Setup, output_dir: str,
                    tracking_uri: str) -> RunConfig:
    """The run configuration of one pre-training: its experiments' pools cut to the setup's sizes, the study's
    model, trainer and federation, and the equal-budget number of steps."""
    experiments = {
        name: {"schema": data[name].schema, "cluster": data[name].cluster.model_dump(),
               "pretrain": {**data[name].pretrain.model_dump(), "max_events": events}}
        for name, events in setup.events
    }
    raw = {
        "name": f"{study.name}-{setup.method}",
        "seed": setup.seed,
        "output_dir": output_dir,
        "experiments": experiments,
        "data": study.data.model_dump(),
        "model": study.model.model_dump(),
        "training": {**study.training.model_dump(), "steps": plan.steps(study, setup)},
        "federation": {**study.federation.model_dump(),
                       "min_clients": len(experiments) if setup.method == "federated" else 1},
        "tracking": {**study.tracking.model_dump(), "uri": tracking_uri},
    }
    return config_from_dict(raw, source=f"the study's configuration of {setup.key()}")


def finetune_config(study: StudyConfig, data: dict[str, ExperimentData], experiment: str, method: str) -> RunConfig:
    """The configuration fine-tuning reads: the labelled split, the model, the fine-tuning settings. Scratch
    trains the whole network (there is no pre-trained encoder to freeze or to slow down)."""
    mode = "full" if method == "scratch" else study.finetune.mode
    raw = {
        "name": f"{study.name}-finetune",
        "seed": study.seed,
        "experiments": {experiment: {"schema": data[experiment].schema}},
        "data": {**study.data.model_dump(), "validation_fraction": study.labelled.validation_fraction,
                 "test_fraction": study.labelled.test_fraction, "split_seed": study.labelled.split_seed},
        "model": study.model.model_dump(),
        "training": study.training.model_dump(),
        "finetune": {**study.finetune.model_dump(), "mode": mode},
    }
    return config_from_dict(raw, source=f"the study's fine-tuning configuration of {experiment}")


def labelled_task_events(config: RunConfig, experiment: str, data: ExperimentData, tasks: dict[str, tuple[str, str]]):
    """{task: EventBatch of its signal (label 1) then background (label 0) events}, reading each process
    once; and the per-process events themselves."""
    from crossfed.data import EventBatch, load_dataset

    processes = {p: load_dataset(data.labelled[p], data.schema, config.data)
                 for p in dict.fromkeys(p for pair in tasks.values() for p in pair)}
    return {task: EventBatch.concat([processes[signal].with_labels(1), processes[background].with_labels(0)])
            for task, (signal, background) in tasks.items()}, processes


def finetune_job(config: RunConfig, experiment: str, state: dict | None, data: ExperimentData,
                 tasks: dict[str, tuple[str, str]], ladder: list[int], seeds: list[int]) -> dict:
    """Fine-tune `state` (None: from scratch) on every task × ladder point × seed; per (task, ladder point)
    the per-run metrics, the runs' mean DeLong components and their background rejection on a grid."""
    import torch

    from crossfed.train.finetune import encode_events, finetune

    torch.set_num_threads(1)  # one core per job; Ray runs as many jobs as there are CPUs
    per_task, processes = labelled_task_events(config, experiment, data, tasks)
    encoded = {}
    if config.finetune.mode == "frozen":  # the encoder never changes: every event is encoded once
        encoded = {p: encode_events(config, experiment, state, events) for p, events in processes.items()}
    results = {}
    for task, (signal, background) in tasks.items():
        features = np.concatenate([encoded[signal], encoded[background]]) if encoded else None
        for n in ladder:
            runs = [finetune(config, experiment, n, state, data=per_task[task], seed=seed, features=features)
                    for seed in seeds]
            results[(task, n)] = summarise(runs)
    return results


def summarise(runs: list) -> dict[str, np.ndarray]:
    """What the study keeps of F fine-tunings scored on one test set."""
    from crossfed.study.statistics import delong_components

    components = [delong_components(run.labels, run.scores) for run in runs]
    return {
        "auc": np.array([c[0] for c in components]),
        "rejection_03": np.array([run["rejection_at_0.3"] for run in runs]),
        "rejection_05": np.array([run["rejection_at_0.5"] for run in runs]),
        "accuracy": np.array([run["accuracy"] for run in runs]),
        "v10": np.mean([c[1] for c in components], axis=0).astype(np.float32),
        "v01": np.mean([c[2] for c in components], axis=0).astype(np.float32),
        "rejection_grid": np.stack([_rejection_on_grid(run.fpr, run.tpr) for run in runs]).astype(np.float32),
        "test_events": np.array([int((runs[0].labels == 1).sum()), int((runs[0].labels == 0).sum())]),
    }


def _rejection_on_grid(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """1/ε_B at each grid efficiency (the first ROC point reaching it); inf where no background passes."""
    background = fpr[np.minimum(np.searchsorted(tpr, EFFICIENCY_GRID, side="left"), len(fpr) - 1)]
    with np.errstate(divide="ignore"):
        return np.where(background > 0, 1.0 / np.maximum(background, 1e-300), np.inf)
