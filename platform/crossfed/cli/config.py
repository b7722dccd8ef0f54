"""`crossfed validate`: check a run configuration and its data without running anything."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)


def validate(
    config: Path = typer.Argument(..., help="Run configuration (YAML)."),
    show: bool = typer.Option(False, "--show", help="Print the configuration with every default filled in."),
    skip_data: bool = typer.Option(False, "--skip-data", help="Check the configuration only, not the schemas and "
                                   "data files (for a config whose data lives on the cluster, not here)."),
) -> None:
    """Check a run configuration without starting Ray: unknown keys, wrong types and impossible values
    (with key path and file); then each experiment's schema resolves, its selections parse, every data
    file or glob exists and is a readable ROOT file (URLs are opened), and the first file of each dataset
    has every branch the schema needs. All problems are listed, one line each, exit code 2."""
    from rich.console import Console

    from crossfed.config import load_config
    from crossfed.data.checks import check_experiment
    from crossfed.errors import CrossfedError

    cfg = load_config(config)
    problems, n_files = [], 0
    for name, experiment in ({} if skip_data else cfg.experiments).items():
        found, checked = check_experiment(name, experiment)
        problems += found
        n_files += checked
    if problems:
        lines = [f"{config}: {problem}" for problem in problems]
        raise CrossfedError(lines[0] if len(lines) == 1 else f"{len(lines)} problems\n  " + "\n  ".join(lines))
    console = Console(soft_wrap=True)
    checked = "data not checked (--skip-data)" if skip_data else f"{n_files} data file(s) checked against their schemas"
    console.print(f"[green]ok[/]: {config} — {len(cfg.experiments)} experiment(s): {', '.join(cfg.experiments)}; "
                  f"{checked}")
    if show:
        console.print(cfg.to_yaml(), markup=False, highlight=False)
