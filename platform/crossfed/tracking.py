"""MLflow tracking: where runs go, what each run records, the model registry.

Every run records the full configuration (dotted params and `config.yaml`), the software versions,
the mode, and a fingerprint of each dataset's file contents — which data trained the model. Fingerprints
are computed where the data is (`dataset_fingerprints`, called by the data check on each experiment's
client's own nodes, `federation.rounds.check_data_at_its_site`) and handed to the run as tags: the process that logs never opens an experiment's data.
Imported only by commands that log, so importing mlflow at the top costs `crossfed --help` nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
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
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run in `tracking.experiment` holding the config, versions and mode.

    `parent_run_id` nests the run under another (sweeps, reports); `nested_tags` are extra tags, such
    as the data fingerprints (`dataset_fingerprints`) reported from where the data is. Opens no data.
    """
    mlflow.set_tracking_uri(tracking_uri(config.tracking))
    mlflow.set_experiment(config.tracking.experiment)
    tags = {f"crossfed.version.{k}": v for k, v in software_versions().items()}
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
    """
    client = mlflow.MlflowClient()
    if not client.list_artifacts(run_id, artifact_path):
        raise CrossfedError(f"run {run_id} has no artifacts under {artifact_path!r} to register as model {name!r}")
    with contextlib.suppress(mlflow.exceptions.MlflowException):
        client.create_registered_model(name)  # already registered: add a version to it
    source = f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"
    return str(client.create_model_version(name, source=source, run_id=run_id).version)


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
