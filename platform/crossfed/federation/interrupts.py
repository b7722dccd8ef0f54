"""SIGINT and SIGTERM stop a federation only while its process waits on Ray, never half-way through a write.

A write to a SQLite MLflow store that a KeyboardInterrupt cuts short leaks its connection with the
database's write lock held: marking the run KILLED afterwards waits out SQLite's busy timeout (20 s) and
fails with "database is locked". So, inside `interrupted_by_signals()`, a signal that arrives while the
main thread waits on Ray (`waiting_on_ray`, where a run spends nearly all its time) raises KeyboardInterrupt
at once; one that arrives anywhere else (logging a round, making the run) is held until the next wait
begins, or until the block ends, where it is delivered to the handler the block restores.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _MainThread:
    active = False  # inside `interrupted_by_signals` (main thread only: Python runs handlers there)
    waiting = False  # inside `waiting_on_ray`
    held: int | None = None  # a signal that arrived while not waiting


def _handle(signum, frame):
    if _MainThread.waiting:
        raise KeyboardInterrupt(signal.Signals(signum).name)
    _MainThread.held = signum


@contextlib.contextmanager
def interrupted_by_signals():
    """SIGINT and SIGTERM raise KeyboardInterrupt, both alike (a run ends KILLED and resumable either way),
    at the points the module docstring names; one the process ignores is left ignored. Only in the main
    thread, where Python delivers signals (a Tune trial runs in another): elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread() or _MainThread.active:
        yield
        return
    # An ignored signal stays ignored (`nohup`, a background job's SIGINT), as Python leaves it at start-up.
    before = {signum: signal.signal(signum, _handle) for signum in _SIGNALS  # ray.init set SIGTERM's
              if signal.getsignal(signum) is not signal.SIG_IGN}
    _MainThread.active, _MainThread.held = True, None
    ended_cleanly = False
    try:
        yield
        ended_cleanly = True
    finally:
        held = _MainThread.held
        _MainThread.active, _MainThread.held = False, None
        for signum, handler in before.items():
            signal.signal(signum, handler)
        # One held while the block failed or was interrupted anyway asked for what is happening already.
        if ended_cleanly and held is not None:
            signal.raise_signal(held)


@contextlib.contextmanager
def waiting_on_ray():
    """The main thread waits on Ray here: a signal held since the last wait is raised now, a new one at once."""
    if not _MainThread.active or threading.current_thread() is not threading.main_thread():
        yield
        return
    _MainThread.waiting = True  # before looking at `held`: a signal in between is raised, not lost
    try:
        if _MainThread.held is not None:
            signum, _MainThread.held = _MainThread.held, None
            raise KeyboardInterrupt(signal.Signals(signum).name)
        yield
    finally:
        _MainThread.waiting = False
