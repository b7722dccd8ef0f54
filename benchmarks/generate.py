"""Event-generation throughput: events/s per core for Pythia + detector response, and for writing.

    python benchmarks/generate.py --process ttbar --detector cms --events 200

Generation is timed in this process on one core (Pythia init excluded, reported apart), over the
*generated* events (before preselection); writing is timed on the events that pass the preselection,
after one warm-up write (uproot's first write pays its imports). Rates use this process's CPU time, so
they are per core and do not depend on how busy a shared machine is.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from crossfed.generate.core import generation_metadata, passes_preselection
from crossfed.generate.detector import DETECTORS, reconstruct
from crossfed.generate.processes import pythia_settings
from crossfed.generate.pythia import initialise, new_pythia, silenced_stdout, truth_event
from crossfed.generate.writer import write_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--process", default="ttbar")
    parser.add_argument("--detector", default="cms", choices=sorted(DETECTORS))
    parser.add_argument("--events", type=int, default=200, help="generated events")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    settings = pythia_settings(args.process)
    detector = DETECTORS[args.detector]
    started = time.process_time()
    pythia = new_pythia(settings, seed=args.seed)
    initialise(pythia, settings)
    init_seconds = time.process_time() - started

    import numpy as np

    rng = np.random.default_rng(args.seed)
    pythia_seconds = detector_seconds = 0.0
    accepted = []
    with silenced_stdout():
        for _ in range(args.events):
            t0 = time.process_time()
            while not pythia.next():
                pass
            t1 = time.process_time()
            event = reconstruct(truth_event(pythia.event), detector, rng)
            detector_seconds += time.process_time() - t1
            pythia_seconds += t1 - t0
            if passes_preselection(event, detector.btag_working_point):
                accepted.append(event)

    with tempfile.TemporaryDirectory() as scratch:
        metadata = generation_metadata(args.process, settings, (), args.detector, args.seed, True,
                                       args.events, len(accepted), 0.0, 0.0)
        write_root(Path(scratch) / "warm-up.root", args.detector, accepted[:1], metadata)
        t0 = time.process_time()
        write_root(Path(scratch) / "bench.root", args.detector, accepted, metadata)
        write_seconds = time.process_time() - t0

    n = args.events
    print(f"process={args.process} detector={args.detector} generated={n} accepted={len(accepted)} "
          f"(efficiency {len(accepted) / n:.3f}); Pythia init {init_seconds:.2f} s")
    print(f"pythia              : {n / pythia_seconds:8.1f} events/s per core")
    print(f"detector response   : {n / detector_seconds:8.1f} events/s per core (truth record + reconstruction)")
    print(f"generation (both)   : {n / (pythia_seconds + detector_seconds):8.1f} generated events/s per core, "
          f"{len(accepted) / (pythia_seconds + detector_seconds):.1f} accepted events/s per core")
    print(f"writing             : {len(accepted) / write_seconds:8.1f} events/s ({len(accepted)} events, {write_seconds:.3f} s)")


if __name__ == "__main__":
    main()
