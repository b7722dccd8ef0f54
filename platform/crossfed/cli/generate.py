"""`crossfed generate`: simulated events (Pythia 8 + fastjet + detector response) as experiment ROOT files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)


def generate_command(
    process: Optional[str] = typer.Option(
        None, "--process", help="ttbar, wjets, zjets, single_top, tth (H->bb), hplus (H+->tb), or custom (--pythia only)."
    ),
    detector: str = typer.Option("cms", "--detector", help="cms (NanoAOD, GeV) or atlas (open-data ntuple, MeV)."),
    events: Optional[int] = typer.Option(None, "--events", help="Events to write, counted after the preselection."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the file is identical for any number of workers."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output ROOT file."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes; default: all cores."),
    pythia: list[str] = typer.Option([], "--pythia", help="Extra Pythia setting 'Key = value' (repeatable)."),
    no_preselection: bool = typer.Option(
        False, "--no-preselection", help="Keep all events (default keeps >=1 lepton, >=2 jets, >=1 b-jet)."
    ),
    recipe: Optional[Path] = typer.Option(
        None, "--recipe", help="Dataset recipe (jobs/datasets/*.yaml): a whole study's data for each detector."
    ),
) -> None:
    """Generate events with Pythia 8 and a CMS-like or ATLAS-like detector response, or a whole recipe."""
    from rich.console import Console
    from rich.table import Table

    from crossfed.errors import CrossfedError
    from crossfed.generate import generate
    from crossfed.generate.recipe import make_recipe

    console = Console()
    if recipe is not None:
        if process or out or events or pythia or no_preselection:
            raise CrossfedError(
                "--recipe makes all the files itself; do not combine it with --process/--events/--out/--pythia/"
                "--no-preselection"
            )
        summaries = make_recipe(recipe)
    else:
        missing = [name for name, value in (("--process", process), ("--events", events), ("--out", out)) if value is None]
        if missing:
            raise CrossfedError(f"missing {', '.join(missing)} (or give --recipe FILE)")
        summaries = [generate(process, detector, events, seed, out, workers=workers,
                              preselect=not no_preselection, pythia_settings=tuple(pythia))]
    table = Table("file", "process", "detector", "events", "efficiency", "σ (pb)")
    for s in summaries:
        efficiency = f"{s['efficiency']:.3f}" if "efficiency" in s else "mixture"
        sigma = f"{s['cross_section_pb']:.4g} ± {s['cross_section_error_pb']:.2g}" if "cross_section_pb" in s else "-"
        table.add_row(s["path"], s["process"], s["detector"], str(s["n_events"]), efficiency, sigma)
    console.print(table)
