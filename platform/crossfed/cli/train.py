"""`crossfed finetune`: the data-efficiency ladder (AUC vs number of labelled events) for one experiment."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_command)


def finetune_command(
    config: Path = typer.Argument(..., help="Run configuration (YAML)."),
    experiment: str = typer.Option(None, "--experiment", "-e",
                                   help="Experiment to fine-tune on; default: the first with a finetune section."),
    checkpoint: str = typer.Option(
        None, "--checkpoint", "-c",
        help="Model to start from: a pre-training run id (its model for -e), models:/NAME/VERSION or "
             "models:/NAME@ALIAS (a registered version), runs:/RUN_ID/PATH, or a state file (.npz/.pt); "
             "'none' trains from scratch. Default: finetune.checkpoint from the config, else from scratch."),
    events: list[int] = typer.Option(None, "--events", "-n",
                                     help="Labelled events per rung (repeatable); default: finetune.labelled_events."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a config key, e.g. --set seed=4 --set finetune.lr=0.01 (repeatable)."),
) -> None:
    """Fine-tune the experiment's signal-vs-background classifier (its finetune section) on growing numbers of
    labelled events; print test-split AUC, 1/ε_B at ε_S = 0.3 and 0.5, accuracy. Each rung is an MLflow run
    (parameters, per-epoch loss, test metrics, the ROC as roc.json, the source model as tag and param, the
    labelled datasets as inputs) holding the classifier as an MLflow model, registered as a version of
    <registered model>-<experiment>-classifier: score events with `crossfed score`."""
    import mlflow
    from rich.console import Console
    from rich.table import Table

    from crossfed import tracking
    from crossfed.config import load_config
    from crossfed.data.records import dataset_records
    from crossfed.errors import CrossfedError
    from crossfed.model_source import check_model_settings, resolve_model_source
    from crossfed.train.finetune import finetune, load_labelled_events

    cfg = load_config(config, overrides)
    if experiment is None:
        with_labels = [name for name, e in cfg.experiments.items() if e.finetune is not None]
        if not with_labels:
            raise CrossfedError(f"{config}: no experiment has a finetune section (signal and background datasets)")
        experiment = with_labels[0]
    ladder = events or cfg.finetune.labelled_events
    if any(n < 2 for n in ladder):
        raise CrossfedError("--events: each rung needs at least 2 events (one signal, one background)")

    # Inputs first (model, data), so that bad input leaves no MLflow run behind.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a model is a file or two
    mlflow.set_tracking_uri(tracking.tracking_uri(cfg.tracking))
    source = resolve_model_source(cfg.finetune.checkpoint if checkpoint is None else checkpoint, experiment)
    check_model_settings(source, cfg)
    data = load_labelled_events(cfg, experiment)  # read once for every rung
    datasets = {key: record for key, record in dataset_records(cfg, [experiment]).items() if ".finetune." in key}

    console = Console()
    start = "from scratch" if source.from_scratch else f"from {source.reference}"
    table = Table(title=f"fine-tuning {experiment} ({cfg.finetune.mode}, {start})")
    for column in ("labelled events", "AUC", "1/ε_B @ ε_S=0.3", "1/ε_B @ ε_S=0.5", "accuracy"):
        table.add_column(column, justify="right")
    run_ids, versions = {}, {}
    with console.status("fine-tuning") as status:
        for count in ladder:
            status.update(f"fine-tuning on {count} labelled events")
            with tracking.finetune_run(cfg, experiment, count, source, datasets=datasets) as run:
                m = finetune(cfg, experiment, count, source.state, data=data, on_epoch=tracking.log_finetune_epoch,
                             keep_model=True)
                tracking.log_finetune_result(m)
                versions[count] = tracking.log_classifier(cfg, experiment, m.model_state, count)
            run_ids[count] = run.info.run_id
            table.add_row(str(count), f"{m['auc']:.4f}", f"{m['rejection_at_0.3']:.1f}",
                          f"{m['rejection_at_0.5']:.1f}", f"{m['accuracy']:.4f}")
    console.print(table)
    name = tracking.classifier_model_name(cfg, experiment)
    for count, run_id in run_ids.items():
        console.print(f"MLflow run of {count} labelled events: {run_id}, classifier models:/{name}/{versions[count]}",
                      highlight=False, soft_wrap=True)
    console.print(f"score events with it: crossfed score models:/{name}/{versions[ladder[-1]]} FILE "
                  f"--schema {cfg.experiments[experiment].data_schema} --out scores.parquet", markup=False,
                  highlight=False, soft_wrap=True)
    console.print(f"browse them: mlflow ui --backend-store-uri {tracking.tracking_uri(cfg.tracking)}",
                  markup=False, highlight=False, soft_wrap=True)
