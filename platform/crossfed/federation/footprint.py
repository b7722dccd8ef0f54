"""Resource footprint of training: device-hours, and energy where the hardware keeps counters.

Measured in the process that owns the devices, each DeepSpeed rank (`crossfed.train.workers`), and summed
by its client: a client actor holds no device, and metering from there would count every GPU of its node.

- device-hours: the rank's wall time × the devices Ray gave it (its GPUs, else its CPUs);
- energy: read by CodeCarbon (`pip install 'crossfed[energy]'`) from hardware counters only: the NVML
  energy counter of the rank's own GPUs, and the RAPL counters of the CPU packages where
  /sys/class/powercap is readable. A package is shared by every process on the node, so a rank is
  counted the share of its package energy that its CPUs are of the node's; a fractional GPU likewise.
  CodeCarbon's estimates (CPU power from TDP and load, RAM power from its size, CO₂) are not used.

Energy that no counter measured is absent from the metrics (never 0, never estimated); tables and model
cards then say "not measured" (`energy_text`).
"""

from __future__ import annotations

import logging
import time

from crossfed import extras
from crossfed.errors import CrossfedError

log = logging.getLogger(__name__)

JOULES_PER_KWH = 3.6e6
ENERGY_KEYS = ("gpu_energy_j", "cpu_energy_j")
NOT_MEASURED = "not measured"


def _counters(gpu_ids: list[int]) -> tuple[bool, bool]:
    """(RAPL readable, NVML usable for these GPUs), as CodeCarbon detects them."""
    from codecarbon.core import cpu, gpu

    return cpu.is_rapl_available(), bool(gpu_ids) and gpu.is_gpu_details_available()


class RankMeter:
    """One rank's meter: `meter.start()`, the work, `meter.stop()` -> metrics of that window.

    `cpus`, `gpus`: what Ray gave the rank (for device-hours); `gpu_ids`: its GPUs' ids as Ray assigned
    them (the NVML indices of the machine).
    """

    def __init__(self, cpus: float, gpus: float, gpu_ids: list[int]):
        self.cpus, self.gpus, self.gpu_ids = cpus, gpus, list(gpu_ids)
        self.tracker, self.rapl, self.nvml = None, False, False
        try:
            extras.codecarbon()
        except CrossfedError as err:  # energy is then "not measured"; said where it could have been
            (log.warning if self.gpu_ids else log.info)("%s", err)
            return
        self.rapl, self.nvml = _counters(self.gpu_ids)
        if self.rapl or self.nvml:
            from codecarbon import OfflineEmissionsTracker

            # Offline: no network lookup of the location (CO₂ is not taken from it anyway); no files written.
            self.tracker = OfflineEmissionsTracker(
                country_iso_code="CHE", gpu_ids=self.gpu_ids or None, tracking_mode="machine",
                save_to_file=False, log_level="error", allow_multiple_runs=True)

    def start(self) -> "RankMeter":
        if self.tracker is not None:
            self.tracker.start_task("crossfed")
        self._t0 = time.perf_counter()
        return self

    def stop(self) -> dict[str, float]:
        """wall_s, device_hours, and gpu_energy_j / cpu_energy_j where a counter measured them."""
        wall_s = time.perf_counter() - self._t0
        metrics = {"wall_s": wall_s, "device_hours": wall_s * (self.gpus or self.cpus) / 3600}
        if self.tracker is not None:
            window = self.tracker.stop_task("crossfed")
            if self.nvml:
                metrics["gpu_energy_j"] = window.gpu_energy * JOULES_PER_KWH * min(self.gpus, 1.0)
            if self.rapl:
                import psutil

                share = min(self.cpus / (psutil.cpu_count() or 1), 1.0)
                metrics["cpu_energy_j"] = window.cpu_energy * JOULES_PER_KWH * share
        return metrics


def call_footprint(per_rank: list[dict[str, float]], wall_s: float) -> dict[str, float]:
    """A client's footprint of one call: its wall time, and its ranks' device-hours and energies summed."""
    return {"wall_s": wall_s, **sum_ranks(per_rank)}


def sum_ranks(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """A client's footprint of one call from its ranks': device-hours and energies summed. An energy is
    kept only if every rank measured it (a sum over some ranks would pass for the client's)."""
    totals = {"device_hours": sum(rank["device_hours"] for rank in per_rank)}
    for key in ENERGY_KEYS:
        if per_rank and all(key in rank for rank in per_rank):
            totals[key] = sum(rank[key] for rank in per_rank)
    return totals


def add_footprints(total: dict[str, float] | None, call: dict[str, float]) -> dict[str, float]:
    """`total` (None: no call yet) plus one more call's footprint: wall time and device-hours summed, an
    energy only if both measured it (a total over some calls would pass for the whole)."""
    if total is None:
        return dict(call)
    return {key: total[key] + call[key] for key in total.keys() & call.keys()}


def energy_text(footprint: dict[str, float]) -> str:
    """The energy of a footprint for people: '12.3 kJ (GPU 10 kJ, CPU 2.3 kJ)', 'not measured' without any."""
    parts = {name: footprint[key] for name, key in (("GPU", "gpu_energy_j"), ("CPU", "cpu_energy_j"))
             if key in footprint}
    if not parts:
        return NOT_MEASURED
    return f"{_joules(sum(parts.values()))} ({', '.join(f'{n} {_joules(v)}' for n, v in parts.items())})"


def _joules(value: float) -> str:
    for unit, size in (("MJ", 1e6), ("kJ", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.3g} J"
