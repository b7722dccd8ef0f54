"""Event-generation throughput: events/s per core for Pythia + detector response, and for writing.

    python benchmarks/generate.py --process ttbar --detector cms --events 200

Generation is timed in this process on one core (Pythia init excluded, reported apart), over the
*generated* events (before preselection), in the batches `generate()` uses: "pythia" is Pythia's
batch call (generation and the export of the event records to awkward arrays), "detector response"
the truth extraction, the truth-level pre-check, the reconstruction and the preselection; writing is timed on the events that pass the preselection,
after one warm-up write (uproot's first write pays its imports). Rates use this process's CPU time, so
they are per core and do not depend on how busy a shared machine is.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from crossfed.generate.core import BATCH_EVENTS, _select, generation_metadata
from crossfed.generate.detector import DETECTORS
from crossfed.generate.processes import pythia_settings
from crossfed.generate.pythia import ChargeTable, initialise, new_pythia, next_batch, silenced_stdout, truth_batch
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
    charges = ChargeTable(pythia)
    pythia_seconds = detector_seconds = 0.0
    accepted, generated = [], 0
    with silenced_stdout():
        while generated < args.events:
            t0 = time.process_time()
            batch, _ = next_batch(pythia, min(BATCH_EVENTS, args.events - generated))
            t1 = time.process_time()
            kept, n_batch = _select(truth_batch(batch, charges), detector, rng, preselect=True)
            detector_seconds += time.process_time() - t1
            pythia_seconds += t1 - t0
            accepted += [event for _, event in kept]
            generated += n_batch

    with tempfile.TemporaryDirectory() as scratch:
        metadata = generation_metadata(args.process, settings, (), args.detector, args.seed, True,
                                       args.events, len(accepted), 0.0, 0.0)
        write_root(Path(scratch) / "warm-up.root", args.detector, accepted[:1], metadata)
        t0 = time.process_time()
        write_root(Path(scratch) / "bench.root", args.detector, accepted, metadata)
        write_seconds = time.process_time() - t0

    n = generated
    print(f"process={args.process} detector={args.detector} generated={n} accepted={len(accepted)} "
          f"(efficiency {len(accepted) / n:.3f}); Pythia init {init_seconds:.2f} s")
    print(f"pythia              : {n / pythia_seconds:8.1f} events/s per core")
    print(f"detector response   : {n / detector_seconds:8.1f} events/s per core (truth record + pre-check + reconstruction)")
    print(f"generation (both)   : {n / (pythia_seconds + detector_seconds):8.1f} generated events/s per core, "
          f"{len(accepted) / (pythia_seconds + detector_seconds):.1f} accepted events/s per core")
    print(f"writing             : {len(accepted) / write_seconds:8.1f} events/s ({len(accepted)} events, {write_seconds:.3f} s)")


if __name__ == "__main__":
    main()
