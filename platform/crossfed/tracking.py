"""MLflow tracking: where runs go, what each run records, the model registry.

Every run records the full configuration (dotted params and `config.yaml`), the software versions,
the mode, a fingerprint of each dataset's file contents (which data trained the model), a one-paragraph
description (`mlflow.note.content`), the crossfed version (`crossfed.version`) and, when crossfed runs
from a git checkout, its commit (`mlflow.source.git.commit`, also `crossfed.git_commit`). Fingerprints
are computed where the data is (`data.records.dataset_records`, called by the data check in each experiment's
client's actor, on its node group: `federation.rounds.check_data_at_its_site`) and handed to the run as tags: the process
that logs never opens an experiment's data.
Imported only by commands that log, so importing mlflow at the top costs `crossfed --help` nothing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from crossfed.config import RunConfig, TrackingConfig
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


def fingerprint_tags(records: dict[str, dict]) -> dict[str, str]:
    """The tags `crossfed.data.<dataset key>` = fingerprint of `dataset_records`."""
    return {f"crossfed.data.{key}": record["digest"] for key, record in records.items()}


class RootFilesSource(mlflow.data.dataset_source.DatasetSource):
    """Where a dataset's events are: its ROOT files' URIs (they stay there; MLflow records only where)."""

    def __init__(self, uris: list[str]):
        self.uris = [uri if "://" in uri else Path(uri).resolve().as_uri() for uri in uris]

    @staticmethod
    def _get_source_type() -> str:
        return "root_files"

    def load(self, **kwargs):
        raise NotImplementedError("read the events with crossfed.data.load_dataset, where they are")

    @staticmethod
    def _can_resolve(raw_source) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source):
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"uris": self.uris}

    @classmethod
    def from_dict(cls, source_dict: dict):
        return cls(source_dict["uris"])


class EventDataset(mlflow.data.dataset.Dataset):
    """A crossfed dataset as MLflow records it (`mlflow.log_input`): name, fingerprint as digest, the files
    as source, the common event representation as schema, and schema/selection/event counts as profile."""

    def __init__(self, name: str, record: dict):
        self.record = record
        super().__init__(RootFilesSource(record["files"]), name=name, digest=record["digest"])

    def _compute_digest(self) -> str:
        return self.record["digest"]

    @property
    def profile(self) -> dict:
        return {"data_schema": self.record["schema"], "selection": self.record["selection"] or "none",
                "max_events": self.record["max_events"], "files": len(self.record["files"]),
                "events_in_files": self.record["entries"]}

    @property
    def schema(self):
        from crossfed.serving.mlflow_model import event_schema

        return event_schema()

    def to_dict(self) -> dict:
        return {**super().to_dict(), "schema": json.dumps(self.schema.to_dict()),
                "profile": json.dumps(self.profile)}


def log_datasets(records: dict[str, dict], run_id: str | None = None,
                 client: mlflow.MlflowClient | None = None) -> None:
    """Each dataset of `dataset_records` as an input of run `run_id` (default the active run), named
    `<experiment>.<part>` with context `pretrain`, `finetune.signal` or `finetune.background`: the UI's
    Datasets column. Only the record travels; the events stay at their site."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    client = client or mlflow.MlflowClient()
    run_id = run_id or mlflow.active_run().info.run_id
    for key, record in records.items():
        entity = Dataset(**EventDataset(key, record).to_dict())
        context = InputTag(MLFLOW_DATASET_CONTEXT, key.split(".", 1)[1])
        for attempt in range(3):
            try:
                client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[context])])
                break
            except MlflowException as err:
                # Runs logging the same dataset at once (a study's concurrent pre-trainings) race in MLflow's
                # SQL store: it looks the dataset up, then inserts it. The loser retries, and finds it.
                if "IntegrityError" not in str(err) or attempt == 2:
                    raise


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
    as the data fingerprints (`fingerprint_tags`) reported from where the data is. Opens no data.
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


