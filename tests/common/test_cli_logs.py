"""A quiet console: what libraries log goes to the command's log file and `--verbose` echoes it; crossfed's
own warnings are restated in one line. (The study's test checks the same for Ray's lines and its workers'.)"""

from __future__ import annotations

import subprocess
import sys

MLFLOW_LINE = "Creating initial MLflow database tables"
# A command that makes a new MLflow store (MLflow and alembic log INFO lines) and warns twice: from
# crossfed's own code (a warning raised in a crossfed module, as the data reader's are) and from a library.
SCRIPT = """
import sys, warnings
import crossfed.cli as cli
import crossfed.data.cache

STORE, EXPERIMENT = sys.argv[1:3]

@cli.app.command("noisy")
def noisy() -> None:
    import mlflow

    mlflow.set_tracking_uri(STORE)
    mlflow.set_experiment(EXPERIMENT)
    exec(compile("import warnings; warnings.warn('2 of 9 events dropped', RuntimeWarning)",
                 crossfed.data.cache.__file__, "exec"))
    warnings.warn("a library's deprecation", DeprecationWarning)
    print("crossfed's own line")

sys.argv = ["crossfed", *sys.argv[3:], "noisy"]
cli.main()
"""


def noisy(experiment, *options, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "always", "-c", SCRIPT, f"sqlite:///{cwd / 'mlflow.db'}", experiment,
                           *options], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_library_lines_go_to_the_log_file_crossfed_warnings_to_the_console_and_verbose_shows_all(tmp_path):
    quiet = noisy("first", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.splitlines() == ["crossfed's own line"]
    assert quiet.stderr.splitlines() == ["warning: 2 of 9 events dropped"]
    (log_file,) = (tmp_path / ".crossfed" / "logs").glob("noisy-*.log")
    logged = log_file.read_text()
    assert MLFLOW_LINE in logged and "alembic" in logged and "a library's deprecation" in logged

    verbose = noisy("second", "--verbose", cwd=tmp_path)  # the store exists: MLflow says it makes the experiment
    assert verbose.returncode == 0, verbose.stderr
    for line in ("Experiment with name 'second' does not exist", "a library's deprecation", "2 of 9 events dropped"):
        assert line in verbose.stderr, line
