"""`crossfed pretrain`: self-supervised pre-training by federation, or a local / centralized baseline."""

from __future__ import annotations

import shlex
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
    CROSSFED_STORAGE: a local folder, or a URI such as s3://bucket/runs. Ends by printing each
    experiment's model for `crossfed finetune -c`. Ctrl-C or SIGTERM stops it after abandoning the round in
    progress (the MLflow run is marked KILLED) and prints the command that continues it; --resume also
    takes over a run left RUNNING by a process that was killed."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from crossfed.config import load_config
    from crossfed.errors import CrossfedError
    from crossfed.federation.rounds import FederationInterrupted

    if mode not in MODES:
        raise CrossfedError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    cfg = load_config(config, overrides)
    console = Console()
    rounds = cfg.federation.rounds if mode == "federated" else min(cfg.federation.rounds, cfg.training.steps)

    def continue_command(run_id: str) -> str:
        words = ["crossfed", "pretrain", str(config)] + (["--mode", mode] if mode != "federated" else [])
        words += ["--experiment", experiment] if experiment else []
        words += [part for override in overrides for part in ("--set", override)]
        words += ["--address", address] if address else []
        return shlex.join(words + ["--resume", run_id])

    try:
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
    except FederationInterrupted as stopped:
        Console(stderr=True, soft_wrap=True, highlight=False).print(
            f"interrupted after round {stopped.completed_round}: continue with {continue_command(stopped.run_id)}",
            markup=False)
        raise typer.Exit(stopped.exit_code) from None
    console = Console(soft_wrap=True, highlight=False)  # keep the commands below on one line each, for copying
    _summary(console, result)
    _print_models(console, cfg, config, mode, experiment, result)
    from crossfed.tracking import tracking_uri

    console.print(f"browse it: mlflow ui --backend-store-uri {tracking_uri(cfg.tracking)}", markup=False)
    console.print(f"continue it later: {continue_command(result.run_id)}", markup=False)


def _print_models(console, cfg, config: Path, mode: str, experiment: str | None, result) -> None:
    """How to fine-tune from the run's models: `-c RUN_ID` (the run's model for -e), the registered
    version, and the files at this site; plus the global shared parameters."""
    import mlflow

    from crossfed.federation.rounds import plan_rounds
    from crossfed.tracking import registered_model_name, tracking_uri

    run = mlflow.MlflowClient(tracking_uri(cfg.tracking)).get_run(result.run_id)
    _print_footprint(console, run.data.params)
    version = run.data.tags.get("crossfed.model_version")
    registered = f"models:/{registered_model_name(cfg)}/{version}" if version else None
    console.print(f"MLflow run [bold]{result.run_id}[/]; fine-tune from its models with:")
    for spec in plan_rounds(cfg, mode, experiment).clients:
        for name in spec.experiments:
            if spec.name in result.client_models:
                console.print(f"  crossfed finetune {config} -e {name} -c {result.run_id}", markup=False)
    sources = [f"-c {registered}"] if registered else []
    sources.append(f"-c runs:/{result.run_id}/model")
    console.print("  (the same models: " + ", ".join(sources) + "; at this site also -c "
                  + ", ".join(result.client_models[c] for c in result.client_models) + ")", markup=False)
    console.print(f"global model (the shared parameters only): {result.global_state_path}", markup=False)
    console.print("each is an MLflow model: mlflow.pyfunc.load_model(URI) embeds events (docs/models.md)", markup=False)


def _print_footprint(console, params: dict[str, str]) -> None:
    """Each client's device-hours and energy, from the run's `client.<name>.*` parameters (none under DP)."""
    from crossfed.federation.footprint import energy_text

    clients: dict[str, dict[str, float]] = {}
    for key, value in params.items():
        if key.startswith("client.") and key.count(".") == 2:
            _, name, quantity = key.split(".")
            clients.setdefault(name, {})[quantity] = float(value)
    for name, footprint in sorted(clients.items()):
        if "device_hours" in footprint:
            console.print(f"{name}: {footprint['device_hours']:.3g} device-hours, energy {energy_text(footprint)}",
                          markup=False)


def _summary(console, result) -> None:
    from rich.table import Table

    table = Table(title="rounds")
    columns = {"round": "round", "global/val_loss": "val loss", "clients/updated": "updates",
               "clients/dropped": "dropped", "bytes/received": "bytes in", "time/round_s": "seconds",
               "privacy/epsilon": "ε"}
    for header in columns.values():
        table.add_column(header, justify="right")
    for record in result.history:
        table.add_row(*(_fmt(record.get(key)) for key in columns))
    console.print(table)
    last = result.history[-1] if result.history else {}
    if "privacy/epsilon" in last:
        console.print(f"differential privacy: ε = {last['privacy/epsilon']:.4g} at δ = {last['privacy/delta']:g} "
                      f"after {last['round']} rounds (client level; Opacus RDP accountant)")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return str(int(value))
