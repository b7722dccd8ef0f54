"""Score the events of ROOT files with a fine-tuned classifier: `crossfed score` and `score_files`.

The files are read as training read them (`crossfed.data.read_events`: the schema's objects and
definitions, MET, the selection, padding to the model's `max_objects`); each selected event with finite
kinematics gets its signal probability, in file order. The model is any MLflow model URI a fine-tuning
logged: `models:/NAME/VERSION`, `models:/NAME@ALIAS`, `runs:/RUN_ID/model`, or a model folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossfed.errors import CrossfedError

OUTPUT_FORMATS = (".parquet", ".npz")


def load_classifier(model_uri: str):
    """(network, info) of the fine-tuned classifier `model_uri` names; one-line errors."""
    import mlflow

    from crossfed.serving.mlflow_model import build_network, read_model_folder

    try:
        folder = mlflow.artifacts.download_artifacts(artifact_uri=model_uri) if ":/" in model_uri else model_uri
    except (mlflow.exceptions.MlflowException, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CrossfedError(f"{model_uri}: cannot load the model from {mlflow.get_tracking_uri()} ({reason})") from None
    if not Path(folder).is_dir():
        raise CrossfedError(f"{model_uri}: not a model folder")
    state, info = read_model_folder(folder)
    if info.get("kind") != "classifier":
        raise CrossfedError(f"{model_uri} is a {info.get('kind', 'unknown')} model: scoring needs a fine-tuned "
                            "classifier (crossfed finetune registers them as <name>-<experiment>-classifier)")
    return build_network(state, info), info


def score_files(model_uri: str, files: list[str], schema: str, *, experiment: str | None = None,
                selection: str | None = None, chunk_size: str = "100 MB") -> np.ndarray:
    """The signal probability of each selected event of `files` (paths, globs or URLs) read with `schema`
    (a built-in name or a YAML file), by the classifier `model_uri`; float32 [events]."""
    from crossfed.data.reader import read_events
    from crossfed.serving.mlflow_model import predict_events

    network, info = load_classifier(model_uri)
    events, _ = read_events(files, schema, selection=selection, max_objects=info["max_objects"], chunk_size=chunk_size)
    return predict_events(network, info, events.features, events.types, events.mask, experiment)


def write_scores(scores: np.ndarray, out: Path) -> None:
    """`scores.parquet` (column `score`) or `.npz` (array `score`), written whole or not at all."""
    from crossfed.atomic import write_atomically

    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        write_atomically(out, lambda temporary: pq.write_table(pa.table({"score": scores}), temporary))
    elif out.suffix == ".npz":
        def write(temporary: Path) -> None:
            with open(temporary, "wb") as f:
                np.savez(f, score=scores)

        write_atomically(out, write)
    else:
        raise CrossfedError(f"--out {out}: expected a file ending in {' or '.join(OUTPUT_FORMATS)}")
