"""`generate()`: Pythia 8 events through a detector response into one ROOT file, in chunks run as Ray tasks.

Determinism: the requested events are cut into chunks whose sizes depend only on the request; chunk i
gets its own seeds from SeedSequence([seed, i]), so the file is the same for any number of workers or
nodes. Resumability: each finished chunk is kept next to the output until the file is written
(tasks.py), so running the same request again after an interruption continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from crossfed import __version__
from crossfed.errors import CrossfedError
from crossfed.generate import storage
from crossfed.generate.detector import (
    DETECTORS, DetectorResponse, TruthBatch, may_pass_preselection, passes_preselection, reconstruct, split_events,
)
from crossfed.generate.processes import pythia_settings, uses_decay_filter
from crossfed.generate.pythia import (
    MAX_PYTHIA_SEED, ChargeTable, attach_decay_filter, check_settings, initialise, new_pythia, next_batch,
    silenced_stdout, truth_batch,
)

# Chunk sizes (written events): about CHUNKS_PER_FILE chunks per file, within these bounds. Bigger chunks
# spread Pythia's initialisation (~0.5 s) over more events; smaller ones resume and balance better.
CHUNK_EVENTS_MIN = 100
CHUNK_EVENTS_MAX = 1000
CHUNKS_PER_FILE = 16
PILOT_CHUNK_EVENTS = 500  # generated events per chunk of a pilot run (measure())
# Events per Pythia batch call and per vectorised detector pass (fixed: the output must not depend on workers).
BATCH_EVENTS = 100
# Give up on a chunk when the preselection accepts fewer than 1 in this many generated events
# (W+jets passes about 1 in 1000), or none of the first EARLY_GIVE_UP ones.
MAX_GENERATED_PER_WRITTEN = 2000
EARLY_GIVE_UP = 20_000
# The sources that shape the events: a chunk kept from an interrupted run is reused only if these match.
EVENT_SOURCES = ("processes", "pythia", "decay_filter", "detector", "core", "writer")


@dataclass(frozen=True)
class Chunk:
    index: int
    settings: tuple[str, ...]
    detector: str
    seed: int
    preselect: bool
    forced_decays: bool  # decay_filter.py on the top processes
    target_written: int | None  # stop after this many accepted events ...
    max_generated: int  # ... or after this many generated ones
    first_event: int  # the number of its first event in the file
    batch_events: int
    early_give_up: int


def _chunk_seeds(seed: int, index: int) -> tuple[int, np.random.Generator]:
    state = np.random.SeedSequence([seed, index]).generate_state(2)
    return int(state[0]) % MAX_PYTHIA_SEED + 1, np.random.default_rng(int(state[1]))


def run_chunk(chunk: Chunk) -> dict:
    """Generate, reconstruct and preselect one chunk's events.

    Events come from Pythia `batch_events` at a time and go through the detector together; in the last
    batch only the events up to the last one needed count as generated, as if produced one by one.
    """
    pythia_seed, rng = _chunk_seeds(chunk.seed, chunk.index)
    pythia = new_pythia(list(chunk.settings), seed=pythia_seed)
    decay_filter = attach_decay_filter(pythia) if chunk.forced_decays else None
    initialise(pythia, list(chunk.settings))
    charges = ChargeTable(pythia)
    detector = DETECTORS[chunk.detector]
    events, generated, failures_in_a_row = [], 0, 0
    with silenced_stdout():  # the first fastjet clustering prints a banner
        while generated < chunk.max_generated and (chunk.target_written is None or len(events) < chunk.target_written):
            if generated > chunk.early_give_up and not events and chunk.target_written:
                break  # reported by generate() as a preselection that accepts (almost) nothing
            batch, failed = next_batch(pythia, min(chunk.batch_events, chunk.max_generated - generated))
            for failure in failed:
                failures_in_a_row = failures_in_a_row + 1 if failure else 0
                if failures_in_a_row > 100:
                    raise CrossfedError(f"Pythia failed to generate 100 events in a row with {list(chunk.settings)}")
            accepted, n_batch = _select(truth_batch(batch, charges), detector, rng, chunk.preselect)
            wanted = len(accepted) if chunk.target_written is None else chunk.target_written - len(events)
            events += [event for _, event in accepted[:wanted]]
            generated += n_batch if len(accepted) <= wanted else accepted[wanted - 1][0] + 1
    info = pythia.infoPython()
    return dict(index=chunk.index, events=events, generated=generated,
                sigma_pb=info.sigmaGen() * 1e9, sigma_error_pb=info.sigmaErr() * 1e9,  # Pythia gives mb
                decays_tried=decay_filter.tried if decay_filter else 0,
                decays_kept=decay_filter.kept if decay_filter else 0)


def _select(truth: TruthBatch, detector: DetectorResponse, rng: np.random.Generator,
            preselect: bool) -> tuple[list[tuple[int, dict]], int]:
    """(position in the batch, reconstructed event) of the events kept, and the batch's size."""
    candidates = may_pass_preselection(truth, detector) if preselect else np.ones(truth.n_events, bool)
    # A broken event record (Pythia's own check is off: processes.SPEED_SETTINGS) is never kept.
    candidates &= np.bincount(truth.event, ~np.isfinite(truth.particles).all(axis=1), truth.n_events) == 0
    positions = np.flatnonzero(candidates)  # the truth-level pre-check drops events before the detector
    truth = truth.subset(candidates)
    reco = reconstruct(truth, detector, rng)
    kept = np.flatnonzero(passes_preselection(reco, truth.n_events, detector.btag_working_point) if preselect
                          else np.ones(truth.n_events, bool))
    return list(zip(positions[kept].tolist(), split_events(reco, truth.n_events, kept))), len(candidates)


