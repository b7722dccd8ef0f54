"""Resource footprint: each rank meters its own devices, its client sums them; energy only from counters."""

import time

import pytest

from crossfed.federation.footprint import (
    ENERGY_KEYS,
    NOT_MEASURED,
    RankMeter,
    add_footprints,
    call_footprint,
    energy_text,
    sum_ranks,
)


def test_a_rank_counts_device_hours_of_the_devices_ray_gave_it():
    meter = RankMeter(cpus=4, gpus=0, gpu_ids=[]).start()
    time.sleep(0.05)
    window = meter.stop()
    assert window["wall_s"] >= 0.05
    assert window["device_hours"] == pytest.approx(window["wall_s"] * 4 / 3600)
    # energy only from a counter: on a machine without readable RAPL (and no GPU here) it is absent, not 0
    if meter.tracker is None:
        assert not set(ENERGY_KEYS) & set(window)
    assert all(value > 0 for value in window.values())


def test_a_client_sums_its_ranks_and_keeps_an_energy_only_if_every_rank_measured_it():
    ranks = [{"wall_s": 2.0, "device_hours": 2.0 / 3600, "cpu_energy_j": 30.0, "gpu_energy_j": 100.0},
             {"wall_s": 1.9, "device_hours": 1.9 / 3600, "cpu_energy_j": 20.0}]
    assert sum_ranks(ranks) == {"device_hours": pytest.approx(3.9 / 3600), "cpu_energy_j": 50.0}
    assert sum_ranks([{"wall_s": 1.0, "device_hours": 1 / 3600}]) == {"device_hours": 1 / 3600}


def test_a_total_over_calls_has_an_energy_only_if_every_call_measured_it():
    both = [{"device_hours": 1e-3, "cpu_energy_j": 5.0}, {"device_hours": 2e-3, "cpu_energy_j": 7.0}]
    call = call_footprint(both, wall_s=3.6)
    assert call == {"wall_s": 3.6, "device_hours": pytest.approx(3e-3), "cpu_energy_j": 12.0}
    assert add_footprints(None, call) == call
    unmeasured = call_footprint([{"device_hours": 1e-3}, {"device_hours": 1e-3}], wall_s=1.0)
    assert add_footprints(call, unmeasured) == {"wall_s": 4.6, "device_hours": pytest.approx(5e-3)}
    assert add_footprints(call, call) == {"wall_s": 7.2, "device_hours": pytest.approx(6e-3), "cpu_energy_j": 24.0}


def test_energy_is_written_for_people_or_said_to_be_not_measured():
    assert energy_text({"device_hours": 1.0}) == NOT_MEASURED == "not measured"
    assert energy_text({"gpu_energy_j": 10_000.0, "cpu_energy_j": 2_300.0}) == "12.3 kJ (GPU 10 kJ, CPU 2.3 kJ)"
    assert energy_text({"cpu_energy_j": 4.2e6}) == "4.2 MJ (CPU 4.2 MJ)"
