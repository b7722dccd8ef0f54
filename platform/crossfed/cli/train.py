"""`crossfed finetune`: the data-efficiency ladder (AUC vs number of labelled events) for one experiment."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_command)


def finetune_command(
    config: Path = typer.Argument(..., help="Run configuration (YAML)."),
    experiment: str = typer.Option(None, "--experiment", "-e",
                                   help="Experiment to fine-tune on; default: the first with a finetune section."),
    checkpoint: str = typer.Option(None, "--checkpoint", "-c",
                                   help="Pre-trained model state (.pt or .npz); default: finetune.checkpoint "
                                        "from the config; 'none' trains from scratch."),
    events: list[int] = typer.Option(None, "--events", "-n",
                                     help="Labelled events per rung (repeatable); default: finetune.labelled_events."),
) -> None:
    """Fine-tune the experiment's signal-vs-background classifier (its finetune section) on growing numbers of
    labelled events; print test-split AUC, 1/ε_B at ε_S = 0.3 and 0.5, accuracy."""
    from rich.console import Console
    from rich.table import Table

    from crossfed.config import load_config
    from crossfed.errors import CrossfedError
    from crossfed.train.finetune import finetune, load_labelled_events

    cfg = load_config(config)
    if experiment is None:
        with_labels = [name for name, e in cfg.experiments.items() if e.finetune is not None]
        if not with_labels:
            raise CrossfedError(f"{config}: no experiment has a finetune section (signal and background datasets)")
        experiment = with_labels[0]
    ladder = events or cfg.finetune.labelled_events
    if any(n < 2 for n in ladder):
        raise CrossfedError("--events: each rung needs at least 2 events (one signal, one background)")
    state = cfg.finetune.checkpoint if checkpoint is None else checkpoint
    if str(state).lower() == "none":
        state = None

    console = Console()
    data = load_labelled_events(cfg, experiment)  # read once for every rung
    table = Table(title=f"fine-tuning {experiment} ({cfg.finetune.mode}, "
                        f"{'from ' + str(state) if state else 'from scratch'})")
    for column in ("labelled events", "AUC", "1/ε_B @ ε_S=0.3", "1/ε_B @ ε_S=0.5", "accuracy"):
        table.add_column(column, justify="right")
    with console.status("fine-tuning") as status:
        for count in ladder:
            status.update(f"fine-tuning on {count} labelled events")
            m = finetune(cfg, experiment, count, state, data=data)
            table.add_row(str(count), f"{m['auc']:.4f}", f"{m['rejection_at_0.3']:.1f}",
                          f"{m['rejection_at_0.5']:.1f}", f"{m['accuracy']:.4f}")
    console.print(table)
