"""`crossfed sweep`: hyperparameter sweeps of the federation with Ray Tune."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)


def sweep(
    ctx: typer.Context,
    spec: Path = typer.Argument(..., help="Sweep definition (YAML), e.g. tuning/strategy.yaml."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted sweep; finished trials are kept."),
    address: str = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster; default: embedded local Ray."),
    check: bool = typer.Option(False, "--check", help="Only validate the sweep definition; run no trial."),
) -> None:
    """Sweep federation hyperparameters: each trial is a whole federation, ASHA stops poor ones early."""
    from rich.console import Console
    from rich.table import Table

    from crossfed.sweep import Sweep, run_sweep

    console = Console(soft_wrap=True)
    if check:
        loaded = Sweep(spec)
        console.print(f"[green]ok[/]: {spec} — {len(loaded.spec.space)} hyperparameter(s), metric {loaded.spec.metric}")
        return
    result = run_sweep(spec, resume=resume, address=address, trial_tracebacks=ctx.find_root().params.get("debug", False))
    from crossfed.sweep.outcome import completed

    table = Table(title=f"Trials of {spec.name}, best first (of those that completed with a model)")
    table.add_column("trial")
    names = sorted({k for row in result.rows for k in row["params"]})
    for name in names:
        table.add_column(name)
    table.add_column("value", justify="right")
    table.add_column("rounds", justify="right")
    for row in result.rows:
        value = "error" if row["value"] is None else f"{row['value']:.5g}"
        if row["value"] is not None and not completed(row):
            value += " (failed)" if row["error"] else " (stopped early)"
        table.add_row(row["trial"], *(str(row["params"].get(n, "")) for n in names), value, str(row["rounds"]))
    console.print(table)
    for row in result.rows:
        if row["error"]:
            console.print(f"[red]trial {row['trial']} failed[/]: {row['error']} (traceback: {row['error_file']})",
                          highlight=False)
    console.print(f"best configuration: {result.best_config_path}")
    console.print(f"run it: crossfed pretrain {result.best_config_path}")
    console.print(f"MLflow parent run: {result.parent_run_id}")
