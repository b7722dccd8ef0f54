"""The CLI's last line of defence: a bug is one line and exit 1, never "interrupted" (130, for signals only)."""

from __future__ import annotations

import subprocess
import sys

# A command that fails the way reading an empty file with pickle or torch.load does: click turns an
# EOFError raised inside a command into Abort, as it does for Ctrl-C.
SCRIPT = """
import sys
import crossfed.cli as cli

@cli.app.command("fail-with")
def fail_with(kind: str) -> None:
    raise {"eof": EOFError("Ran out of input")}[kind]

sys.argv = ["crossfed", "fail-with", sys.argv[1]]
cli.main()
"""


def run(kind: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, kind], capture_output=True, text=True, timeout=120)


def test_an_eof_error_is_an_internal_error_not_an_interruption():
    done = run("eof")
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: internal error: EOFError: Ran out of input (run with --debug for the traceback)"]



def test_an_unknown_option_is_a_usage_error_exit_2_not_an_internal_error():
    done = subprocess.run([sys.executable, "-m", "crossfed", "validate", "run.yaml", "--bogus"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "No such option: --bogus" in done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
