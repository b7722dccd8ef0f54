"""`crossfed score`: a fine-tuned classifier's signal probability for each event of ROOT files."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("score")(score)


def score(
    model: str = typer.Argument(..., help="The classifier: models:/NAME/VERSION, models:/NAME@ALIAS, "
                                "runs:/RUN_ID/model (as crossfed finetune logs it) or a model folder."),
    files: list[str] = typer.Argument(..., help="ROOT files (TTree or RNTuple), globs or fsspec URLs."),
    schema: str = typer.Option(..., "--schema", "-s", help="Built-in schema name (cms_nanoaod, atlas_opendata, "
                               "atlas_physlite) or a YAML file: how the files map to the common events."),
    out: Path = typer.Option(..., "--out", "-o", help="Scores file: .parquet (column score) or .npz (array score)."),
    experiment: str = typer.Option(None, "--experiment", "-e", help="Input adapter to use; default: the "
                                   "experiment the classifier was fine-tuned on."),
    selection: str = typer.Option(None, "--selection", help="Event selection, e.g. 'n_leptons >= 1 and n_jets >= 4'."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow store of models:/ and runs:/ URIs; "
                                     "default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here."),
) -> None:
    """Read the files as training reads them (schema, object definitions, selection, padding to the model's
    object count) and write the signal probability of each selected event, in file order."""
    import mlflow
    from rich.console import Console

    from crossfed import tracking
    from crossfed.config import TrackingConfig
    from crossfed.errors import CrossfedError
    from crossfed.serving.score import OUTPUT_FORMATS, score_files, write_scores

    if out.suffix not in OUTPUT_FORMATS:
        raise CrossfedError(f"--out {out}: expected a file ending in {' or '.join(OUTPUT_FORMATS)}")
    uri = tracking.tracking_uri(TrackingConfig(uri=tracking_uri))
    if ":/" in model and uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise CrossfedError(f"{model}: no MLflow store at {uri} to load it from (--tracking-uri names the store)")
    mlflow.set_tracking_uri(uri)
    scores = score_files(model, files, schema, experiment=experiment, selection=selection)
    write_scores(scores, out)
    Console().print(f"{len(scores):,} events scored by {model}: mean signal probability "
                    f"{float(scores.mean()) if len(scores) else float('nan'):.4f}, written to {out}", highlight=False)
