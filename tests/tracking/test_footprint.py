"""Resource meter: device-hours from wall time, energy only from hardware counters."""

import time

import pytest

from crossfed.federation import footprint
from crossfed.federation.footprint import ResourceMeter


def test_device_hours_are_wall_time_times_devices():
    with ResourceMeter(devices=4) as meter:
        time.sleep(0.05)
    assert meter.wall_s >= 0.05
    assert meter.device_hours == pytest.approx(meter.wall_s * 4 / 3600)
    metrics = meter.as_metrics()
    assert metrics["wall_s"] == meter.wall_s and metrics["device_hours"] == meter.device_hours
    assert all(value is not None for value in metrics.values())
    # energy is reported exactly when a counter was readable, never guessed
    rapl_readable = footprint.read_rapl_uj(footprint.rapl_packages()) is not None
    assert ("cpu_energy_j" in metrics) == rapl_readable == (meter.cpu_energy_j is not None)


def test_rapl_counters_are_read_per_package_and_unwrapped(tmp_path):
    # a sysfs-shaped tree: two packages, one sub-zone (already counted in its package), one counter wrapping
    for zone, energy, top in [("intel-rapl:0", 1_000_000, 10_000_000), ("intel-rapl:1", 9_500_000, 10_000_000),
                              ("intel-rapl:0:0", 123, 10_000_000)]:
        (tmp_path / zone).mkdir()
        (tmp_path / zone / "energy_uj").write_text(f"{energy}\n")
        (tmp_path / zone / "max_energy_range_uj").write_text(f"{top}\n")
    zones = footprint.rapl_packages(tmp_path)
    assert [z.name for z in zones] == ["intel-rapl:0", "intel-rapl:1"]
    start = footprint.read_rapl_uj(zones)
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("3000000\n")  # +2 J
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("500000\n")  # wrapped: +1 J
    assert footprint.rapl_joules(zones, start, footprint.read_rapl_uj(zones)) == pytest.approx(3.0)
    assert footprint.read_rapl_uj([]) is None
