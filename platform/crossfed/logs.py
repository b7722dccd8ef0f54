"""What a crossfed command prints, and where everything else goes.

The console shows crossfed's own lines — tables, progress bars, errors — and its warnings, each restated
in one line (`warning: ...`), also when it was raised in a Ray worker. What libraries log (MLflow,
alembic, Ray and its workers' output, DeepSpeed, CodeCarbon, Python warnings) goes to the command's log
file: `<workdir>/logs/` for `crossfed study` and `demo`, else `.crossfed/logs/` in the working directory.
`crossfed --verbose` echoes all of it on the console as well.

Only the CLI calls `setup`; used as a library, crossfed leaves logging as the application set it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path

DEFAULT_FOLDER = Path(".crossfed/logs")
# A crossfed warning raised in a Ray worker is printed with this mark, for the driver to restate it.
WORKER_MARK = "[crossfed warning] "
_PACKAGE = str(Path(__file__).parent)
_state: dict = {"verbose": None, "file": None}  # None: not set up (crossfed used as a library)


def setup(command: str, verbose: bool, folder: Path = DEFAULT_FOLDER) -> None:
    """Route logging for one CLI command (`crossfed <command>`); the file is made at the first line."""
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # its lines then reach the root logger
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_file = _LogFile(Path(folder) / f"{command}-{stamp}-{os.getpid()}.log", delay=True)
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = logging.StreamHandler(sys.stderr)
    if verbose:
        console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:  # crossfed's own warnings only, in its words
        console.setLevel(logging.WARNING)
        console.addFilter(lambda record: record.name.startswith("crossfed"))
        console.setFormatter(logging.Formatter("warning: %(message)s"))
    root.handlers = [log_file, console]
    _state.update(verbose=verbose, file=log_file)
    warnings.showwarning = _show_warning
    adopt_library_loggers()


class _LogFile(logging.FileHandler):
    """Made with its folder, at the first line logged (a command that logs nothing leaves no file)."""

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def move_to(folder: Path) -> None:
    """Write the log file in `folder` instead (a study's workdir); before anything was logged."""
    handler = _state["file"]
    if handler is not None:
        handler.close()
        handler.baseFilename = str((Path(folder) / Path(handler.baseFilename).name).absolute())


def log_file() -> Path | None:
    return None if _state["file"] is None else Path(_state["file"].baseFilename)


def is_set_up() -> bool:
    """True under a CLI command (`setup` was called)."""
    return _state["verbose"] is not None


def adopt_library_loggers() -> None:
    """Libraries that print through a console handler of their own (Ray, DeepSpeed, ...) log through the
    root logger instead, i.e. to the log file. Called again after importing such a library."""
    if _state["verbose"] is None:
        return
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and not name.startswith("crossfed"):
            consoles = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
                        and not isinstance(h, logging.FileHandler)]
            for handler in consoles:
                logger.removeHandler(handler)
            if consoles:
                logger.propagate = True


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """crossfed's warnings (raised in its own code) in one line; every other library's to the log file."""
    if str(filename).startswith(_PACKAGE):
        logging.getLogger("crossfed.warnings").warning("%s", message)
    else:
        logging.getLogger("py.warnings").warning("%s", warnings.formatwarning(message, category, filename, lineno, line).rstrip())


# -- Ray workers ------------------------------------------------------------------------------------------

def ray_options() -> dict:
    """`ray.init` options for a command: workers whose crossfed warnings carry WORKER_MARK."""
    if _state["verbose"] is None:
        return {}
    return {"runtime_env": {"worker_process_setup_hook": "crossfed.logs.setup_worker"}}


def setup_worker() -> None:
    """In each Ray worker (`worker_process_setup_hook`): crossfed's log warnings and Python warnings are
    printed with WORKER_MARK, so that the command restates them on its console."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(WORKER_MARK + "%(message)s"))
    crossfed_logger = logging.getLogger("crossfed")
    crossfed_logger.addHandler(handler)
    crossfed_logger.propagate = False
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(_PACKAGE):
            print(f"{WORKER_MARK}{message}", file=sys.stderr, flush=True)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def route_worker_output() -> None:
    """After `ray.init(log_to_driver=True)` under a command: the workers' output goes to the log file (and
    the console with --verbose); their crossfed warnings (marked) to the console, each message once."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher

    workers = logging.getLogger("crossfed.ray_workers")  # a crossfed logger: only its warnings reach the console
    said: set[str] = set()

    def handle(batch: dict) -> None:
        who = f"({batch.get('actor_name') or batch.get('task_name') or 'worker'} pid={batch.get('pid')})"
        for line in batch.get("lines", []):
            if line.startswith(WORKER_MARK):
                message = line[len(WORKER_MARK):]
                if message not in said:
                    said.add(message)
                    workers.warning("%s", message)
            else:
                workers.info("%s %s", who, line)

    for name in ("ray_print_logs", "crossfed_logs"):  # a second Ray in one command: still one handler
        global_worker_stdstream_dispatcher.remove_handler(name)
    global_worker_stdstream_dispatcher.add_handler("crossfed_logs", handle)
