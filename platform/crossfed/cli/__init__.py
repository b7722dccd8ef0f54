"""The `crossfed` command line.

Each command group lives in its own module with a `register(app)` function; heavy libraries (torch,
Ray, uproot) are imported inside the commands so that `crossfed --help` stays instant.
User errors (`CrossfedError`) print one line and exit 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys

import typer

from crossfed import __version__
from crossfed.errors import CrossfedError

app = typer.Typer(
    name="crossfed",
    help="Train one foundation model across particle-physics experiments by federated learning on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES = ["config", "data", "generate", "model", "train", "score", "federate", "demo", "sweep", "submit"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"crossfed {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", envvar="CROSSFED_VERBOSE",
        help="Also print the libraries' log lines (MLflow, Ray and its workers, DeepSpeed, warnings), which "
             "always go to the log file: WORKDIR/logs/ for study and demo, else .crossfed/logs/ here. "
             "Submitted jobs set it (CROSSFED_VERBOSE=1): their output is what `crossfed jobs logs` shows."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """crossfed: federated foundation models for HEP experiments."""
    from crossfed import logs

    logs.setup(ctx.invoked_subcommand or "crossfed", verbose)


for _name in COMMAND_MODULES:
    importlib.import_module(f"crossfed.cli.{_name}").register(app)


def main() -> None:
    debug = "--debug" in sys.argv
    try:
        # standalone_mode=False hands typer.Exit(n) back as a return value instead of exiting.
        returned = app(standalone_mode=False)
        sys.exit(returned if isinstance(returned, int) else 0)
    except CrossfedError as err:
        if debug:
            raise
        _print_error(str(err))
        sys.exit(err.exit_code)
    except (typer.Exit, SystemExit) as done:
        sys.exit(getattr(done, "exit_code", getattr(done, "code", 0)))
    except (typer.Abort, KeyboardInterrupt) as err:
        # click turns an EOFError raised anywhere in a command (reading an empty file, say) into Abort too:
        # only a real Ctrl-C is an interruption.
        if isinstance(err, typer.Abort) and isinstance(err.__cause__, EOFError):
            _internal_error(err.__cause__, debug)
        _print_error("interrupted")
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - the last line of defence against raw tracebacks
        # A usage error (an unknown option, a missing argument): click's own message and exit code (2).
        # Typer >= 0.29 raises its vendored copy of click's exceptions, so the class is matched by name.
        if any(cls.__name__ == "ClickException" for cls in type(err).__mro__):
            err.show()
            sys.exit(err.exit_code)
        _internal_error(err, debug)


def _internal_error(err: BaseException, debug: bool) -> None:
    """A bug, not a user error: one line (the innermost cause's first line, not a remote traceback), exit 1."""
    if debug:
        raise err
    from crossfed.errors import innermost_cause

    cause = innermost_cause(err)
    first = (str(cause).strip().splitlines() or [""])[0]
    _print_error(f"internal error: {type(cause).__name__}: {first} (run with --debug for the traceback)")
    sys.exit(1)


def _print_error(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    # escape: a message's own brackets ("pip install 'crossfed[s3]'") are text, not rich markup
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}", markup=True)
