"""`crossfed demo` (the whole study on one machine) and `crossfed report` (its results, rebuilt from MLflow)."""

from __future__ import annotations

from pathlib import Path

import typer

SCALE_NAMES = ["ci", "small", "default", "large"]  # crossfed.demo.SCALES, listed here to keep --help fast


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("report")(report)


def demo(
    scale: str = typer.Option(
        "default", "--scale", help=f"Study size: {', '.join(SCALE_NAMES)} (default: 6400 generated events, sized for 15 min on 2 cores)."
    ),
    config: Path = typer.Option(
        None, "--config", help="Run the study in this run config (its data must exist; --scale is then ignored)."
    ),
    workdir: Path = typer.Option(
        Path(".crossfed/demo"), "--workdir", help="Generated samples (reused on rerun), tensor cache, plots."
    ),
    tracking_uri: str = typer.Option(
        None, "--tracking-uri", help="MLflow tracking URI (default: the config's, else sqlite:///mlflow.db here)."
    ),
) -> None:
    """Run the whole study: does training together make each experiment's model better?

    Generates (or reuses) CMS-like and ATLAS-like samples; pre-trains federated, local, centralized, not at all.

    Fine-tunes each on ttH vs tt per labelled-event count; prints the table, draws plots, logs it all to MLflow."""
    import time

    from rich.console import Console

    from crossfed import demo as demo_lib
    from crossfed import report as rep
    from crossfed.atomic import write_text_atomically
    from crossfed.config import load_config

    console = Console(soft_wrap=True)  # paths and commands stay whole, copyable
    started = time.perf_counter()
    workdir = workdir.resolve()
    if config is not None:
        run_config = load_config(config)
        if tracking_uri:
            run_config.tracking.uri = tracking_uri
        scale = "custom"
    else:
        study = demo_lib.demo_scale(scale)
        files = demo_lib.make_samples(study, workdir / "data", seed=0, console=console)
        uri = tracking_uri or rep.default_tracking_uri()
        run_config = demo_lib.demo_config(study, files, workdir, uri)
        config = workdir / "run.yaml"  # on disk, so that its models can be fine-tuned with it again
        write_text_atomically(config, run_config.to_yaml())
    from crossfed.federation.rounds import FederationInterrupted

    try:
        result = demo_lib.run_demo(run_config, plots_dir=workdir / "plots", scale_name=scale, console=console)
    except FederationInterrupted as stopped:  # the demo has no --resume: say so rather than offer one
        Console(stderr=True, highlight=False).print(
            f"demo interrupted in pre-training run {stopped.run_id} after round {stopped.completed_round}; "
            "run the demo again to start over (generated samples are reused)", markup=False)
        raise typer.Exit(stopped.exit_code) from None
    _print_report(console, result, run_config.tracking.uri or rep.default_tracking_uri())
    _print_models(console, result, config)
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s")


def _print_models(console, result, config: Path) -> None:
    """Each pre-trained model, as the `crossfed finetune` command that starts from it (`-c RUN_ID` takes the
    run's model for -e; the file at this site is the same model)."""
    console.print("pre-trained models (the command that fine-tunes from each; -c also takes runs:/RUN_ID/model, "
                  "a registered models:/NAME/VERSION, or the file):", highlight=False)
    for label, (run_id, path) in result.models.items():
        experiment = label.split("/", 1)[1]
        console.print(f"  {label:18s} crossfed finetune {config} -e {experiment} -c {run_id}   (file: {path})",
                      highlight=False, markup=False)


def report(
    run: str = typer.Argument(..., help="Demo run: MLflow run id or run name (newest of that name)."),
    out: Path = typer.Option(None, "--out", help="Folder for the PNG plots (default: crossfed-report/RUN_ID)."),
    tracking_uri: str = typer.Option(
        None, "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)."
    ),
) -> None:
    """Rebuild a demo's results table and plots from the MLflow store alone."""
    from rich.console import Console

    from crossfed import report as rep

    uri = tracking_uri or rep.default_tracking_uri()
    _print_report(Console(soft_wrap=True), rep.build_report(run, out, uri), uri)


def _print_report(console, result, tracking_uri: str) -> None:
    from crossfed import report as rep

    console.print(rep.results_table(result))
    for path in result.plots:
        console.print(f"plot: {path}")
    console.print(f"MLflow run {result.parent_run_id}; to browse it:\n{rep.ui_hint(tracking_uri, result)}", highlight=False)
    console.print(f"rebuild this report: crossfed report {result.parent_run_id} --tracking-uri {tracking_uri}",
                  highlight=False)
