"""A client's system-metrics monitor: its own process, at the lowest CPU priority, logging into the run."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from crossfed.federation import system_monitor


@pytest.fixture
def run(tmp_path) -> tuple[str, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment("monitor"))
    return run.info.run_id, uri


def _niceness_once_set(pid: int, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while (niceness := os.getpriority(os.PRIO_PROCESS, pid)) == os.getpriority(os.PRIO_PROCESS, 0):
        assert time.monotonic() < deadline, "the monitor never lowered its priority"
        time.sleep(0.05)
    return niceness


def test_the_monitor_runs_at_the_lowest_priority_and_logs_the_node_into_the_run_when_stopped(run):
    run_id, uri = run
    process = system_monitor.start(run_id, uri, "cms")
    assert _niceness_once_set(process.pid) == 19
    system_monitor.stop(process, "cms")
    assert process.returncode == 0
    metrics = mlflow.MlflowClient(uri).get_run(run_id).data.metrics
    # stopped before one sampling interval (10 s): the first sample is logged all the same
    assert metrics["system/cms/cpu_utilization_percentage"] >= 0
    assert metrics["system/cms/system_memory_usage_megabytes"] > 0
    # a second monitor of the same client (a rejoin, a resume) goes on after the steps logged
    second = system_monitor.start(run_id, uri, "cms")
    system_monitor.stop(second, "cms")
    steps = [m.step for m in mlflow.MlflowClient(uri).get_metric_history(run_id, "system/cms/cpu_utilization_percentage")]
    assert steps == [0, 1]


def test_a_monitor_that_cannot_log_is_one_warning_naming_the_client(run, caplog):
    _, uri = run
    process = system_monitor.start("0" * 32, uri, "atlas")  # no such run
    with caplog.at_level(logging.WARNING, logger="crossfed.federation.system_monitor"):
        system_monitor.stop(process, "atlas")
    assert process.returncode == 1
    [record] = caplog.records
    assert record.getMessage().startswith("client atlas logs no system metrics: ")
    assert "Traceback" not in record.getMessage() and "0" * 32 in record.getMessage()


def test_the_monitor_ends_when_its_client_is_killed(run):
    """A client killed with SIGKILL closes nothing itself: the kernel closes the pipe, and the monitor logs
    what it sampled and ends."""
    run_id, uri = run
    client = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from crossfed.federation import system_monitor; "
         f"print(system_monitor.start({run_id!r}, {uri!r}, 'cms').pid, flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    monitor = int(client.stdout.readline())
    _niceness_once_set(monitor)  # started
    client.send_signal(signal.SIGKILL)
    client.wait()
    deadline = time.monotonic() + system_monitor.STOP_TIMEOUT_S
    while Path(f"/proc/{monitor}").exists() and Path(f"/proc/{monitor}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the monitor outlived its client"
        time.sleep(0.1)
    assert "system/cms/cpu_utilization_percentage" in mlflow.MlflowClient(uri).get_run(run_id).data.metrics
