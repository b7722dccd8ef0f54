"""`crossfed validate`: check a run configuration without running anything."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)


def validate(
    config: Path = typer.Argument(..., help="Run configuration (YAML)."),
    show: bool = typer.Option(False, "--show", help="Print the configuration with every default filled in."),
) -> None:
    """Check a run configuration: unknown keys, wrong types and impossible values are reported with their path."""
    from rich.console import Console

    from crossfed.config import load_config

    cfg = load_config(config)
    console = Console(soft_wrap=True)
    console.print(f"[green]ok[/]: {config} — {len(cfg.experiments)} experiment(s): {', '.join(cfg.experiments)}")
    if show:
        console.print(cfg.to_yaml(), markup=False, highlight=False)
