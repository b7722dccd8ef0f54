"""MLflow tracking: where runs go, what each run records, the model registry.

Every run records the full configuration (dotted params and `config.yaml`), the software versions,
the mode, a fingerprint of each dataset's file contents (which data trained the model), a one-paragraph
description (`mlflow.note.content`), the crossfed version (`crossfed.version`) and, when crossfed runs
from a git checkout, its commit (`mlflow.source.git.commit`, also `crossfed.git_commit`). Fingerprints
are computed where the data is (`dataset_fingerprints`, called by the data check on each experiment's
client's own nodes, `federation.rounds.check_data_at_its_site`) and handed to the run as tags: the process
that logs never opens an experiment's data.
Imported only by commands that log, so importing mlflow at the top costs `crossfed --help` nothing.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from crossfed.config import DatasetConfig, RunConfig, TrackingConfig
from crossfed.errors import CrossfedError

SOFTWARE = ["crossfed", "torch", "ray", "deepspeed", "mlflow", "uproot"]


# The user's MLFLOW_TRACKING_URI, read once at import: mlflow.set_tracking_uri() writes the variable into this
# process's environment, which would otherwise carry one run's store over to the next config.
ENVIRONMENT_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI") or None


def tracking_uri(cfg: TrackingConfig | None = None) -> str:
    """The one rule for the MLflow store: the config's `tracking.uri`, else $MLFLOW_TRACKING_URI (as the
    process started with it; the helm chart sets it in every Ray pod), else SQLite ./mlflow.db. A relative
    SQLite path (`sqlite:///mlflow.db`) is made absolute here, so that it names one store wherever the URI
    is used next (a sweep's trials run in folders of their own)."""
    uri = (cfg.uri if cfg is not None else None) or ENVIRONMENT_TRACKING_URI or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_absolute():
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}; lists as JSON; values cut to MLflow's length limit."""
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            flat[dotted] = text if len(text) <= MAX_PARAM_VAL_LENGTH else text[: MAX_PARAM_VAL_LENGTH - 3] + "..."
    return flat


def software_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for package in SOFTWARE:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def registered_model_name(config: RunConfig) -> str:
    """`tracking.registered_model`, else the config's name: runs of different configs (a test's, the demo's)
    never add versions to one another's model."""
    return config.tracking.registered_model or config.name.replace("/", "-")  # '/' would split models:/ URIs


