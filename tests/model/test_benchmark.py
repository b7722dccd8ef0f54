"""benchmarks/train_throughput.py runs end to end on a small batch and reports consistent figures."""

import argparse
import importlib.util
import math
from pathlib import Path

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