def combined_cross_section(results: list[dict]) -> dict:
    """The chunks' cross-sections averaged (weighted by events generated; errors add in quadrature), times
    the fraction of decay chains the forced decays kept (binomial error): sigma x BR of what was generated."""
    n = np.array([r["generated"] for r in results], float)
    sigma = np.array([r["sigma_pb"] for r in results])
    error = np.array([r["sigma_error_pb"] for r in results])
    inclusive, inclusive_error = float((n * sigma).sum() / n.sum()), float(np.sqrt(((n * error) ** 2).sum()) / n.sum())
    tried = sum(r["decays_tried"] for r in results)
    if not tried:
        return dict(cross_section_pb=inclusive, cross_section_error_pb=inclusive_error)
    kept = sum(r["decays_kept"] for r in results)
    fraction, fraction_error = kept / tried, float(np.sqrt(kept * (tried - kept) / tried) / tried)
    return dict(
        cross_section_pb=inclusive * fraction,
        cross_section_error_pb=float(np.hypot(inclusive_error * fraction, inclusive * fraction_error)),
        inclusive_cross_section_pb=inclusive, inclusive_cross_section_error_pb=inclusive_error,
        decay_filter_efficiency=fraction, decay_filter_efficiency_error=fraction_error,
    )


def chunk_size(n_events: int) -> int:
    """Written events per chunk: a function of the request only, so any worker layout cuts it the same."""
    return min(CHUNK_EVENTS_MAX, max(CHUNK_EVENTS_MIN, -(-n_events // CHUNKS_PER_FILE)))


def _chunk_sizes(total: int, size: int) -> list[int]:
    """Fixed chunking: full chunks of `size`, then the remainder."""
    return [size] * (total // size) + ([total % size] if total % size else [])


def plan_chunks(settings: list[str], detector: str, n_events: int, seed: int, preselect: bool,
                forced_decays: bool) -> list[Chunk]:
    sizes = _chunk_sizes(n_events, chunk_size(n_events))
    first = np.concatenate([[1], 1 + np.cumsum(sizes)[:-1]]).tolist()
    return [Chunk(i, tuple(settings), detector, seed, preselect, forced_decays, size,
                  size * MAX_GENERATED_PER_WRITTEN, first[i], BATCH_EVENTS, EARLY_GIVE_UP)
            for i, size in enumerate(sizes)]


def fingerprint(request: object) -> str:
    """What a file's events depend on: the request (e.g. its chunks), the generator's code and versions."""
    from importlib.metadata import version

    digest = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode())
    digest.update(f"pythia8mc {version('pythia8mc')} fastjet {version('fastjet')}".encode())
    for module in EVENT_SOURCES:
        digest.update((Path(__file__).parent / f"{module}.py").read_bytes())
    return digest.hexdigest()[:16]


def plan_key(chunks: list[Chunk]) -> str:
    return fingerprint([asdict(c) for c in chunks])


def _check_request(process: str, detector: str, n_events: int, extra: tuple[str, ...]) -> list[str]:
    if detector not in DETECTORS:
        raise CrossfedError(f"unknown detector {detector!r}; known detectors: {', '.join(DETECTORS)}")
    if not isinstance(n_events, int) or n_events <= 0:
        raise CrossfedError(f"the number of events must be a positive integer, got {n_events}")
    settings = pythia_settings(process, tuple(extra))
    check_settings(settings)
    return settings


def generate(
    process: str,
    detector: str,
    n_events: int,
    seed: int,
    out: str | Path,
    *,
    workers: int | None = None,
    preselect: bool = True,
    pythia_settings: tuple[str, ...] | list[str] = (),
    progress: bool = True,
    forced_decays: bool = True,
    address: str | None = None,
    node_group: str | None = None,
) -> dict:
    """Generate `n_events` events (counted after preselection) of `process` seen by `detector` into `out`.

    `out`: a local path or an fsspec URI (s3://...). `workers`: chunks run at once (default: every CPU
    of the machine, or of `node_group`'s nodes); they run as Ray tasks, on `address` / RAY_ADDRESS or an
    embedded Ray (one worker without either runs in this process). `node_group`: run on the nodes labelled
    crossfed.io/experiment=<node_group>. `forced_decays`: decay_filter.py for the top processes.
    Running the same request again after an interruption reuses the chunks already finished.
    """
    from crossfed.generate import tasks

    out = str(out)
    extra = tuple(pythia_settings)
    settings = _check_request(process, detector, n_events, extra)
    storage.check_writable(out)
    filtered = uses_decay_filter(process, extra, preselect, forced_decays)
    chunks = plan_chunks(settings, detector, n_events, seed, preselect, filtered)
    key = plan_key(chunks)
    staging = tasks.Staging(out, key)

    started = time.perf_counter()
    try:
        with tasks.chunk_runner(workers, len(chunks), address, node_group) as runner, \
                tasks.progress_bar(progress) as bar:
            results = runner.run(chunks, staging, bar, f"{process} ({detector})", n_events)
    except BaseException:
        staging.remove_if_empty()  # finished chunks stay for the next run; an empty folder does not
        raise
    generation_seconds = time.perf_counter() - started

    metadata = generation_metadata(process, settings, extra, detector, seed, preselect, results, filtered) | dict(
        fingerprint=key)
    started = time.perf_counter()
    _merge(staging, chunks, detector, out, metadata)
    writing_seconds = time.perf_counter() - started
    staging.remove()
    return metadata | dict(path=out, workers=runner.workers, generation_seconds=generation_seconds,
                           writing_seconds=writing_seconds, resumed_chunks=runner.resumed,
                           nodes=sorted({r["node"] for r in results if r.get("node")}))


def _merge(staging, chunks: list[Chunk], detector: str, out: str, metadata: dict) -> None:
    """The chunks' events, in chunk order, into the output file (written whole or not at all)."""
    from crossfed.generate.writer import read_branches, write_branches

    missing = [chunk.index for chunk in chunks if not storage.exists(staging.events(chunk.index))]
    if missing:
        raise CrossfedError(f"{out}: {len(missing)} finished chunks are not in {staging.folder} as seen from here "
                            "(written to other nodes' own disks?); give an output all nodes share, e.g. s3://...")
    with tempfile.TemporaryDirectory(prefix="crossfed-merge-") as scratch:
        paths = [storage.fetch(staging.events(chunk.index), Path(scratch)) for chunk in chunks]
        branches = read_branches(paths, detector)
        storage.write_file(out, lambda temporary: write_branches(temporary, detector, branches, metadata))


def generation_metadata(process, settings, extra, detector, seed, preselect, results, filtered) -> dict:
    import fastjet

    from importlib.metadata import version

    from crossfed.generate.decay_filter import DESCRIPTION

    generated = sum(r["generated"] for r in results)
    written = sum(r["accepted"] for r in results)
    return dict(
        process=process, pythia_settings=list(settings), extra_pythia_settings=list(extra), detector=detector,
        seed=seed, preselection=preselect, n_generated=generated, n_events=written,
        efficiency=written / generated if generated else 0.0,
        forced_decays=DESCRIPTION if filtered else None,
        **combined_cross_section(results),
        generator=f"pythia8mc {version('pythia8mc')}", fastjet=fastjet.__version__, crossfed=__version__,
    )


def measure(process: str, detector: str, n_generated: int, seed: int, *, pythia_settings=(), workers=None,
            progress: bool = True, forced_decays: bool = True, address: str | None = None,
            node_group: str | None = None) -> dict:
    """Cross-section (sigma x BR with forced decays) and preselection efficiency from `n_generated` events
    (nothing is written)."""
    from crossfed.generate import tasks

    extra = tuple(pythia_settings)
    settings = _check_request(process, detector, n_generated, extra)
    filtered = uses_decay_filter(process, extra, True, forced_decays)
    chunks = [Chunk(i, tuple(settings), detector, seed, True, filtered, None, size, 1, BATCH_EVENTS, EARLY_GIVE_UP)
              for i, size in enumerate(_chunk_sizes(n_generated, PILOT_CHUNK_EVENTS))]
    with tasks.chunk_runner(workers, len(chunks), address, node_group) as runner, \
            tasks.progress_bar(progress) as bar:
        results = runner.run(chunks, None, bar, f"pilot {process} ({detector})", n_generated)
    accepted = sum(r["accepted"] for r in results)
    return dict(process=process, **combined_cross_section(results), efficiency=accepted / n_generated,
                n_generated=n_generated, n_accepted=accepted)
