"""User-facing errors.

Everything a user can cause (a bad file, a bad config key, a NaN) is raised as a `CrossfedError`:
the CLI prints its message as one line and exits with code 2, without a traceback unless `--debug`.
"""


class CrossfedError(Exception):
    """An error caused by the user's input; its message names what is wrong and where."""

    exit_code = 2