def register_model(run_id: str, artifact_path: str, name: str, *, alias: str | None = None) -> str:
    """Register the MLflow model the run logged as `artifact_path` (`crossfed.serving.mlflow_model.log_model`)
    as a new version of model `name`; its version. The version is tagged with how the model was trained
    (`model_version_tags`), described by its model card (`model_card`), and given `alias` if any (a sweep's
    `champion`)."""
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    logged = [client.get_logged_model(output.model_id) for output in (run.outputs.model_outputs if run.outputs else [])]
    named = [model for model in logged if model.name == artifact_path]
    # the newest: a run resumed after it finished logs its final model again
    model_id = max(named, key=lambda model: model.creation_timestamp).model_id if named else None
    if model_id is None:
        raise CrossfedError(f"run {run_id} logged no model {artifact_path!r} to register as model {name!r}")
    with contextlib.suppress(mlflow.exceptions.MlflowException):
        client.create_registered_model(name)  # already registered: add a version to it
    version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id,
                                          tags=model_version_tags(run), description=model_card(run))
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


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


def model_card(run: mlflow.entities.Run) -> str:
    """A registered version's description, from its run: what it was trained on (experiments, data
    fingerprints and events), how (strategy, rounds, DP ε), its results, and its device-hours and energy;
    "not measured" where the run holds no figure (never a 0 for a missing one)."""
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    if tags.get("crossfed.kind") == "finetune":
        lines = _classifier_card(tags, params, metrics)
    else:
        lines = _foundation_card(run.info.run_id, tags, params, metrics)
    datasets = {d.dataset.name: d for d in (run.inputs.dataset_inputs if run.inputs else [])}
    data = []
    for tag, digest in sorted(tags.items()):
        if tag.startswith("crossfed.data."):
            key = tag.removeprefix("crossfed.data.")
            profile = json.loads(datasets[key].dataset.profile or "{}") if key in datasets else {}
            events = profile.get("events_in_files")
            selection = profile.get("selection")
            data.append(f"{key} (fingerprint {digest}" + (f", {events:,} events in its files" if events is not None else "")
                        + (f", selection {selection}" if selection and selection != "none" else "") + ")")
    lines.append("Data: " + ("; ".join(data) if data else "not recorded") + ".")
    hours = [float(v) for k, v in params.items() if k.startswith("client.") and k.endswith(".device_hours")]
    energy = {}
    for key, value in params.items():
        if key.startswith("client.") and "energy" in key:
            what = key.split(".", 2)[2]
            energy[what] = energy.get(what, 0.0) + float(value)
    lines.append("Compute: " + (f"{sum(hours):.4g} device-hours" if hours else "device-hours not measured") + "; "
                 + ("energy " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(energy.items())) if energy
                    else "energy not measured") + ".")
    lines.append(f"Run: {run.info.run_name} ({run.info.run_id}); its config is config.yaml in the run.")
    return "\n\n".join(lines)


def _foundation_card(run_id: str, tags: dict, params: dict, metrics: dict) -> list[str]:
    method = tags.get("crossfed.mode", "unknown")
    experiments = tags.get("crossfed.experiments", "?")
    rounds = tags.get("crossfed.rounds", params.get("federation.rounds", "?"))
    if method == "federated":
        how = f"federated pre-training, strategy {params.get('federation.strategy.name', '?')}, {rounds} rounds, " \
              f"sharing {params.get('federation.shared', '?')}"
        if params.get("federation.privacy.enabled") == "True":
            epsilon = metrics.get("privacy/epsilon")
            how += (f", differentially private: ε = {epsilon:.3g}" if epsilon is not None else ", DP: ε not recorded") \
                + f" at δ = {params.get('federation.privacy.delta', '?')}"
        else:
            how += ", no differential privacy"
    else:
        how = f"{method} pre-training (baseline), {rounds} rounds"
    lines = [f"crossfed foundation model ({params.get('model.preset', '?')} preset) pre-trained on {experiments}: {how}.",
             "Use: mlflow.pyfunc.load_model(URI).predict({features, types, mask}, params={'experiment': E}) gives "
             "event embeddings; an experiment's private input adapter is only in its site's model."]
    events = _events_processed(run_id, metrics)
    lines.append("Events processed in training: " + (", ".join(f"{e} {n:,.0f}" for e, n in sorted(events.items()))
                                                      if events else "not recorded (none reported by the clients)") + ".")
    results = {k: v for k, v in sorted(metrics.items()) if k.startswith("global/val_")}
    lines.append("Results: pre-training validation, last round: "
                 + (", ".join(f"{k.removeprefix('global/')} {v:.4g}" for k, v in results.items()) if results
                    else "not recorded") + "; downstream: not measured for this version (a study reports them).")
    return lines


