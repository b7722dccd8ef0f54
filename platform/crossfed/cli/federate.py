"""`crossfed pretrain`: self-supervised pre-training by federation, or a local / centralized baseline."""

from __future__ import annotations

from pathlib import Path

import typer

from crossfed.federation import MODES


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)


def pretrain(
    config: Path = typer.Argument(..., help="Run configuration (YAML)."),
    mode: str = typer.Option(
        "federated", "--mode",
        help="federated: one client per experiment; local: one experiment alone (needs --experiment); "
             "centralized: one client with every experiment's events pooled (the baseline).",
    ),
    experiment: str | None = typer.Option(None, "--experiment", help="The experiment trained alone in local mode."),
    resume: str | None = typer.Option(
        None, "--resume",
        help="MLflow run id or name to continue, from its newest intact committed round (a damaged one is "
             "skipped and named); the config must be the logged one, except federation.rounds and how it runs.",
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a config key, e.g. --set federation.rounds=3 (repeatable)."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster address; default: RAY_ADDRESS, else an embedded local Ray."
    ),
) -> None:
    """Pre-train the foundation model on Ray: rounds of local DeepSpeed training and aggregation, logged
    to MLflow and checkpointed every round under <storage>/<run id>/, where the storage is output_dir or
    CROSSFED_STORAGE: a local folder, or a URI such as s3://bucket/runs."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from crossfed.config import load_config
    from crossfed.errors import CrossfedError

    if mode not in MODES:
        raise CrossfedError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    cfg = load_config(config, overrides)
    console = Console()
    rounds = cfg.federation.rounds if mode == "federated" else min(cfg.federation.rounds, cfg.training.steps)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"), console=console,
    ) as progress:
        task = progress.add_task(f"{mode} pre-training", total=rounds, status="starting clients…")

        def on_round(round_number: int, record: dict) -> None:
            loss = record.get("global/val_loss")
            status = f"round {round_number}: val loss {loss:.4f}" if loss is not None else f"round {round_number}"
            progress.update(task, completed=round_number, status=status)

        from crossfed.federation import run_federation

        result = run_federation(cfg, mode=mode, experiment=experiment, resume=resume, on_round=on_round,
                                address=address)
    console = Console(soft_wrap=True)  # keep the commands below on one line each, for copying
    _summary(console, result)
    from crossfed.tracking import tracking_uri

    uri = tracking_uri(cfg.tracking)
    console.print(f"MLflow run [bold]{result.run_id}[/]; final global model: {result.global_state_path}")
    console.print(f"browse it: mlflow ui --backend-store-uri {uri}", highlight=False, markup=False)
    console.print(f"continue it later: crossfed pretrain {config} --mode {mode} --resume {result.run_id}",
                  highlight=False, markup=False)


def _summary(console, result) -> None:
    from rich.table import Table

    table = Table(title="rounds")
    columns = {"round": "round", "global/val_loss": "val loss", "clients/updated": "updates",
               "clients/dropped": "dropped", "bytes/received": "bytes in", "time/round_s": "seconds"}
    for header in columns.values():
        table.add_column(header, justify="right")
    for record in result.history:
        table.add_row(*(_fmt(record.get(key)) for key in columns))
    console.print(table)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return str(int(value))
