"""crossfed models as MLflow models: a pyfunc model folder that MLflow loads, serves and shows a signature of.

A folder holds, as MLflow artifacts, the network's parameters (`artifacts/state.npz`) and `artifacts/
crossfed.json` (`MODEL_INFO`: what kind of model it is, its settings, its experiments); the network is
rebuilt from them when the folder is loaded (`CrossfedModel.load_context`, run by the folder's script
`pyfunc_entry.py`: no pickled object). Kinds:
- `foundation`: a pre-trained model; predict gives each event's pooled embedding, float32 [n, dim];
- `classifier`: a fine-tuned signal-vs-background classifier; predict gives the signal probability, float32 [n].

Input: a dict of arrays in the common event representation (`crossfed.data.events`): `features` float32
[n, N, 6] (pt, eta, phi, energy, charge, btag), `types` int8 [n, N], `mask` bool [n, N]; the parameter
`experiment` picks the input adapter (default: the model's first experiment that has one). A model can
only embed the events of an experiment whose input adapter it holds: a federation's global model keeps
private adapters out (they stay at their sites, in each client's own exported model folder).

    model = mlflow.pyfunc.load_model("models:/crossfed-foundation/1")
    embeddings = model.predict({"features": f, "types": t, "mask": m}, params={"experiment": "cms"})
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np

from crossfed.errors import CrossfedError

STATE = "state.npz"
MODEL_INFO = "crossfed.json"
ENTRY_SCRIPT = Path(__file__).with_name("pyfunc_entry.py")
KINDS = ("foundation", "classifier")
BATCH = 512  # events per forward pass in predict


def model_info(kind: str, config, experiments: list[str], **extra) -> dict:
    """`crossfed.json` of a model trained with run config `config` on `experiments`."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {KINDS}")
    return {"kind": kind, "model": config.model.model_dump(mode="json"),
            "common_adapter": config.federation.common_adapter, "experiments": list(experiments),
            "max_objects": config.data.max_objects, **extra}


def event_schema():
    """Events in the common representation as MLflow named tensors: features, types, mask."""
    from mlflow.types import Schema, TensorSpec

    from crossfed.data.events import FEATURES

    return Schema([TensorSpec(np.dtype(np.float32), (-1, -1, len(FEATURES)), "features"),
                   TensorSpec(np.dtype(np.int8), (-1, -1), "types"),
                   TensorSpec(np.dtype(np.bool_), (-1, -1), "mask")])


def signature(info: dict):
    """Events in (`event_schema`), the embedding or the signal probability out, and the `experiment` parameter."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    inputs = event_schema()
    if info["kind"] == "classifier":
        outputs = Schema([TensorSpec(np.dtype(np.float32), (-1,), "signal_probability")])
    else:
        outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, _dim(info)), "embedding")])
    default = info["experiments"][0] if info["experiments"] else ""
    return ModelSignature(inputs, outputs, ParamSchema([ParamSpec("experiment", "string", default)]))


def _dim(info: dict) -> int:
    from crossfed.config.model import ModelConfig, model_sizes  # not crossfed.model: a client needs no torch here

    return model_sizes(ModelConfig(**info["model"]))["dim"]


def requirements() -> list[str]:
    """What loading a model needs (crossfed rebuilds the network); pinned to the versions that wrote it."""
    from importlib import metadata

    pins = []
    for package in ("crossfed", "torch", "mlflow", "numpy"):
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pins.append(package)
    return pins


def _staged(state: dict[str, np.ndarray], info: dict, folder: Path) -> dict[str, str]:
    """The artifacts written into `folder`, as MLflow's `artifacts=` mapping."""
    np.savez(folder / STATE, **state)
    (folder / MODEL_INFO).write_text(json.dumps(info, indent=1, sort_keys=True))
    return {"state": str(folder / STATE), "info": str(folder / MODEL_INFO)}


def save_model_folder(path: str | Path, state: dict[str, np.ndarray], info: dict) -> None:
    """Write an MLflow model folder at the local `path` (which must not exist)."""
    with tempfile.TemporaryDirectory() as staging, _without_mlflow_advice():
        mlflow.pyfunc.save_model(str(path), python_model=str(ENTRY_SCRIPT), artifacts=_staged(state, info, Path(staging)),
                                 signature=signature(info), pip_requirements=requirements())


def export_model_folder(location: str, state: dict[str, np.ndarray], info: dict) -> str:
    """Write the model folder at `location` in the run storage (a local folder or a URI such as s3://…),
    replacing what is there; its location. `mlflow.pyfunc.load_model(location)` loads it."""
    from crossfed.storage import Storage

    target = Storage(location)
    with tempfile.TemporaryDirectory() as staging:
        folder = Path(staging) / "model"
        save_model_folder(folder, state, info)
        target.remove()
        target.upload_folder(folder)
    return target.location


def log_model(state: dict[str, np.ndarray], info: dict, name: str = "model"):
    """Log the model into the active run (`runs:/<run id>/<name>`); MLflow's ModelInfo."""
    with tempfile.TemporaryDirectory() as staging, _without_mlflow_advice():
        return mlflow.pyfunc.log_model(name=name, python_model=str(ENTRY_SCRIPT), artifacts=_staged(state, info, Path(staging)),
                                       signature=signature(info), pip_requirements=requirements())