def _events_processed(run_id: str, metrics: dict) -> dict[str, float]:
    """Training events processed per experiment over all rounds, from the clients' round records."""
    client = mlflow.MlflowClient()
    events: dict[str, float] = {}
    for key in metrics:
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == "client" and parts[2] == "train_events_processed":
            events[parts[3]] = events.get(parts[3], 0.0) + sum(m.value for m in client.get_metric_history(run_id, key))
    return events


def _classifier_card(tags: dict, params: dict, metrics: dict) -> list[str]:
    experiment = tags.get("crossfed.experiment", "?")
    results = ", ".join(f"{name} {metrics[key]:.4g}" for key, name in
                        (("auc", "AUC"), ("rejection_at_eps_s_0.3", "1/ε_B at ε_S=0.3"),
                         ("rejection_at_eps_s_0.5", "1/ε_B at ε_S=0.5"), ("accuracy", "accuracy")) if key in metrics)
    return [f"crossfed signal-vs-background classifier of {experiment}, fine-tuned on "
            f"{tags.get('crossfed.labelled_events', '?')} labelled events ({params.get('finetune.mode', '?')} mode, "
            f"{params.get('finetune.epochs', '?')} epochs, seed {params.get('seed', '?')}) from "
            f"{tags.get('crossfed.source_model', '?')}.",
            "Use: crossfed score URI FILE --schema SCHEMA, or mlflow.pyfunc.load_model(URI).predict({features, types, "
            "mask}) gives each event's signal probability.",
            f"Results on its held-out test split ({params.get('test_events', '?')} events): {results or 'not recorded'}."]


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
                 parent_run_id: str | None = None, tags: dict[str, str] | None = None,
                 datasets: dict[str, dict] | None = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one fine-tuning, opened before it trains: the config (finetune.lr, .epochs, .mode,
    seed), the labelled-event count, and the source model (`crossfed.model_source.ModelSource`) as tag
    `crossfed.source_model` and param `source_model` - a path, run id, runs:/ or models:/NAME/VERSION,
    or `none`; `crossfed.source_run` links the pre-training run when known. Log into it with
    `log_finetune_epoch`, `log_finetune_result` and `log_classifier`. `datasets`: the labelled data's
    records (`dataset_records`), logged as the run's inputs and fingerprint tags. A failure ends it FAILED with
    the error as description."""
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
    run_tags.update(fingerprint_tags(datasets or {}))
    with start_run(config, run_name(config, f"finetune-{experiment}-{labelled_events}"), mode="finetune",
                   parent_run_id=parent_run_id, nested_tags=run_tags | (tags or {}), description=description) as run:
        log_datasets(datasets or {})
        params = {"experiment": experiment, "labelled_events": labelled_events, "source_model": source.reference}
        if source.file:
            params["source_file"] = source.file
        mlflow.log_params(params)
        try:
            yield run
        except BaseException as err:
            mlflow.set_tag("mlflow.note.content", f"failed: {one_line_reason(err)}")
            raise


def classifier_model_name(config: RunConfig, experiment: str) -> str:
    """The registry name of the config's fine-tuned classifiers of `experiment`."""
    return f"{registered_model_name(config)}-{experiment}-classifier"


def log_classifier(config: RunConfig, experiment: str, state: dict[str, np.ndarray], labelled_events: int) -> str:
    """The fine-tuned classifier as the active run's MLflow model `model`, registered as a version of
    `classifier_model_name` with its model card; the version."""
    from crossfed.serving import mlflow_model

    info = mlflow_model.model_info("classifier", config, [experiment], labelled_events=labelled_events)
    mlflow_model.log_model(state, info, "model")
    version = register_model(mlflow.active_run().info.run_id, "model", classifier_model_name(config, experiment))
    mlflow.set_tag("crossfed.model_version", version)
    return version


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
