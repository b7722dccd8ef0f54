"""Event-generation throughput: accepted events/s per core, plain and with forced decays; scaling on Ray.

    python benchmarks/generate.py --process ttbar --detector cms --events 1000

1. Per core, in this process: Pythia + detector response over `--events` generated events, in the
   batches a chunk uses, plain (all W decays) and with forced decays (generate/decay_filter.py, the
   default). "pythia" is Pythia's batch call (generation and the export of the records to awkward
   arrays), "detector response" the truth extraction, pre-check, reconstruction and preselection.
   Pythia's initialisation is excluded (once per chunk: reported apart). Rates use this process's CPU
   time, so they do not depend on how busy a shared machine is; "accepted" means after the preselection.
2. Scaling (wall clock, whole `generate()` calls: start-up, chunks as Ray tasks, merging, writing):
   1 and 2 Ray workers on an embedded Ray, and 2 workers on a 2-node ray.cluster_utils.Cluster
   (one CPU each), printed as ratios to 1 worker. On a machine shared with other work the wall-clock
   ratios understate the scaling; the per-core rates of part 1 do not.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from crossfed.generate.core import BATCH_EVENTS, _select
from crossfed.generate.detector import DETECTORS
from crossfed.generate.processes import pythia_settings, uses_decay_filter
from crossfed.generate.pythia import (
    ChargeTable, attach_decay_filter, initialise, new_pythia, next_batch, silenced_stdout, truth_batch,
)


def per_core(process: str, detector: str, n_generated: int, seed: int, forced: bool) -> dict:
    """CPU seconds of Pythia and of the detector response for `n_generated` events, and what passed."""
    settings = pythia_settings(process)
    started = time.process_time()
    pythia = new_pythia(settings, seed=seed)
    hook = attach_decay_filter(pythia) if forced else None
    initialise(pythia, settings)
    init_seconds = time.process_time() - started
    rng, charges, response = np.random.default_rng(seed), ChargeTable(pythia), DETECTORS[detector]
    pythia_seconds = detector_seconds = 0.0
    accepted = generated = 0
    with silenced_stdout():
        while generated < n_generated:
            t0 = time.process_time()
            batch, _ = next_batch(pythia, min(BATCH_EVENTS, n_generated - generated))
            t1 = time.process_time()
            kept, n_batch = _select(truth_batch(batch, charges), response, rng, preselect=True)
            detector_seconds += time.process_time() - t1
            pythia_seconds += t1 - t0
            accepted += len(kept)
            generated += n_batch
    filter_efficiency = hook.kept / hook.tried if hook else 1.0
    return dict(init=init_seconds, pythia=pythia_seconds, detector=detector_seconds, generated=generated,
                accepted=accepted, filter_efficiency=filter_efficiency)


def print_per_core(name: str, r: dict) -> float:
    seconds = r["pythia"] + r["detector"]
    rate = r["accepted"] / seconds
    print(f"{name:7s} generated={r['generated']} accepted={r['accepted']} (efficiency {r['accepted'] / r['generated']:.3f}, "
          f"decay-filter efficiency {r['filter_efficiency']:.3f}); Pythia init {r['init']:.2f} s per chunk")
    print(f"  pythia            : {r['generated'] / r['pythia']:8.1f} events/s per core")
    print(f"  detector response : {r['generated'] / r['detector']:8.1f} events/s per core")
    print(f"  generation (both) : {r['generated'] / seconds:8.1f} generated events/s per core, "
          f"{rate:.1f} accepted events/s per core")
    return rate


def scaling(process: str, detector: str, n_events: int, seed: int) -> None:
    """Wall-clock accepted events/s of whole generate() calls: 1 and 2 workers, and a 2-node cluster."""
    import ray
    from ray.cluster_utils import Cluster

    from crossfed.generate import connect_ray, generate

    def timed(workers: int) -> float:
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            generate(process, detector, n_events, seed, Path(scratch) / "events.root", workers=workers, progress=False)
            return n_events / (time.perf_counter() - started)

    with connect_ray(num_cpus=2):
        timed(2)  # warm-up: Ray's worker processes and their imports
        one, two = timed(1), timed(2)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        timed(2)  # warm-up on both nodes
        nodes = timed(2)
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"scaling ({n_events} accepted events per run, wall clock, {os.cpu_count()} cores on this machine):")
    print(f"  1 Ray worker        : {one:7.1f} accepted events/s")
    print(f"  2 Ray workers       : {two:7.1f} accepted events/s  (x{two / one:.2f} of 1 worker)")
    print(f"  2-node cluster (2x1): {nodes:7.1f} accepted events/s  (x{nodes / one:.2f} of 1 worker)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--process", default="ttbar")
    parser.add_argument("--detector", default="cms", choices=sorted(DETECTORS))
    parser.add_argument("--events", type=int, default=1000, help="generated events per mode for the per-core rates")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scaling-events", type=int, default=400, help="accepted events per generate() run; 0: skip")
    args = parser.parse_args()

    plain = print_per_core("plain", per_core(args.process, args.detector, args.events, args.seed, False))
    if uses_decay_filter(args.process, (), True, True):
        forced = print_per_core("forced", per_core(args.process, args.detector, args.events, args.seed, True))
        print(f"forced decays / plain: x{forced / plain:.2f} accepted events per core-second")
    if args.scaling_events:
        scaling(args.process, args.detector, args.scaling_events, args.seed)


if __name__ == "__main__":
    main()
