"""A client's node's system metrics (CPU, memory, disk, network; GPU with pynvml, the `gpu` extra) logged
into the run as system/<client>/..., by MLflow's system-metrics monitor in a process of its own at the
lowest CPU priority (nice 19).

Why a process: importing MLflow and its SQL store costs 2-3 s of CPU. In a thread of the client's actor it
ran beside the first round and took that time from its training (`kishimoto-11m`, 2 clients on 2 cores:
round 1 trained for 7.2-8.5 s with it, 5.3-5.8 s without). At nice 19 the monitor only uses CPU the
training leaves idle: on a node with spare cores it starts at once, on a busy one a few rounds later. A
process, not a low-priority thread, because a thread would hold the client's GIL while starved of CPU.
Its samples are the node's, whichever process takes them.

The process ends when its stdin closes: the client closed it (`stop`) or died. It then logs the samples
taken since its last log (MLflow's monitor drops them, so a run shorter than one sampling interval would
have no system metrics at all) and exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 120.0  # at the end the node is idle: the import, if not done yet, takes a few seconds


def start(run_id: str, tracking_uri: str, client: str) -> subprocess.Popen:
    """Start monitoring this node for `client` into the MLflow run `run_id`; returns the process."""
    env = dict(os.environ)  # Ray's worker environment: the same Python, MLflow's variables
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", __name__, run_id, tracking_uri, client], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def stop(process: subprocess.Popen, client: str) -> None:
    """Let the monitor log what it has and end; a failure is one warning, never the run's error."""
    try:
        _, errors = process.communicate(timeout=STOP_TIMEOUT_S)  # closes its stdin first
    except subprocess.TimeoutExpired:
        process.kill()
        _, errors = process.communicate()
        log.warning("client %s: the system-metrics monitor did not end within %.0f s; stopped", client,
                    STOP_TIMEOUT_S)
        return
    if process.returncode != 0:
        reason = errors.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {process.returncode}"]
        log.warning("client %s logs no system metrics: %s", client, reason[0])


def _monitor(run_id: str, tracking_uri: str, client: str) -> None:
    os.nice(19)
    from mlflow import MlflowClient
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    logging.getLogger("mlflow").setLevel(logging.ERROR)  # no start/stop lines on the worker's stderr
    # A resumed run's or a rejoined client's samples continue after the steps the run holds (MLflow's
    # resume counts every client's); a client's first samples start at step 0.
    logged = MlflowClient(tracking_uri).get_run(run_id).data.metrics
    resume = any(key.startswith(f"system/{client}/") for key in logged)
    monitor = SystemMetricsMonitor(run_id, node_id=client, tracking_uri=tracking_uri, resume_logging=resume)
    monitor.start()  # takes a first sample at once
    sys.stdin.buffer.read()  # until the client closes the pipe or dies
    monitor.finish()
    with contextlib.suppress(Exception):  # the run may be gone; system metrics are not worth an error
        if unlogged := monitor.aggregate_metrics():
            monitor.publish_metrics(unlogged)
            monitor.mlflow_logger.flush()


if __name__ == "__main__":
    try:
        _monitor(*sys.argv[1:])
    except Exception as err:  # noqa: BLE001 - one line for the client's warning
        print(f"{type(err).__name__}: {err}".splitlines()[0], file=sys.stderr)
        sys.exit(1)
