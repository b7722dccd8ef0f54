"""Resource footprint of a piece of work: device-hours, and energy where the hardware reports it.

Energy comes only from counters the hardware keeps — NVIDIA GPUs' NVML total-energy counter (through
`pynvml`, if installed) and Intel RAPL package counters under /sys/class/powercap (if readable).
Where neither is available the energy is None: it is never estimated from a nominal power.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from crossfed import extras

RAPL_ROOT = Path("/sys/class/powercap")


def rapl_packages(root: Path = RAPL_ROOT) -> list[Path]:
    """Top-level RAPL zones (`intel-rapl:0`, ...); their sub-zones (core, dram) are inside them already."""
    return sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)


def read_rapl_uj(zones: list[Path]) -> list[int] | None:
    try:
        return [int((zone / "energy_uj").read_text()) for zone in zones] if zones else None
    except (OSError, ValueError):  # present but unreadable (often root-only)
        return None


def rapl_joules(zones: list[Path], start: list[int], stop: list[int]) -> float:
    total_uj = 0
    for zone, before, after in zip(zones, start, stop):
        if after < before:  # the counter wrapped around at max_energy_range_uj
            after += int((zone / "max_energy_range_uj").read_text())
        total_uj += after - before
    return total_uj / 1e6


def nvml_handles(gpu_indices: list[int] | None):
    """NVML handles of the GPUs to meter, or None without pynvml or GPUs.

    NVML numbers all GPUs of the machine and ignores CUDA_VISIBLE_DEVICES, so by default the GPUs
    listed there (by index) are metered, else all.
    """
    try:
        pynvml = extras.pynvml()
        pynvml.nvmlInit()
        if gpu_indices is None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            gpu_indices = (
                [int(i) for i in visible.split(",")] if visible.replace(",", "").isdigit()
                else list(range(pynvml.nvmlDeviceGetCount()))
            )
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in gpu_indices] or None
    except Exception:  # noqa: BLE001 - no pynvml (crossfed[gpu]), no driver, no GPU, or a GPU without the counter
        return None


def read_nvml_mj(handles) -> list[int] | None:
    try:
        pynvml = extras.pynvml()
        return [pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in handles] if handles else None
    except Exception:  # noqa: BLE001 - pre-Volta GPUs do not keep the counter
        return None


class ResourceMeter:
    """Meter one piece of work: `with ResourceMeter(devices=2) as meter: ...; meter.as_metrics()`.

    `devices`: how many devices (GPUs, or CPU workers) the work holds, for device-hours.
    `gpu_indices`: NVML indices of the GPUs to read energy from (default: CUDA_VISIBLE_DEVICES, else all).
    """

    def __init__(self, devices: int = 1, gpu_indices: list[int] | None = None):
        self.devices = devices
        self.gpu_indices = gpu_indices
        self.wall_s: float | None = None
        self.gpu_energy_j: float | None = None
        self.cpu_energy_j: float | None = None

    def start(self) -> "ResourceMeter":
        self._gpus = nvml_handles(self.gpu_indices)
        self._rapl_zones = rapl_packages()
        self._gpu_start = read_nvml_mj(self._gpus)
        self._rapl_start = read_rapl_uj(self._rapl_zones)
        self._t0 = time.perf_counter()
        return self

    def stop(self) -> "ResourceMeter":
        self.wall_s = time.perf_counter() - self._t0
        gpu_stop, rapl_stop = read_nvml_mj(self._gpus), read_rapl_uj(self._rapl_zones)
        if self._gpu_start is not None and gpu_stop is not None:
            self.gpu_energy_j = sum(b - a for a, b in zip(self._gpu_start, gpu_stop)) / 1e3
        if self._rapl_start is not None and rapl_stop is not None:
            self.cpu_energy_j = rapl_joules(self._rapl_zones, self._rapl_start, rapl_stop)
        return self

    def __enter__(self) -> "ResourceMeter":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def device_hours(self) -> float | None:
        return None if self.wall_s is None else self.wall_s * self.devices / 3600

    def as_metrics(self) -> dict[str, float]:
        """wall_s, device_hours, and the energies that were measured (unmeasured ones are left out,
        so the dict can go straight to `mlflow.log_metrics`)."""
        values = {
            "wall_s": self.wall_s,
            "device_hours": self.device_hours,
            "gpu_energy_j": self.gpu_energy_j,
            "cpu_energy_j": self.cpu_energy_j,
        }
        return {name: value for name, value in values.items() if value is not None}
