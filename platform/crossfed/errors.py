"""User-facing errors.

Everything a user can cause (a bad file, a bad config key, a NaN) is raised as a `CrossfedError`:
the CLI prints its message as one line and exits with code 2, without a traceback unless `--debug`.
"""

import difflib
from collections.abc import Iterable


class CrossfedError(Exception):
    """An error caused by the user's input; its message names what is wrong and where."""

    exit_code = 2


def did_you_mean(word: str, choices: Iterable[str], within: str = "") -> str:
    """" (did you mean 'x'?)" naming the closest of `choices` to a misspelt `word`, or "" if none is close.

    `within` is put before the suggestion: the section a misspelt key was looked up in
    (`did_you_mean("lrr", ["lr"], within="federation.strategy.")` suggests 'federation.strategy.lr').
    """
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {within + close[0]!r}?)" if close else ""


def innermost_cause(err: BaseException) -> BaseException:
    """The exception at the bottom of a chain of RayTaskErrors (each may wrap another actor's)."""
    while getattr(err, "cause", None) is not None:
        err = err.cause
    return err


def one_line_reason(err: BaseException) -> str:
    """Why something failed, in one line: a CrossfedError's message, else the innermost exception's type
    and the last line of its message (a run's description, a failed trial's row)."""
    cause = innermost_cause(err)
    if isinstance(cause, CrossfedError):
        return str(cause)
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"
