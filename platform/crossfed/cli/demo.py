"""`crossfed study` (the cross-experiment study from a config), `crossfed demo` (the same study, small and
built in) and `crossfed report` (a study's results, rebuilt from MLflow)."""

from __future__ import annotations

from pathlib import Path

import typer

# crossfed.study.config.preset_names(), listed here to keep --help fast
PRESETS = ["ci", "demo", "study", "large"]
DEMO_SCALES = {"default": "demo", "ci": "ci"}


def register(app: typer.Typer) -> None:
    app.command("study")(study)
    app.command("demo")(demo)
    app.command("report")(report)


WORKDIR_HELP = "Generated samples (reused on rerun), tensor cache, checkpoints, tables, plots and logs/ (the log file)."
URI_HELP = "MLflow tracking URI (default: the config's, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)."


def study(
    config: str = typer.Argument(..., help=f"Study config (YAML), or a built-in one: {', '.join(PRESETS)}."),
    workdir: Path = typer.Option(Path(".crossfed/study"), "--workdir", help=WORKDIR_HELP),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help=URI_HELP),
    check: bool = typer.Option(False, "--check", help="Only validate the config and print the plan."),
) -> None:
    """Does training together make each experiment's model better? Equal budgets, repeats, uncertainties.

    Generates (or reuses) each experiment's events; pre-trains federated, local and centralized with several seeds per scenario (symmetric, one experiment data-poor, the pre-training scaling curve).

    Fine-tunes every model and scratch on each task over several labelled subsets; prints mean ± SE tables, paired differences with 95 % intervals and verdicts; logs it all to MLflow with tables and plots (docs/study.md)."""
    from crossfed.study.config import load_study

    _run(load_study(config), workdir, tracking_uri, check)


def demo(
    scale: str = typer.Option("default", "--scale", help="default (about 10 min on 2 cores, generation "
                                                         "included) or ci (a few minutes; numbers are noise)."),
    workdir: Path = typer.Option(Path(".crossfed/demo"), "--workdir", help=WORKDIR_HELP),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help=URI_HELP),
) -> None:
    """The study, small: one seed per method, indicative numbers. For an answer: crossfed study study.

    Generates (or reuses) CMS-like and ATLAS-like samples; pre-trains federated, local and centralized with equal budgets.

    Fine-tunes them and scratch on ttH vs tt over a few labelled subsets; prints the table with ± and logs it to MLflow."""
    from crossfed.errors import CrossfedError
    from crossfed.study.config import load_study

    if scale not in DEMO_SCALES:
        raise CrossfedError(f"--scale {scale!r}: choose one of {', '.join(DEMO_SCALES)} "
                            f"(the larger studies: crossfed study study | large)")
    _run(load_study(DEMO_SCALES[scale]), workdir, tracking_uri, check=False)


def _console():
    """Paths and commands stay whole (copyable); written to a file or a pipe the tables get 160 columns, not
    the 80 a terminal-less console assumes, so that a logged study's tables stay readable."""
    import sys

    from rich.console import Console

    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _run(study_config, workdir: Path, tracking_uri: str | None, check: bool) -> None:
    from crossfed.study import plan
    from crossfed.study import report as rep
    from crossfed.study.runner import _plan_summary, run_study
    from crossfed.tracking import tracking_uri as tracking_uri_rule

    from crossfed import logs

    logs.move_to(workdir / "logs")
    console = _console()
    if check:
        console.print(_plan_summary(study_config, plan.setups(study_config)))
        for scenario in plan.scenarios(study_config):
            console.print(f"  {scenario.name}: {scenario.describe()}; methods {', '.join(scenario.methods)}")
        return
    uri = tracking_uri or tracking_uri_rule(study_config.tracking)
    result = run_study(study_config, workdir=workdir, tracking_uri=uri, console=console)
    rep.print_report(console, result, uri)


def report(
    run: str = typer.Argument(..., help="Study run: MLflow run id or run name (newest of that name)."),
    out: Path = typer.Option(None, "--out", help="Folder for tables and plots (default: crossfed-report/RUN_ID)."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help=URI_HELP),
) -> None:
    """Rebuild a study's (or demo's) tables, verdicts and plots from the MLflow store alone."""
    from crossfed.study import report as rep
    from crossfed.tracking import tracking_uri as tracking_uri_rule

    uri = tracking_uri or tracking_uri_rule()
    rep.print_report(_console(), rep.build_report(run, out, uri), uri)
