"""`connect_ray`: how every crossfed command finds its Ray.

One rule for all of them (pretrain, sweep, demo, the federation engine itself):
1. a Ray already initialised in this process is used as it is (a test's cluster, an outer command's);
2. else the given address (`--address`), else RAY_ADDRESS: join that cluster;
3. else a new embedded Ray that lives as long as the command. Started with address "local", because a
   bare `ray.init()` would join whatever Ray happens to run on the machine (another user's, a test's).
Whatever this call connected to or started, it disconnects from or shuts down on exit. An address that is
malformed or does not answer is a one-line error at once (ray.init itself would retry for a minute).

An embedded Ray must not outlive its command even when the command is killed with SIGKILL (no `finally`
runs then). Ray's own fate sharing stops the GCS, the raylet and the workers, but not the raylet's two
agents: each notices the raylet's death, then blocks for good publishing that error to the GCS, which is
already gone, and from then on ignores SIGTERM (the dashboard's module processes were seen left behind
too). Upstream: ray-project/ray#52385 (agents outliving their raylet) and #59162 (the runtime-env agent
ignoring SIGTERM; Ray's own tests SIGKILL it instead). The workaround is theirs, SIGKILL: a watchdog
process started beside the embedded Ray waits for the command to end (its stdin pipe closes, however the
command ended), then SIGKILLs every process still carrying that Ray session's folder on its command line
or among its open files (every process of the session writes its logs there) — nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from crossfed.errors import CrossfedError

REACH_TIMEOUT_S = 5.0

# ray.init options that concern this process's connection, valid whether it joins a cluster or starts
# one; every other option (num_cpus, include_dashboard, ...) shapes a new Ray and is only used for one.
CONNECTION_OPTIONS = {"log_to_driver", "logging_level", "namespace", "runtime_env"}
WATCHDOG_GRACE_S = 3.0  # Ray's own fate sharing stops the GCS, raylet and workers first


@contextlib.contextmanager
def connect_ray(address: str | None = None, **options) -> Iterator[None]:
    """Use an initialised Ray, else join `address` or RAY_ADDRESS, else start an embedded local Ray.

    `options` go to `ray.init`; Ray's own log lines are kept to warnings unless `logging_level` says
    otherwise. An embedded Ray starts without its dashboard unless `include_dashboard=True`: it lives for
    one command, and the dashboard's processes cost a second and a core at start-up (for a dashboard,
    `ray start --head` and `--address`). Options that only a new Ray accepts are dropped when joining a
    cluster. Under a CLI command (`crossfed.logs`) Ray's lines and its workers' output go to the command's
    log file, not the console, unless --verbose; crossfed's warnings from workers are restated on the
    console.
    """
    import ray

    from crossfed import logs

    if ray.is_initialized():
        yield
        return
    options.setdefault("logging_level", logging.WARNING)
    for key, value in logs.ray_options().items():  # under the CLI: workers mark crossfed's warnings
        options.setdefault(key, value)
    logs.adopt_library_loggers()  # Ray's own warnings (token authentication, ...) to the log file
    address = address or os.environ.get("RAY_ADDRESS")
    watchdog = None
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, **{k: v for k, v in options.items() if k in CONNECTION_OPTIONS})
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise CrossfedError(f"cannot connect to the Ray cluster at {address}: {str(err).splitlines()[0]}") from None
    else:
        options.setdefault("include_dashboard", False)
        ray.init(address="local", **options)
        watchdog = start_watchdog(ray._private.worker._global_node.get_session_dir_path())
    if logs.is_set_up() and options.get("log_to_driver", True):
        logs.route_worker_output()
    try:
        yield
    finally:
        ray.shutdown()
        if watchdog is not None:
            watchdog.stdin.close()  # the watchdog sweeps up after the shutdown, and exits


def _check_reachable(address: str) -> None:
    """HOST:PORT or ray://HOST:PORT must accept a TCP connection ("auto" and "local" are Ray's own words)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise CrossfedError(f"Ray address {address!r}: expected HOST:PORT (the head's GCS, e.g. 10.0.0.1:6379), "
                            "ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as err:
        raise CrossfedError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}") from None



def start_watchdog(session_dir: str) -> subprocess.Popen:
    """A process that, once this one has ended, SIGKILLs what is left of the embedded Ray session
    `session_dir` (its folder, /tmp/ray/session_<time>_<pid>).

    It runs in a session of its own (a Ctrl-C in the terminal does not reach it) and without Ray's
    variables, so that it is not itself taken for a process of that Ray.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent.parent), env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", "crossfed.ray_session", session_dir], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)


def session_processes(session_dir: str, *, spare: tuple[int, ...] = ()) -> list[int]:
    """Pids of this user's processes that belong to the Ray session `session_dir`: it is on their
    command line (GCS, raylet, monitors) or they hold a file in it open (agents, workers: their logs).
    Read from /proc; Ray rewrites its processes' titles, so neither names nor environments tell. This
    process and the pids in `spare` are left out."""
    inside = session_dir.rstrip("/") + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), *spare):
            continue
        with contextlib.suppress(OSError):
            if _refers_to(entry, session_dir, inside):
                found.append(int(entry.name))
    return found


def _refers_to(process: Path, session_dir: str, inside: str) -> bool:
    if session_dir.encode() in (process / "cmdline").read_bytes():
        return True
    for fd in (process / "fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith(inside):
                return True
    return False


def _watch(session_dir: str) -> None:
    """The watchdog's body. The command that started it is spared: after a clean shutdown it lives on
    (a test, the demo) and may still hold a log file of the session open."""
    command = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdin.buffer.read()  # returns when the command has closed the pipe or died
    time.sleep(WATCHDOG_GRACE_S)
    for pid in session_processes(session_dir, spare=(command,)):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    _watch(sys.argv[1])
