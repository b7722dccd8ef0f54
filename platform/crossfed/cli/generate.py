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
    seed: int = typer.Option(0, "--seed", help="Random seed; the file is identical for any number of workers or nodes."),
    out: Optional[str] = typer.Option(None, "--out", help="Output ROOT file: a path or a storage URI (s3://bucket/key.root)."),
    workers: Optional[int] = typer.Option(
        None, "--workers", help="Chunks generated at once, as Ray tasks; default: every CPU (of the cluster or node "
        "group; overrides a recipe's). 1 without --address runs in this process, without Ray."),
    address: Optional[str] = typer.Option(
        None, "--address", help="Ray cluster (HOST:PORT, ray://HOST:PORT or auto); default: $RAY_ADDRESS, else an "
        "embedded Ray on this machine."),
    node_group: Optional[str] = typer.Option(
        None, "--node-group", help="Generate on the Ray nodes labelled crossfed.io/experiment=NODE_GROUP (as the "
        "federation's clients)."),
    pythia: list[str] = typer.Option([], "--pythia", help="Extra Pythia setting 'Key = value' (repeatable)."),
    no_preselection: bool = typer.Option(
        False, "--no-preselection", help="Keep all events (default keeps >=1 lepton, >=2 jets, >=1 b-jet)."
    ),
    no_forced_decays: bool = typer.Option(
        False, "--no-forced-decays", help="Let the top processes' W bosons decay freely (default: only the channels "
        "that can pass the preselection; the metadata's cross-section is then sigma x BR)."),
    recipe: Optional[Path] = typer.Option(
        None, "--recipe", help="Dataset recipe (jobs/datasets/*.yaml): a whole study's data for each detector; run "
        "again after an interruption, it continues from the finished files and chunks."
    ),
) -> None:
    """Generate events with Pythia 8 and a CMS-like or ATLAS-like detector response, or a whole recipe.

    Events are made in chunks, as Ray tasks; the output is the same however many workers or nodes make it.
    Running the same command again after an interruption reuses the chunks already finished.
    """
    from rich.console import Console
    from rich.table import Table

    from crossfed.errors import CrossfedError
    from crossfed.generate import generate
    from crossfed.generate.recipe import make_recipe

    console = Console()
    if recipe is not None:
        if process or out or events or pythia or no_preselection or no_forced_decays or node_group:
            raise CrossfedError(
                "--recipe makes all the files itself; do not combine it with --process/--events/--out/--pythia/"
                "--no-preselection/--no-forced-decays/--node-group (set them in the recipe)"
            )
        summaries = make_recipe(recipe, address=address, workers=workers)
    else:
        missing = [name for name, value in (("--process", process), ("--events", events), ("--out", out)) if value is None]
        if missing:
            raise CrossfedError(f"missing {', '.join(missing)} (or give --recipe FILE)")
        summaries = [generate(process, detector, events, seed, out, workers=workers, preselect=not no_preselection,
                              pythia_settings=tuple(pythia), forced_decays=not no_forced_decays, address=address,
                              node_group=node_group)]
    table = Table("file", "process", "detector", "events", "efficiency", "σ (pb)")
    for s in summaries:
        efficiency = f"{s['efficiency']:.3f}" if "efficiency" in s else "mixture"
        sigma = f"{s['cross_section_pb']:.4g} ± {s['cross_section_error_pb']:.2g}" if "cross_section_pb" in s else "-"
        if s.get("forced_decays") and "cross_section_pb" in s:
            sigma += " (σ×BR)"
        table.add_row(s["path"], s["process"], s["detector"], str(s["n_events"]), efficiency, sigma)
    console.print(table)
    resumed = [s for s in summaries if s.get("resumed_chunks")]
    if resumed:
        console.print(f"continued from an earlier run: {', '.join(s['path'] for s in resumed)}", highlight=False)