def run_name(config: RunConfig, what: str) -> str:
    """`<config name>-<what>-<MMDD-HHMMSS>`: runs of one config and mode told apart by when they started."""
    return f"{config.name[:80]}-{what}-{time.strftime('%m%d-%H%M%S')}"


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the git checkout crossfed runs from (with `-dirty` when it has uncommitted changes);
    None for an installed package."""
    import crossfed

    folder = Path(crossfed.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if changed else commit or None


def source_tags() -> dict[str, str]:
    """The crossfed version, the git commit when run from a checkout, and the command line as the run's
    source (MLflow would show the console script's path, or nothing)."""
    from crossfed import __version__

    tags = {"crossfed.version": __version__}
    if commit := git_commit():
        tags["crossfed.git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    entry = Path(sys.argv[0])
    if entry.name == "crossfed" or entry.parent.name == "crossfed":  # the console script, or python -m crossfed
        tags["mlflow.source.name"] = shlex.join(["crossfed", *sys.argv[1:]])[:500]
    return tags


def run_tags(description: str) -> dict[str, str]:
    """What every crossfed run carries: the software versions, the source (`source_tags`), who started it
    and its description, which the MLflow UI shows on the run's page (`MlflowClient.create_run`, unlike
    `mlflow.start_run`, adds no user of its own)."""
    import getpass

    tags = {f"crossfed.version.{k}": v for k, v in software_versions().items()}
    tags.update(source_tags())
    with contextlib.suppress(Exception):  # a container's user may have no name
        tags["mlflow.user"] = getpass.getuser()
    tags["mlflow.note.content"] = description
    return tags


def dataset_files(dataset: DatasetConfig, where: str) -> list[str]:
    """The dataset's files as the reader expands them (globs, URLs kept), sorted; errors name `where`."""
    from crossfed.data.reader import expand_files

    try:
        return sorted(set(expand_files(dataset.files)))
    except CrossfedError as err:
        raise CrossfedError(f"{where}: {err}") from None


def fingerprint(files: list[str]) -> str:
    """First 16 hex digits of a SHA-256 over the files' fingerprints in path order: the tensor cache's
    (`crossfed.data.cache.file_fingerprint`: local files by content, remote ROOT files by UUID and size)."""
    from crossfed.data.cache import file_fingerprint

    digest = hashlib.sha256()
    for path in files:
        digest.update(file_fingerprint(path).encode())
        digest.update(b"\0file\0")
    return digest.hexdigest()[:16]


def dataset_fingerprints(config: RunConfig, experiments: list[str] | None = None) -> dict[str, str]:
    """Tag name -> fingerprint, one per dataset of `experiments` (default all):
    crossfed.data.<experiment>.pretrain / .finetune.signal / .finetune.background.

    Reads the files: call it where the data is (a federation's clients do, at their sites)."""
    datasets = {}
    for name, experiment in config.experiments.items():
        if experiments is not None and name not in experiments:
            continue
        datasets[f"{name}.pretrain"] = experiment.pretrain
        if experiment.finetune:
            datasets[f"{name}.finetune.signal"] = experiment.finetune.signal
            datasets[f"{name}.finetune.background"] = experiment.finetune.background
    return {
        f"crossfed.data.{key}": fingerprint(dataset_files(dataset, f"experiments.{key}"))
        for key, dataset in datasets.items()
        if dataset is not None
    }


@contextlib.contextmanager
def start_run(
    config: RunConfig,
    run_name: str,
    *,
    mode: str | None = None,
    parent_run_id: str | None = None,
    nested_tags: dict[str, str] | None = None,
    description: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run in `tracking.experiment` holding the config, versions, source, mode, data fingerprints
    and `description` (default: the mode and the config's name).

    `parent_run_id` nests the run under another (sweeps, reports); `nested_tags` are extra tags, such
    as the data fingerprints (`dataset_fingerprints`) reported from where the data is. Opens no data.
    """
    mlflow.set_tracking_uri(tracking_uri(config.tracking))
    mlflow.set_experiment(config.tracking.experiment)
    tags = run_tags(description or f"crossfed {mode or 'run'} of config {config.name!r}")
    if mode:
        tags["crossfed.mode"] = mode
    tags.update(nested_tags or {})
    with mlflow.start_run(run_name=run_name, parent_run_id=parent_run_id, nested=parent_run_id is not None,
                          tags=tags) as run:
        mlflow.log_params(flatten(config.model_dump(mode="json", by_alias=True)))
        mlflow.log_text(config.to_yaml(), "config.yaml")
        yield run


def log_state_dict(state: dict[str, np.ndarray], artifact_path: str) -> str:
    """Save a numpy state dict as `<artifact_path>/state.npz` in the active run; returns that path."""
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "state.npz"
        np.savez(file, **state)
        mlflow.log_artifact(str(file), artifact_path=artifact_path)
    return f"{artifact_path}/state.npz"


def register_model(run_id: str, artifact_path: str, name: str) -> str:
    """Register the run's artifact folder `artifact_path` as a new version of model `name`; its version.

    MLflow 3's `mlflow.register_model` only accepts folders logged as MLflow models (`log_model`);
    a crossfed model is a state dict whose architecture comes from the run's config, so the version is
    created directly with its source pointing at that folder (load it with `np.load(.../state.npz)`).
    The version is tagged with how the model was trained (`model_version_tags`) and described in a line.
    """
    client = mlflow.MlflowClient()
    if not client.list_artifacts(run_id, artifact_path):
        raise CrossfedError(f"run {run_id} has no artifacts under {artifact_path!r} to register as model {name!r}")
    with contextlib.suppress(mlflow.exceptions.MlflowException):
        client.create_registered_model(name)  # already registered: add a version to it
    run = client.get_run(run_id)
    tags = model_version_tags(run)
    description = (f"{tags['method']} pre-training of {tags['experiments']} ({tags['rounds']} rounds, "
                   f"strategy {tags['strategy']}) in run {run.info.run_name} ({run_id})")
    source = f"{run.info.artifact_uri}/{artifact_path}"
    return str(client.create_model_version(name, source=source, run_id=run_id, tags=tags,
                                           description=description).version)


def model_version_tags(run: mlflow.entities.Run) -> dict[str, str]:
    """method, experiments, strategy and rounds of a pre-training run, from its tags and params (the
    run's `crossfed.experiments` and `crossfed.rounds` say what the plan trained; a baseline has no
    strategy)."""
    tags, params = run.data.tags, run.data.params
    method = tags.get("crossfed.mode", "unknown")
    configured = sorted({key.split(".")[1] for key in params if key.startswith("experiments.")})
    return {
        "method": method,
        "experiments": tags.get("crossfed.experiments", ",".join(configured)),
        "strategy": params.get("federation.strategy.name", "unknown") if method == "federated" else "none",
        "rounds": tags.get("crossfed.rounds", params.get("federation.rounds", "unknown")),
    }


def find_run(run_ref: str) -> mlflow.entities.Run:
    """A run by id, or else the newest run with that name, in any experiment of the current store."""
    client = mlflow.MlflowClient()
    if re.fullmatch(r"[0-9a-f]{32}", run_ref):
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            return client.get_run(run_ref)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    quoted = run_ref.replace("'", "\\'")
    runs = client.search_runs(
        experiment_ids, filter_string=f"attributes.run_name = '{quoted}'", order_by=["attributes.start_time DESC"],
        max_results=1,
    ) if experiment_ids else []
    if not runs:
        raise CrossfedError(f"no MLflow run with id or name {run_ref!r} in {mlflow.get_tracking_uri()}")
    return runs[0]


@contextlib.contextmanager
def finetune_run(config: RunConfig, experiment: str, labelled_events: int, source, *,
                 parent_run_id: str | None = None, tags: dict[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one fine-tuning, opened before it trains: the config (finetune.lr, .epochs, .mode,
    seed), the labelled-event count, and the source model (`crossfed.model_source.ModelSource`) as tag
    `crossfed.source_model` and param `source_model` - a path, run id, runs:/ or models:/NAME/VERSION,
    or `none`; `crossfed.source_run` links the pre-training run when known. Log into it with
    `log_finetune_epoch` and `log_finetune_result`. A failure ends it FAILED with the error as description."""
    from crossfed.errors import one_line_reason

    settings = config.finetune
    start = "from scratch" if source.from_scratch else f"from {source.reference}"
    description = (f"Fine-tuning of the {experiment} signal-vs-background classifier on {labelled_events} labelled "
                   f"events ({settings.mode}, {settings.optimizer} lr {settings.lr:g}, {settings.epochs} epochs, "
                   f"seed {config.seed}), {start}; metrics on the held-out test split, ROC in {ROC_ARTIFACT}.")
    run_tags = {"crossfed.kind": "finetune", "crossfed.experiment": experiment,
                "crossfed.labelled_events": str(labelled_events),
                "crossfed.source_model": source.reference}
    if source.run_id:
        run_tags["crossfed.source_run"] = source.run_id
    with start_run(config, run_name(config, f"finetune-{experiment}-{labelled_events}"), mode="finetune",
                   parent_run_id=parent_run_id, nested_tags=run_tags | (tags or {}), description=description) as run:
        params = {"experiment": experiment, "labelled_events": labelled_events, "source_model": source.reference}
        if source.file:
            params["source_file"] = source.file
        mlflow.log_params(params)
        try:
            yield run
        except BaseException as err:
            mlflow.set_tag("mlflow.note.content", f"failed: {one_line_reason(err)}")
            raise


ROC_ARTIFACT = "roc.json"  # a fine-tuning run's ROC curve: {"fpr": [...], "tpr": [...]}


def log_finetune_epoch(epoch: int, losses: dict[str, float]) -> None:
    """Per-epoch losses of the active fine-tuning run, at step = epoch."""
    mlflow.log_metrics(losses, step=epoch)


def log_finetune_result(metrics) -> None:
    """Test-split AUC, background rejections and accuracy (final metrics), the counts as params, and the
    ROC curve as `roc.json` ({"fpr": [...], "tpr": [...]}), into the active run."""
    mlflow.log_metrics({"auc": metrics["auc"], "rejection_at_eps_s_0.3": metrics["rejection_at_0.3"],
                        "rejection_at_eps_s_0.5": metrics["rejection_at_0.5"], "accuracy": metrics["accuracy"],
                        "best_val_loss": metrics["validation_loss"]})
    mlflow.log_params({"test_events": metrics["test_events"], "steps": metrics["steps"]})
    mlflow.log_dict({"fpr": [float(x) for x in metrics.fpr], "tpr": [float(x) for x in metrics.tpr]}, ROC_ARTIFACT)
