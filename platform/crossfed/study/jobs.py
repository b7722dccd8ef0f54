"""One pre-training's run configuration, and one fine-tuning job: a pre-trained model (or none) of one
experiment fine-tuned on every task, ladder point and fine-tuning seed, run as a Ray task at that
experiment's site (its node group) on its own labelled events.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

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


@dataclass
class RunLog:
    """Where a fine-tuning job records itself: its MLflow run (a child of the study's), opened by the job
    when it starts, and under it one run per fine-tuning, opened before that fine-tuning trains.
    `source_model`: the pre-training run id the job's model comes from, or "none" (scratch)."""

    uri: str
    experiment_id: str
    parent_id: str
    name: str  # the job run's name: finetune/<setup>/<experiment>
    study: str
    source_model: str
    source_file: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # every run's: versions, source, the setup's


JOB_KIND, SINGLE_KIND = "finetune", "finetune-single"  # crossfed.kind of a job's run and of each fine-tuning's


def finetune_job(config: RunConfig, experiment: str, state: dict | None, data: ExperimentData,
                 tasks: dict[str, tuple[str, str]], ladder: list[int], seeds: list[int],
                 log: RunLog) -> tuple[str, dict]:
    """Fine-tune `state` (None: from scratch) on every task × ladder point × seed; per (task, ladder point)
    the per-run metrics, the runs' mean DeLong components and their background rejection on a grid.
    Returns the job's run id (left RUNNING: the caller logs the results into it and ends it) and the results;
    on an error the job's runs end FAILED."""
    import torch
    from mlflow import MlflowClient

    from crossfed.train.finetune import encode_events

    torch.set_num_threads(1)  # one core per job; Ray runs as many jobs as there are CPUs
    client = MlflowClient(log.uri)
    job_id = _open_job_run(client, config, experiment, tasks, ladder, seeds, log)
    try:
        per_task, processes = labelled_task_events(config, experiment, data, tasks)
        datasets = task_datasets(experiment, data, tasks, config.data.cache_dir)
        encoded = {}
        if config.finetune.mode == "frozen":  # the encoder never changes: every event is encoded once
            encoded = {p: encode_events(config, experiment, state, events) for p, events in processes.items()}
        results = {}
        for task, (signal, background) in tasks.items():
            features = np.concatenate([encoded[signal], encoded[background]]) if encoded else None
            for n in ladder:
                runs = [_logged_finetune(client, job_id, log, config, experiment, task, n, seed, state,
                                         per_task[task], features, datasets[task]) for seed in seeds]
                results[(task, n)] = summarise(runs)
    except BaseException:
        client.set_terminated(job_id, "FAILED")
        raise
    return job_id, results


def task_datasets(experiment: str, data: ExperimentData, tasks: dict[str, tuple[str, str]],
                  cache_dir: str) -> dict[str, dict]:
    """{task: the records (`data.records.dataset_records`) of its labelled signal and background samples},
    read where the job runs, at the experiment's site; each fine-tuning's run logs its task's as inputs."""
    from crossfed.data.records import dataset_record

    records = {process: dataset_record(data.labelled[process], data.schema,
                                       f"the study's {experiment} {process} sample", cache_dir)
               for process in dict.fromkeys(p for pair in tasks.values() for p in pair)}
    return {task: {f"{experiment}.finetune.signal": records[signal],
                   f"{experiment}.finetune.background": records[background]}
            for task, (signal, background) in tasks.items()}


def _finetune_params(config: RunConfig) -> dict[str, str]:
    """The fine-tuning settings a run records (the ladder is the job's, each run has its own point)."""
    from crossfed.tracking import flatten

    return flatten({"finetune": config.finetune.model_dump(mode="json", exclude={"labelled_events", "checkpoint"})})


def _open_job_run(client, config: RunConfig, experiment: str, tasks: dict, ladder: list[int], seeds: list[int],
                  log: RunLog) -> str:
    from crossfed.study.report import EXPERIMENT, KIND, PARENT

    start = "from scratch" if log.source_model == "none" else f"from pre-training run {log.source_model}"
    description = (f"Study {log.study}: {experiment}'s classifier fine-tuned {start} on {', '.join(tasks)} with "
                   f"{', '.join(map(str, ladder))} labelled events, fine-tuning seeds {', '.join(map(str, seeds))} "
                   f"({config.finetune.mode}); each fine-tuning is a child run, the results of all are in "
                   f"finetune.npz.")
    run = client.create_run(log.experiment_id, run_name=log.name, tags={
        **log.tags, PARENT: log.parent_id, KIND: JOB_KIND, EXPERIMENT: experiment,
        "crossfed.source_model": log.source_model, "mlflow.note.content": description})
    params = {**_finetune_params(config), "experiment": experiment, "tasks": ",".join(tasks),
              "labelled_events": json.dumps(ladder), "seeds": json.dumps(seeds), "source_model": log.source_model}
    if log.source_file:
        params["source_file"] = log.source_file
    _log_params(client, run.info.run_id, params)
    return run.info.run_id


def _log_params(client, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])


def _logged_finetune(client, job_id: str, log: RunLog, config: RunConfig, experiment: str, task: str, n: int,
                     seed: int, state, events, features, datasets: dict[str, dict]):
    """One fine-tuning in its own run, opened before it trains: settings as params, the source model as tag
    and param, its labelled `datasets` as inputs, the per-epoch losses as series (logged with the finished
    run, in one batch: a study runs thousands of these), the test metrics as final values."""
    from mlflow.entities import Metric, Param

    from crossfed.study.report import EXPERIMENT, KIND, PARENT
    from crossfed.tracking import log_datasets
    from crossfed.train.finetune import finetune

    settings = config.finetune
    start = "from scratch" if log.source_model == "none" else f"from pre-training run {log.source_model}"
    description = (f"Study {log.study}: one fine-tuning of {experiment}'s {task} classifier on {n} labelled events "
                   f"({settings.mode}, {settings.optimizer} lr {settings.lr:g}, {settings.epochs} epochs, seed "
                   f"{seed}) {start}; AUC, background rejections and accuracy on the study's shared test set.")
    run_id = client.create_run(log.experiment_id, run_name=f"{log.name}/{task}/{n}/seed{seed}", tags={
        **log.tags, PARENT: job_id, KIND: SINGLE_KIND, EXPERIMENT: experiment, "crossfed.task": task,
        "crossfed.labelled_events": str(n), "crossfed.source_model": log.source_model,
        "mlflow.note.content": description}).info.run_id
    _log_params(client, run_id, {**_finetune_params(config), "experiment": experiment, "task": task,
                                 "labelled_events": n, "seed": seed, "source_model": log.source_model})
    log_datasets(datasets, run_id, client)
    epochs: list[Metric] = []

    def on_epoch(epoch: int, losses: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        epochs.extend(Metric(key, value, now, epoch) for key, value in losses.items())

    try:
        result = finetune(config, experiment, n, state, data=events, seed=seed, features=features, on_epoch=on_epoch)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    now = int(time.time() * 1000)
    final = {"auc": result["auc"], "rejection_at_eps_s_0.3": result["rejection_at_0.3"],
             "rejection_at_eps_s_0.5": result["rejection_at_0.5"], "accuracy": result["accuracy"],
             "best_val_loss": result["validation_loss"]}
    client.log_batch(run_id, metrics=epochs + [Metric(k, float(v), now, 0) for k, v in final.items()],
                     params=[Param("test_events", str(result["test_events"])), Param("steps", str(result["steps"]))])
    client.set_terminated(run_id, "FINISHED")
    return result


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
