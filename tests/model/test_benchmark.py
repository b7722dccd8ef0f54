"""The benchmarks run end to end on small inputs (train_throughput, read_events) and compute their figures
right (federation_overhead's round and phase split, on made-up timings: a federation is too slow here)."""

import argparse
import importlib.util
import math
from pathlib import Path

import pytest
import torch

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "train_throughput.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("train_throughput", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_benchmark_on_cpu():
    bench = load_benchmark()
    args = argparse.Namespace(batch_size=32, objects=8, steps=2, warmup=1, compile=False, fp32=False)
    result = bench.benchmark("tiny", args, torch.device("cpu"))
    assert result["events_per_s"] > 0 and math.isfinite(result["loss"])
    # achieved FLOP/s = events/s × 3 × forward FLOPs per event
    model_flops = result["tflops"] * 1e12 / result["events_per_s"]
    assert 3e5 < model_flops < 3e6, model_flops  # tiny: ~0.6 MFLOP forward per 8-object event, ×3
    events = bench.synthetic_events(64, 16, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert events[2].sum(1).min() >= 4 and torch.isfinite(events[0]).all()


def load_script(name: str):
    path = BENCHMARK.parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_path_config_matches_the_plain_loop():
    bench = load_benchmark()
    args = argparse.Namespace(objects=12, batch_size=64, zero_stage=2, fp32=False, warmup=2, steps=5)
    config = bench.real_path_config("kishimoto-11m", args, torch.device("cpu"), ["events.root"], "cache")
    assert (config.model.preset, config.data.max_objects, config.training.batch_size) == ("kishimoto-11m", 12, 64)
    assert (config.training.optimizer, config.training.precision, config.training.zero_stage) == ("sgd", "fp32", 2)
    assert config.training.steps == 7 and config.data.augment.boost  # augmentations on, as a client trains


def test_read_benchmark_measures_every_mode(tmp_path):
    bench = load_script("read_events")
    path = bench.write_ttree(tmp_path / "bench.root", "Events", bench.random_nanoaod_branches(1500))
    args = argparse.Namespace(selection="n_jets >= 2", max_objects=8, chunk_size=600, repeats=1, no_before=False)
    results = bench.measure(path, args, tmp_path)
    assert list(results) == ["uproot.iterate", "uproot.iterate, threads", "read_events", "before (awkward records)",
                             "cold read (cache miss)", "cache hit"]
    assert {events for events, _, _ in results.values()} == {1500}
    assert all(wall > 0 and cpu >= 0 for _, wall, cpu in results.values())


def _record(number: int, compute: float, transfer: float, aggregation: float, round_s: float) -> dict:
    return {"round": number, "time/local_compute_s": compute, "time/transfer_s": transfer,
            "time/aggregation_s": aggregation, "time/round_s": round_s}


def test_federation_overhead_splits_rounds_from_the_driver_records():
    bench = load_script("federation_overhead")
    # rounds end at 10, 14 and 18.5 s; after each record the driver and the logger spent 0.5 s
    result = {"records": [_record(1, 2.5, 0.2, 0.1, 3.4), _record(2, 2.4, 0.3, 0.2, 3.5), _record(3, 2.6, 0.4, 0.3, 4.0)],
              "round_ends": [10.0, 14.0, 18.5], "logging_s": [0.1, 0.2, 0.1]}
    rounds = bench.crossfed_rounds(result)
    assert [r["wall_s"] for r in rounds] == pytest.approx([3.9, 4.0, 4.5])  # round 1: 3.4 + median(0.5, 0.5)
    second = rounds[1]
    assert second["overhead_s"] == pytest.approx(4.0 - 2.4)
    assert second["phases"]["evaluation+client checkpoints"] == pytest.approx(3.5 - 2.4 - 0.3 - 0.2)
    assert second["phases"]["driver checkpoint"] == pytest.approx(4.0 - 3.5 - 0.2)
    assert second["phases"]["other"] == pytest.approx(0.0, abs=1e-12)
    # once the driver records every phase, those are shown as they are
    fine = {**_record(2, 2.4, 0.3, 0.2, 3.5), **{f"time/{p}_s": 0.1 for p in bench.PHASES}}
    split = bench.phase_split(fine, 4.0, 0.2)
    assert split["train"] == 0.1 and split["logging"] == 0.2 and split["other"] == pytest.approx(4.0 - 0.9)
    figures = bench.summary(rounds, startup_s=12.0, shutdown_s=3.0)
    assert figures["overhead_s"] == pytest.approx((1.6 + 1.9) / 2) and figures["overhead_s_range"] == pytest.approx((1.6, 1.9))
    assert figures["startup_with_warmup_s"] == pytest.approx(12.0 + 3.9 - 4.25)


def test_federation_overhead_reads_flower_timings():
    bench = load_script("federation_overhead")
    timings = [{"started": 0.0, "fit_done": 2.0, "aggregated": 2.1, "ended": 2.5, "compute_s": [1.5, 1.8],
                "evaluation_compute_s": [0.3, 0.2]},
               {"started": 2.6, "fit_done": 4.5, "aggregated": 4.6, "ended": 5.0, "compute_s": [1.6, 1.7],
                "evaluation_compute_s": [0.25, 0.35]}]
    rounds = bench.flower_rounds(timings)
    assert [r["wall_s"] for r in rounds] == pytest.approx([2.6, 2.4])
    assert rounds[0]["overhead_s"] == pytest.approx(2.6 - 1.8) and rounds[0]["phases"]["between rounds"] == pytest.approx(0.1)
    # the slowest client's evaluation compute: the floor of any engine's overhead at this work
    assert [r["evaluation_compute_s"] for r in rounds] == pytest.approx([0.3, 0.35])
    assert bench.summary(rounds, 1.0, 1.0)["evaluation_compute_s"] == pytest.approx(0.35)  # rounds 2.. only
    from crossfed.config import config_from_dict

    work = bench.workload(argparse.Namespace(preset="tiny", rounds=3, local_steps=5, batch_size=64, max_objects=16,
                                             eval_batches=2, events=100, fresh_store=False, checkpoint_every=3,
                                             evaluate_every=2, background_commits=False, no_system_metrics=True))
    config = config_from_dict(bench.crossfed_config(work, Path("scratch"), {n: f"{n}.root" for n in bench.CLIENTS}))
    assert list(config.experiments) == list(bench.CLIENTS) and config.federation.local_steps == 5
    assert config.output_dir == "scratch/runs" and config.training.batch_size == 64
    assert config.checkpoint.every == 3 and config.federation.evaluate_every == 2 and not config.checkpoint.background
    assert config.tracking.system_metrics is False
