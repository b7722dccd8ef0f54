"""A client's node samples (`NodeSampler`, real psutil) and their logging into a real MLflow store."""

from __future__ import annotations

import math
import time

import mlflow
import pytest

from crossfed.federation.system_metrics import NodeSampler, SystemMetricsLog


def mlflow_monitor_names() -> set[str]:
    """The names MLflow's own system-metrics monitor logs without a GPU: the UI's tab groups by them."""
    from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
    from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
    from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor

    names = set()
    for monitor in (CPUMonitor(), DiskMonitor(), NetworkMonitor()):
        monitor.collect_metrics()
        names |= set(monitor.aggregate_metrics())
    return names


def test_the_sampler_takes_mlflows_metrics_every_interval_and_once_more_when_stopped():
    sampler = NodeSampler(interval_s=0.05)
    time.sleep(0.4)
    taken = sampler.take()
    assert len(taken) >= 3, taken
    for timestamp, values in taken:
        assert set(values) == mlflow_monitor_names(), sorted(values)
        assert all(math.isfinite(v) for v in values.values())
        assert 0 < values["system_memory_usage_percentage"] <= 100
        assert abs(timestamp / 1000 - time.time()) < 5
    assert [t for t, _ in taken] == sorted(t for t, _ in taken)
    last = sampler.stop()
    assert last and set(last[-1][1]) == mlflow_monitor_names()
    assert not sampler.thread.is_alive()
    time.sleep(0.15)
    assert sampler.take() == []  # nothing sampled after the stop


@pytest.fixture
def run_id(tmp_path):
    """A run in a store of its own (not through `mlflow.start_run`, whose active experiment may be an
    earlier test's), which SystemMetricsLog logs to as the tracking URI this process is set to."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    return client.create_run(client.create_experiment("system-metrics")).info.run_id


def test_samples_are_logged_per_client_with_their_times_and_steps_counting_on(run_id):
    def samples(first_ms: int, n: int) -> list:
        return [(first_ms + 1000 * i, {"cpu_utilization_percentage": float(i), "disk_usage_percentage": 50.0})
                for i in range(n)]

    system = SystemMetricsLog(run_id)
    system.log({"cms": samples(1_000_000, 2), "atlas": samples(2_000_000, 1)})
    system.log({"cms": samples(1_010_000, 600)})  # 1200 values: more than MLflow takes in one batch
    SystemMetricsLog(run_id).log({"cms": samples(1_700_000, 1), "atlas": samples(2_100_000, 1)})  # a resumed run

    client = mlflow.MlflowClient()
    cms = client.get_metric_history(run_id, "system/cms/cpu_utilization_percentage")
    assert sorted(m.step for m in cms) == list(range(603))
    by_step = {m.step: m for m in cms}
    assert (by_step[1].timestamp, by_step[1].value) == (1_001_000, 1.0)
    assert (by_step[2].timestamp, by_step[602].timestamp) == (1_010_000, 1_700_000)
    assert len(client.get_metric_history(run_id, "system/cms/disk_usage_percentage")) == 603
    atlas = client.get_metric_history(run_id, "system/atlas/cpu_utilization_percentage")
    assert sorted((m.step, m.timestamp) for m in atlas) == [(0, 2_000_000), (1, 2_100_000)]
