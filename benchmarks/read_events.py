"""Reading throughput of the data layer against plain uproot, on a NanoAOD-like file written for the purpose.

    python benchmarks/read_events.py --events 200000 --chunk-size "20 MB" --repeats 3

Modes, run in turn in each repeat so that a shared machine's load hits them alike (the best repeat is
reported, wall clock and CPU time of this process and its threads):
  uproot.iterate   plain `uproot.iterate` of the very branches the reader reads (the cms_nanoaod schema
                   resolved against the file), same chunk size, arrays built and dropped: the floor
  uproot.iterate, threads  the same, decompressing in the reader's threads (`decompression_threads`)
  read_events      the reader: objects, definitions, overlap removal, MET, selection, ordering, padding
  before           the reader with its per-chunk step as it was before issue 18 (awkward records, kept in
                   tests/data/reference_reader.py as the tests' oracle)
  cold read        `cached_read` on an empty cache: fingerprint the file, read, write the cache entry
  cache hit        `cached_read` again: fingerprint and load the entry
The ratios compare each mode's events/s with plain uproot's (target for the reader: >= 0.8).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))

import reference_reader  # noqa: E402 - the reader's per-chunk step before issue 18, for the 'before' row
import uproot  # noqa: E402
from root_samples import random_nanoaod_branches, write_ttree  # noqa: E402

from crossfed.data import reader  # noqa: E402
from crossfed.data.cache import cached_read  # noqa: E402
from crossfed.data.schema import load_schema  # noqa: E402

SCHEMA = "cms_nanoaod"


def plain_uproot(path: Path, chunk_size: str, decompression_executor=None) -> int:
    """Events read by uproot.iterate over the branches the reader would read (with uproot's default
    decompression, in the calling thread, unless an executor is given)."""
    schema = load_schema(SCHEMA)
    with uproot.open(path) as root_file:
        tree_name, tree = reader.find_tree(root_file, str(path), schema.tree_names)
        branches = sorted(set(reader.plan_read(tree, str(path), tree_name, schema).branches().values()))
    events = 0
    for chunk in uproot.iterate(f"{path}:{tree_name}", branches, step_size=chunk_size, library="ak", how=dict,
                                decompression_executor=decompression_executor):
        events += len(chunk[branches[0]])
    return events


def modes(path: Path, args, scratch: Path) -> dict:
    def read() -> int:
        _, stats = reader.read_events([str(path)], SCHEMA, selection=args.selection, max_objects=args.max_objects,
                                      chunk_size=args.chunk_size)
        return stats.events_read

    def before() -> int:
        original = reader._process_chunk
        reader._process_chunk = reference_reader.process_chunk_into
        try:
            return read()
        finally:
            reader._process_chunk = original

    def through_cache(empty_first: bool):
        def run() -> int:
            _, stats = cached_read([str(path)], SCHEMA, selection=args.selection, max_objects=args.max_objects,
                                   chunk_size=args.chunk_size, max_events=None, cache_dir=scratch / "cache")
            assert stats.from_cache != empty_first
            return stats.events_read
        run.empty_first = empty_first  # `measure` empties the cache before the clock starts
        return run

    found = {"uproot.iterate": lambda: plain_uproot(path, args.chunk_size),
             "uproot.iterate, threads": lambda: plain_uproot(path, args.chunk_size, reader.decompression_threads()),
             "read_events": read}
    if not args.no_before:
        found["before (awkward records)"] = before
    found.update({"cold read (cache miss)": through_cache(True), "cache hit": through_cache(False)})
    return found


def measure(path: Path, args, scratch: Path) -> dict[str, tuple[int, float, float]]:
    """mode -> (events, best wall seconds, CPU seconds of that repeat)."""
    best: dict[str, tuple[int, float, float]] = {}
    runs = modes(path, args, scratch)
    for _ in range(args.repeats):
        for name, run in runs.items():
            if getattr(run, "empty_first", False):
                shutil.rmtree(scratch / "cache", ignore_errors=True)
            wall, cpu = time.perf_counter(), time.process_time()
            events = run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if name not in best or wall < best[name][1]:
                best[name] = (events, wall, cpu)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--chunk-size", default="20 MB")
    parser.add_argument("--selection", default="n_leptons >= 1 and n_jets >= 2")
    parser.add_argument("--max-objects", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all modes; the best of each is shown")
    parser.add_argument("--no-before", action="store_true", help="skip the pre-issue-18 reader")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        path = write_ttree(scratch / "bench.root", "Events", random_nanoaod_branches(args.events))
        size_mb = path.stat().st_size / 1e6
        print(f"{args.events} events, {size_mb:.1f} MB, chunk {args.chunk_size}, schema {SCHEMA}, "
              f"selection {args.selection!r}, max_objects {args.max_objects}, best of {args.repeats}")
        results = measure(path, args, scratch)
    _, floor_wall, floor_cpu = results["uproot.iterate"]
    print(f"{'mode':<26}{'wall s':>8}{'events/s':>12}{'ratio':>8}{'CPU s':>8}{'CPU ratio':>11}")
    for name, (events, wall, cpu) in results.items():
        print(f"{name:<26}{wall:>8.3f}{events / wall:>12,.0f}{floor_wall / wall:>8.2f}{cpu:>8.3f}"
              f"{floor_cpu / cpu:>11.2f}")
    print("ratio: events/s relative to plain uproot.iterate (wall clock); CPU ratio: the same in CPU time")

if __name__ == "__main__":
    main()
