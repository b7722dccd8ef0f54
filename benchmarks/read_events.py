"""Reading throughput of the data layer: write a NanoAOD-like file, read it cold, then through the cache.

    python benchmarks/read_events.py --events 200000 --chunk-size "20 MB"
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))

from root_samples import random_nanoaod_branches, write_ttree  # noqa: E402

from crossfed.data.cache import cached_read  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--chunk-size", default="20 MB")
    parser.add_argument("--selection", default="n_leptons >= 1 and n_jets >= 2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_ttree(Path(tmp) / "bench.root", "Events", random_nanoaod_branches(args.events))
        size_mb = path.stat().st_size / 1e6
        for label in ("cold read", "cache hit"):
            start = time.perf_counter()
            batch, stats = cached_read([str(path)], "cms_nanoaod", selection=args.selection, max_objects=16,
                                       chunk_size=args.chunk_size, max_events=None, cache_dir=Path(tmp) / "cache")
            seconds = time.perf_counter() - start
            print(f"{label}: {stats.events_read} events ({size_mb:.1f} MB), {len(batch)} selected, "
                  f"{seconds:.2f} s, {stats.events_read / seconds:,.0f} events/s")


if __name__ == "__main__":
    main()