def is_model_folder(location: str | Path) -> bool:
    """Whether `location` (a local path or storage URI) is a crossfed MLflow model folder."""
    from crossfed.storage import Storage

    return Storage(str(location)).exists(f"artifacts/{MODEL_INFO}")


def read_model_folder(location: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(state, info) of a model folder at a local path or storage URI."""
    from crossfed.federation.checkpoint import state_from_npz
    from crossfed.storage import Storage

    folder = Storage(str(location))
    try:
        info = json.loads(folder.read_bytes(f"artifacts/{MODEL_INFO}"))
        state = state_from_npz(folder.read_bytes(f"artifacts/{STATE}"))
    except (OSError, ValueError) as err:
        raise CrossfedError(f"{location}: not a crossfed model folder (artifacts/{MODEL_INFO} and "
                            f"artifacts/{STATE}: {type(err).__name__}: {err})") from None
    return state, info


def adapters_held(state: dict[str, np.ndarray]) -> set[str]:
    """The names of the input adapters whose parameters `state` holds (`common` for a shared one)."""
    return {name.split(".")[1] for name in state if name.startswith("adapters.")}


def build_network(state: dict[str, np.ndarray], info: dict):
    """The network (adapters held, backbone, classifier for a classifier) with `state` loaded, in eval mode."""
    import torch

    from crossfed.config.model import ModelConfig
    from crossfed.model import build_model

    network = build_model(ModelConfig(**info["model"]), info["experiments"], tasks=[],
                          common_adapter=info["common_adapter"])
    if info["kind"] == "classifier":
        network.add_classifier(2)
    held = adapters_held(state)
    own = network.state_dict()
    missing = [name for name in own if name not in state and not name.startswith("adapters.")]
    if missing:
        raise CrossfedError(f"the model's state lacks {len(missing)} parameters of its network, e.g. {missing[0]}")
    for name in own:
        if name in state:
            own[name] = torch.as_tensor(state[name]).to(own[name].dtype)
    network.load_state_dict(own)
    network.held_adapters = held
    return network.eval()


def predict_events(network, info: dict, features: np.ndarray, types: np.ndarray, mask: np.ndarray,
                   experiment: str | None = None) -> np.ndarray:
    """Embeddings [n, dim] (foundation) or signal probabilities [n] (classifier) of events given as arrays."""
    import torch

    experiment = experiment or default_experiment(network, info)
    if experiment not in info["experiments"]:
        raise CrossfedError(f"experiment {experiment!r}: the model was trained on {', '.join(info['experiments'])}")
    if network.adapter_name(experiment) not in network.held_adapters:
        where = info.get("site_models", {}).get(experiment)
        raise CrossfedError(f"this model holds no input adapter for {experiment}: it stays private at its site"
                            + (f" (its model: {where})" if where else "") + "; load that site's model to embed its events")
    outputs = []
    with torch.no_grad():
        for start in range(0, len(features), BATCH):
            part = slice(start, start + BATCH)
            f = torch.as_tensor(np.asarray(features[part], np.float32))
            t = torch.as_tensor(np.asarray(types[part]).astype(np.int64))
            m = torch.as_tensor(np.asarray(mask[part], bool))
            pooled = network.pool(network.encode(f, t, m, experiment), m)
            if info["kind"] == "classifier":
                outputs.append(torch.softmax(network.classifier(pooled).float(), dim=1)[:, 1].numpy())
            else:
                outputs.append(pooled.float().numpy())
    if outputs:
        return np.concatenate(outputs)
    return np.zeros((0,) if info["kind"] == "classifier" else (0, network.dim), np.float32)


def default_experiment(network, info: dict) -> str:
    """The first of the model's experiments whose adapter it holds (else its first experiment)."""
    usable = [e for e in info["experiments"] if network.adapter_name(e) in network.held_adapters]
    return (usable or info["experiments"])[0]


@contextlib.contextmanager
def _without_mlflow_advice():
    """MLflow's advice to give an input example does not apply: an example would be run at logging time,
    where a global model may hold no adapter to embed it with."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input example.*")
        yield


class CrossfedModel(mlflow.pyfunc.PythonModel):
    """The pyfunc wrapper (see the module's docstring); `mlflow.pyfunc.load_model` makes and loads it."""

    _skip_type_hint_validation = True  # the signature validates the input (MLflow would ask for type hints)

    def load_context(self, context) -> None:
        self.info = json.loads(Path(context.artifacts["info"]).read_text())
        with np.load(context.artifacts["state"]) as arrays:
            state = {name: arrays[name] for name in arrays.files}
        self.network = build_network(state, self.info)

    def predict(self, context, model_input, params=None) -> np.ndarray:
        missing = [key for key in ("features", "types", "mask") if key not in model_input]
        if missing:
            raise CrossfedError(f"model input lacks {', '.join(missing)}: give a dict of features, types and mask arrays")
        experiment = (params or {}).get("experiment") or None
        return predict_events(self.network, self.info, model_input["features"], model_input["types"],
                              model_input["mask"], experiment)
