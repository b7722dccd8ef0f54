"""What a federation run leaves behind: its result, and model state files anywhere in the run storage.

The run's folder in the storage (`<storage>/<run id>/`, a local folder or an fsspec URI) and its round
checkpoints are described in `crossfed.federation.checkpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossfed.federation.checkpoint import npz_bytes, state_from_npz
from crossfed.storage import FileEntry, read_file, write_file


@dataclass
class FederationResult:
    run_id: str
    run_dir: str  # the run's folder in the run storage: a local path or a URI (s3://…)
    global_state_path: str
    history: list[dict] = field(default_factory=list)  # one record of scalar metrics per completed round
    # client name -> its full final model (an MLflow model folder: shared + private parameters + buffers), at its site
    client_models: dict[str, str] = field(default_factory=dict)


def save_state(location: str | Path, state: dict[str, np.ndarray]) -> FileEntry:
    """Write a state dict as .npz, whole or not at all, at a local path or a storage URI."""
    data = npz_bytes(state)
    write_file(str(location), data)
    return FileEntry.of(data)


def load_state(location: str | Path) -> dict[str, np.ndarray]:
    """A state dict from an .npz file, or from a model folder (a client's exported model,
    `crossfed.serving.mlflow_model`), at a local path or a storage URI."""
    if not str(location).endswith(".npz"):
        from crossfed.serving.mlflow_model import read_model_folder

        return read_model_folder(location)[0]
    return state_from_npz(read_file(str(location)))
