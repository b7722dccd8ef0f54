"""Each client's node's system metrics: sampled in the client's actor, logged by the process that owns the run.

A client samples its node every MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (MLflow's variable and
default, 10; set it where the Ray workers start) under the names MLflow's system-metrics monitor gives
them (CPU, memory, disk, network; each GPU where NVML answers), and once more when it stops, so that even
a run shorter than one interval has them. The process that runs the federation fetches the samples after
every round and logs them as `system/<client>/<name>`, step = the client's sample number, timestamp = when
it was taken: what MLflow's monitor would have logged, shown in the run's "System metrics" tab.

Why not MLflow's monitor inside the actor: importing MLflow and its SQL store there costs 3-4 s of CPU on
cores that train (round 1 of kishimoto-11m trained 7.2-8.5 s instead of 5.3-5.8 s on 2 cores), and every
site's nodes would need the tracking store's address and credentials. Samples are a few hundred bytes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

from crossfed import extras
from crossfed.errors import CrossfedError

log = logging.getLogger(__name__)

Sample = tuple[int, dict[str, float]]  # (milliseconds since the epoch, metric name -> value)
DEFAULT_INTERVAL_S = 10.0  # MLflow's


def sampling_interval_s() -> float:
    return float(os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL") or DEFAULT_INTERVAL_S)


class NodeSampler:
    """Samples this node in a daemon thread from construction on; `take()` hands over what it has."""

    def __init__(self, interval_s: float | None = None):
        import psutil

        self.interval_s = interval_s or sampling_interval_s()
        network = psutil.net_io_counters()
        self.network_start = (network.bytes_recv, network.bytes_sent)  # reported as traffic since the start
        psutil.cpu_percent()  # opens the first CPU window: a first call always returns 0.0
        self.gpus = _nvml_handles()
        self.samples: list[Sample] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample_until_stopped, name="system-metrics", daemon=True)
        self.thread.start()

    def take(self) -> list[Sample]:
        with self.lock:
            taken, self.samples = self.samples, []
        return taken

    def stop(self) -> list[Sample]:
        """End sampling with one last sample; everything not taken yet."""
        self.stopped.set()
        self.thread.join()
        self._sample()
        return self.take()

    def _sample_until_stopped(self) -> None:
        while not self.stopped.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        try:
            values = {**self._cpu_memory_disk_network(), **_gpu_metrics(self.gpus)}
        except Exception as err:  # noqa: BLE001 - system metrics are not worth a run
            log.warning("system metrics: sample failed: %s", err)
            return
        with self.lock:
            self.samples.append((int(time.time() * 1000), values))

    def _cpu_memory_disk_network(self) -> dict[str, float]:
        """MLflow's CPUMonitor, DiskMonitor and NetworkMonitor, one sample each."""
        import psutil

        memory, disk, network = psutil.virtual_memory(), psutil.disk_usage(os.sep), psutil.net_io_counters()
        return {
            "cpu_utilization_percentage": psutil.cpu_percent(),  # since the last sample
            "system_memory_usage_megabytes": memory.used / 1e6,
            "system_memory_usage_percentage": memory.used / memory.total * 100,
            "disk_usage_percentage": disk.percent,
            "disk_usage_megabytes": disk.used / 1e6,
            "disk_available_megabytes": disk.free / 1e6,
            "network_receive_megabytes": (network.bytes_recv - self.network_start[0]) / 1e6,
            "network_transmit_megabytes": (network.bytes_sent - self.network_start[1]) / 1e6,
        }


def _nvml_handles() -> list:
    """The node's GPUs as NVML sees them (`nvidia-ml-py`, the `gpu` extra); none without it or a driver."""
    try:
        pynvml = extras.pynvml()
        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except CrossfedError as err:
        log.info("%s", err)
        return []
    except Exception:  # noqa: BLE001 - no NVIDIA driver: a node without GPU metrics
        return []


def _gpu_metrics(handles: list) -> dict[str, float]:
    """MLflow's GPUMonitor: memory, utilisation and power of each GPU; a reading NVML refuses is left out."""
    if not handles:
        return {}
    pynvml = extras.pynvml()
    values = {}
    for i, handle in enumerate(handles):
        with contextlib.suppress(pynvml.NVMLError):
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            values[f"gpu_{i}_memory_usage_percentage"] = memory.used / memory.total * 100
            values[f"gpu_{i}_memory_usage_megabytes"] = memory.used / 1e6
        with contextlib.suppress(pynvml.NVMLError):
            values[f"gpu_{i}_utilization_percentage"] = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        with contextlib.suppress(pynvml.NVMLError):
            milliwatts = pynvml.nvmlDeviceGetPowerUsage(handle)
            values[f"gpu_{i}_power_usage_watts"] = milliwatts / 1000
            limit = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle)
            values[f"gpu_{i}_power_usage_percentage"] = milliwatts / limit * 100
    return values


class SystemMetricsLog:
    """Logs the clients' samples into the run, each client's steps counting on from its last logged one
    (a resumed run's or a rejoined client's samples come after those the run holds)."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.next_step: dict[str, int] = {}

    def log(self, samples: dict[str, list[Sample]]) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        client = MlflowClient()
        for name, taken in samples.items():
            if name not in self.next_step:
                logged = client.get_metric_history(self.run_id, f"system/{name}/cpu_utilization_percentage")
                self.next_step[name] = max((m.step for m in logged), default=-1) + 1
            step = self.next_step[name]
            metrics = [Metric(f"system/{name}/{key}", float(value), timestamp, step + i)
                       for i, (timestamp, values) in enumerate(taken) for key, value in values.items()]
            for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
                client.log_batch(self.run_id, metrics=metrics[start:start + 1000])
            self.next_step[name] = step + len(taken)
