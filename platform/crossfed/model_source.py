"""Where a fine-tuning starts from: `crossfed finetune -c REFERENCE` resolved to a model state.

A reference is one of
- `none` (or nothing): train from scratch;
- a file: a state dict (.npz from a pre-training run folder, or a torch .pt/.pth);
- a pre-training run id (or run name): that run's model for the experiment being fine-tuned;
- a model folder (`crossfed.serving.mlflow_model`: a client's exported model at its site);
- `runs:/RUN_ID/PATH`: an artifact file, or a model as a pre-training run logs it (`runs:/RUN_ID/model`);
- `models:/NAME/VERSION` or `models:/NAME@ALIAS`: a registered version of a pre-trained model.

A pre-training run logs its MLflow model `model`, whose artifacts are `state.npz` (the global shared
parameters) and `crossfed.json` (the model settings, and per experiment, as `site_models`, the folder of its
client's full model - shared parameters plus its own adapter - at the client's site; private parameters are
never uploaded). From a run or a registered version, fine-tuning experiment E takes E's client model where
that folder is readable (at E's site, or on one machine), else the global state when it holds E's adapter
(a shared adapter, the baselines), else it says where E's model is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossfed.config import RunConfig
from crossfed.errors import CrossfedError

MODEL_FOLDER = "model"  # crossfed.federation.rounds.FINAL_MODEL_ARTIFACT, named here to keep Ray out
GLOBAL_STATE = "artifacts/state.npz"  # in a model folder: the parameters it holds
SIZE_KEYS = ("dim", "depth", "heads", "mlp_ratio")  # what decides parameter shapes (dropout does not)


@dataclass
class ModelSource:
    """A resolved `-c`: the state to start from (None: from scratch) and how the run records it."""

    reference: str  # as recorded: "none", an absolute path, a run id, runs:/…, models:/NAME/VERSION
    state: dict[str, np.ndarray] | None = None
    run_id: str | None = None  # the pre-training run, when known
    file: str | None = None  # the file within the model folder that was loaded
    settings: dict | None = None  # the model settings it was trained with (crossfed.json), when known

    @property
    def from_scratch(self) -> bool:
        return self.state is None


def resolve_model_source(reference: str | None, experiment: str) -> ModelSource:
    """The model `reference` names, for fine-tuning `experiment`; MLflow references are looked up in the
    current tracking store (`mlflow.set_tracking_uri`). Errors are one line naming the reference."""
    if reference is None or reference.strip().lower() in ("", "none"):
        return ModelSource("none")
    if reference.startswith("models:/"):
        return _from_registry(reference, experiment)
    if reference.startswith("runs:/"):
        return _from_run_artifact(reference, experiment)
    path = Path(reference).expanduser()
    if path.is_file():
        return ModelSource(str(path.resolve()), state=read_state_file(path), file=str(path.resolve()))
    if path.is_dir():
        return _from_folder(path, experiment, str(path.resolve()))
    return _from_run(reference, experiment)


def read_state_file(path: Path, where: str | None = None) -> dict[str, np.ndarray]:
    """A state dict from .npz or a torch file, as numpy arrays (`module.`/`model.` prefixes dropped);
    errors name `where` (default: the path)."""
    where = where or str(path)
    try:
        if path.suffix == ".npz":
            with np.load(path) as arrays:
                state = {name: arrays[name] for name in arrays.files}
        else:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CrossfedError(f"{where}: not a readable model state ({type(err).__name__}: {first_line})") from None
    if not isinstance(state, dict):
        raise CrossfedError(f"{where}: expected a mapping of parameter names to tensors")
    return {name.removeprefix("module.").removeprefix("model."): np.asarray(value) for name, value in state.items()}


def _from_folder(folder: Path, experiment: str, reference: str, run_id: str | None = None) -> ModelSource:
    """A model folder (see the module's docstring): the experiment's own model at its site when readable
    here, else the folder's state."""
    from crossfed.serving.mlflow_model import MODEL_INFO, adapters_held, is_model_folder, read_model_folder

    if not (folder / "artifacts" / MODEL_INFO).is_file():
        raise CrossfedError(f"{reference}: no artifacts/{MODEL_INFO} in the model folder (is it a crossfed model?)")
    state, info = read_model_folder(folder)
    at_site = info.get("site_models", {}).get(experiment)
    if at_site and _readable(at_site, is_model_folder):
        site_state, site_info = read_model_folder(at_site)
        return ModelSource(reference, state=site_state, run_id=run_id, file=at_site, settings=site_info["model"])
    if at_site and not adapters_held(state) & {experiment, "common"}:
        raise CrossfedError(f"{reference}: {experiment}'s model keeps its adapter private at its site ({at_site}, "
                            f"not here): fine-tune there, or from the shared parameters only with -c "
                            f"{_global_state_reference(reference, run_id)}")
    return ModelSource(reference, state=state, run_id=run_id, file=GLOBAL_STATE, settings=info["model"])


def _readable(location: str, is_model_folder) -> bool:
    """Whether a site's model folder can be read from here (another site's storage may not even answer)."""
    try:
        return is_model_folder(location)
    except Exception:  # noqa: BLE001 - unreachable storage, missing credentials: not readable here
        return False


def _global_state_reference(reference: str, run_id: str | None) -> str:
    return f"runs:/{run_id}/{MODEL_FOLDER}/{GLOBAL_STATE}" if run_id else f"{reference}/{GLOBAL_STATE}"


def _from_model_folder_uri(folder_uri: str, experiment: str, reference: str, run_id: str | None) -> ModelSource:
    """Download the model folder (its global state and crossfed.json) and resolve it."""
    return _from_folder(_download(folder_uri), experiment, reference, run_id)


def _check_store(reference: str) -> None:
    """An embedded SQLite store that does not exist holds no run: say so, rather than create it by asking."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise CrossfedError(f"-c {reference}: {'not a file, and ' if '/' not in reference[:8] else ''}"
                            f"no MLflow store at {uri} to look it up in (tracking.uri names the store)")


def _download(uri: str) -> Path:
    import mlflow

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except (mlflow.exceptions.MlflowException, OSError) as err:
        raise CrossfedError(f"{uri}: cannot download it from {mlflow.get_tracking_uri()} "
                            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def _from_registry(reference: str, experiment: str) -> ModelSource:
    import mlflow

    _check_store(reference)
    match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([\w-]+))", reference)
    if match is None:
        raise CrossfedError(f"-c {reference}: expected models:/NAME/VERSION or models:/NAME@ALIAS")
    name, number, alias = match.groups()
    client = mlflow.MlflowClient()
    try:
        version = (client.get_model_version(name, number) if number else
                   client.get_model_version_by_alias(name, alias))
    except mlflow.exceptions.MlflowException:
        raise CrossfedError(f"-c {reference}: no such registered model version in {mlflow.get_tracking_uri()}") from None
    pinned = f"models:/{name}/{version.version}"  # an alias moves; the run records what it pointed at
    return _from_model_folder_uri(version.source, experiment, pinned, version.run_id)


def _from_run_artifact(reference: str, experiment: str) -> ModelSource:
    _check_store(reference)
    match = re.fullmatch(r"runs:/([0-9a-f]{32})(?:/(.*))?", reference.rstrip("/"))
    if match is None:
        raise CrossfedError(f"-c {reference}: expected runs:/RUN_ID/PATH")
    run_id, artifact = match.group(1), match.group(2) or MODEL_FOLDER
    local = _download(f"runs:/{run_id}/{artifact}")
    if local.is_dir():
        return _from_folder(local, experiment, reference, run_id)
    return ModelSource(reference, state=read_state_file(local, reference), run_id=run_id, file=artifact)


def _from_run(reference: str, experiment: str) -> ModelSource:
    """A pre-training run by id (or name): its model for `experiment`."""
    import mlflow

    from crossfed import tracking

    _check_store(reference)
    try:
        run = tracking.find_run(reference)
    except CrossfedError:
        raise CrossfedError(f"-c {reference}: no such file, and no MLflow run with that id or name in "
                            f"{mlflow.get_tracking_uri()} (expected a file, a run id, runs:/… or models:/…)") from None
    run_id = run.info.run_id
    if not mlflow.MlflowClient().list_artifacts(run_id, MODEL_FOLDER):
        raise CrossfedError(f"-c {reference}: run {run_id} ({run.info.run_name}) logged no model "
                            "(not a finished pre-training run?)")
    return _from_model_folder_uri(f"runs:/{run_id}/{MODEL_FOLDER}", experiment, run_id, run_id)


def check_model_settings(source: ModelSource, config: RunConfig) -> None:
    """A model of other sizes than the config's is refused in one line that names both presets."""
    from crossfed.config.model import PRESETS, model_sizes

    if source.state is None:
        return
    wanted = model_sizes(config.model)
    if source.settings is not None:
        theirs = _sizes_of_settings(source.settings)
        their_preset = source.settings.get("preset", "?")
    else:
        theirs = _sizes_of_state(source.state)
        their_preset = next((name for name, sizes in PRESETS.items()
                             if all(sizes[k] == theirs.get(k, sizes[k]) for k in ("dim", "depth"))), None)
    different = {key: (theirs[key], wanted[key]) for key in SIZE_KEYS if key in theirs and theirs[key] != wanted[key]}
    if different:
        what = ", ".join(f"{key} {mine} vs {yours}" for key, (mine, yours) in different.items())
        model = f"a '{their_preset}' model" if their_preset else "a model of no preset"
        raise CrossfedError(f"{source.reference} is {model}, the config's model.preset is '{config.model.preset}' "
                            f"({what}); fine-tune it with --set model.preset={their_preset or '...'} "
                            "or the settings it was pre-trained with")


def _sizes_of_settings(settings: dict) -> dict:
    from crossfed.config.model import ModelConfig, model_sizes

    return model_sizes(ModelConfig(**settings))


def _sizes_of_state(state: dict[str, np.ndarray]) -> dict:
    """dim and depth read off the backbone's parameters (all a bare file can tell)."""
    sizes = {}
    if "backbone.norm.weight" in state:
        sizes["dim"] = int(state["backbone.norm.weight"].shape[0])
    blocks = {int(m.group(1)) for name in state if (m := re.match(r"backbone\.blocks\.(\d+)\.", name))}
    if blocks:
        sizes["depth"] = max(blocks) + 1
    return sizes
