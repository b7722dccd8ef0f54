"""`generate()`: Pythia 8 events through a detector response into one ROOT file, in parallel.

Determinism: the requested events are cut into fixed chunks of CHUNK_EVENTS written events; chunk i
gets its own seeds from SeedSequence([seed, i]), so the file is the same for any number of workers.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from crossfed import __version__
from crossfed.errors import CrossfedError
from crossfed.generate.detector import (
    DETECTORS, DetectorResponse, TruthBatch, may_pass_preselection, passes_preselection, reconstruct, split_events,
)
from crossfed.generate.processes import pythia_settings
from crossfed.generate.pythia import (
    MAX_PYTHIA_SEED, ChargeTable, check_settings, initialise, new_pythia, next_batch, silenced_stdout, truth_batch,
)
from crossfed.generate.writer import write_root

CHUNK_EVENTS = 100
# Events per Pythia batch call and per vectorised detector pass (fixed, so the output is the same for any worker count).
BATCH_EVENTS = 50
# Give up on a chunk when the preselection accepts fewer than 1 in this many generated events
# (W+jets passes about 1 in 1000), or none of the first EARLY_GIVE_UP ones.
MAX_GENERATED_PER_WRITTEN = 2000
EARLY_GIVE_UP = 20_000


@dataclass(frozen=True)
class Chunk:
    index: int
    settings: tuple[str, ...]
    detector: str
    seed: int
    preselect: bool
    target_written: int | None  # stop after this many accepted events ...
    max_generated: int  # ... or after this many generated ones


def _chunk_seeds(seed: int, index: int) -> tuple[int, np.random.Generator]:
    state = np.random.SeedSequence([seed, index]).generate_state(2)
    return int(state[0]) % MAX_PYTHIA_SEED + 1, np.random.default_rng(int(state[1]))


def run_chunk(chunk: Chunk) -> dict:
    """Generate, reconstruct and preselect one chunk's events (runs in a worker process).

    Events come from Pythia BATCH_EVENTS at a time and go through the detector together; in the last
    batch only the events up to the last one needed count as generated, as if produced one by one.
    """
    pythia_seed, rng = _chunk_seeds(chunk.seed, chunk.index)
    pythia = new_pythia(list(chunk.settings), seed=pythia_seed)
    initialise(pythia, list(chunk.settings))
    charges = ChargeTable(pythia)
    detector = DETECTORS[chunk.detector]
    events, generated, failures_in_a_row = [], 0, 0
    with silenced_stdout():  # the first fastjet clustering prints a banner
        while generated < chunk.max_generated and (chunk.target_written is None or len(events) < chunk.target_written):
            if generated > EARLY_GIVE_UP and not events and chunk.target_written:
                break  # reported by generate() as a preselection that accepts (almost) nothing
            batch, failed = next_batch(pythia, min(BATCH_EVENTS, chunk.max_generated - generated))
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
                sigma_pb=info.sigmaGen() * 1e9, sigma_error_pb=info.sigmaErr() * 1e9)  # Pythia gives mb


def _select(truth: TruthBatch, detector: DetectorResponse, rng: np.random.Generator,
            preselect: bool) -> tuple[list[tuple[int, dict]], int]:
    """(position in the batch, reconstructed event) of the events kept, and the batch's size."""
    candidates = may_pass_preselection(truth, detector) if preselect else np.ones(truth.n_events, bool)
    positions = np.flatnonzero(candidates)  # the truth-level pre-check drops events before the detector
    truth = truth.subset(candidates)
    reco = reconstruct(truth, detector, rng)
    kept = np.flatnonzero(passes_preselection(reco, truth.n_events, detector.btag_working_point) if preselect
                          else np.ones(truth.n_events, bool))
    return list(zip(positions[kept].tolist(), split_events(reco, truth.n_events, kept))), len(candidates)


def _combined_cross_section(results: list[dict]) -> tuple[float, float]:
    """Average the chunks' cross-sections weighted by events generated; errors add in quadrature."""
    n = np.array([r["generated"] for r in results], float)
    sigma = np.array([r["sigma_pb"] for r in results])
    error = np.array([r["sigma_error_pb"] for r in results])
    return float((n * sigma).sum() / n.sum()), float(np.sqrt(((n * error) ** 2).sum()) / n.sum())


def run_chunks(chunks: list[Chunk], workers: int, progress, total: int, describe: str) -> list[dict]:
    """Run chunks in a spawn pool (or in-process for one worker), advancing a rich progress bar."""
    task = progress.add_task(describe, total=total) if progress else None
    results = []

    def done(result: dict) -> None:
        results.append(result)
        if progress:
            progress.advance(task, len(result["events"]) if chunks[0].target_written else result["generated"])

    if workers <= 1:
        for chunk in chunks:
            done(run_chunk(chunk))
    else:
        # spawn, not fork: the parent may hold Ray or torch threads that fork would copy half-locked.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for result in pool.imap_unordered(run_chunk, chunks):
                done(result)
    return sorted(results, key=lambda r: r["index"])


def _chunk_sizes(total: int, size: int) -> list[int]:
    """Fixed chunking: full chunks of `size`, then the remainder (the same for any worker count)."""
    return [size] * (total // size) + ([total % size] if total % size else [])


def _worker_count(workers: int | None, n_chunks: int) -> int:
    if workers is not None and workers < 1:
        raise CrossfedError(f"--workers must be at least 1, got {workers}")
    return max(1, min(workers or os.cpu_count() or 1, n_chunks))


def _check_output(out: Path) -> None:
    if out.is_dir():
        raise CrossfedError(f"{out}: is a directory; give a file name such as {out / 'events.root'}")
    if not out.parent.is_dir():
        raise CrossfedError(f"{out}: the folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise CrossfedError(f"{out}: the folder {out.parent} is not writable")


def _check_request(process: str, detector: str, n_events: int, extra: tuple[str, ...]) -> list[str]:
    if detector not in DETECTORS:
        raise CrossfedError(f"unknown detector {detector!r}; known detectors: {', '.join(DETECTORS)}")
    if not isinstance(n_events, int) or n_events <= 0:
        raise CrossfedError(f"the number of events must be a positive integer, got {n_events}")
    settings = pythia_settings(process, tuple(extra))
    check_settings(settings)
    return settings


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if not enabled:
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=False)


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
) -> dict:
    """Generate `n_events` events (counted after preselection) of `process` seen by `detector` into `out`."""
    out = Path(out)
    extra = tuple(pythia_settings)
    settings = _check_request(process, detector, n_events, extra)
    _check_output(out)
    chunks = [Chunk(i, tuple(settings), detector, seed, preselect, size, size * MAX_GENERATED_PER_WRITTEN)
              for i, size in enumerate(_chunk_sizes(n_events, CHUNK_EVENTS))]
    workers = _worker_count(workers, len(chunks))

    started = time.perf_counter()
    bar = _progress(progress)
    with bar or contextlib.nullcontext():
        results = run_chunks(chunks, workers, bar, n_events, f"{process} ({detector})")
    generation_seconds = time.perf_counter() - started
    for chunk, result in zip(chunks, results):
        if len(result["events"]) < chunk.target_written:
            raise CrossfedError(
                f"{process} ({detector}): the preselection accepted only {len(result['events'])} of "
                f"{result['generated']} generated events; use --no-preselection or another process"
            )

    events = [e for r in results for e in r["events"]]
    generated = sum(r["generated"] for r in results)
    sigma, sigma_error = _combined_cross_section(results)
    metadata = generation_metadata(process, settings, extra, detector, seed, preselect, generated, len(events), sigma, sigma_error)
    started = time.perf_counter()
    write_atomically(out, lambda temporary: write_root(temporary, detector, events, metadata))
    writing_seconds = time.perf_counter() - started
    return metadata | dict(path=str(out), workers=workers, generation_seconds=generation_seconds,
                           writing_seconds=writing_seconds)


def generation_metadata(process, settings, extra, detector, seed, preselect, generated, written, sigma, sigma_error) -> dict:
    import fastjet
    import pythia8mc  # noqa: F401 - the wheel's version is the distribution's

    from importlib.metadata import version

    return dict(
        process=process, pythia_settings=list(settings), extra_pythia_settings=list(extra), detector=detector,
        seed=seed, preselection=preselect, n_generated=generated, n_events=written,
        efficiency=written / generated if generated else 0.0,
        cross_section_pb=sigma, cross_section_error_pb=sigma_error,
        generator=f"pythia8mc {version('pythia8mc')}", fastjet=fastjet.__version__, crossfed=__version__,
    )


def write_atomically(out: Path, write: Callable[[Path], None]) -> None:
    """`write(temporary)` next to the target, then rename: an error never leaves a half-written file."""
    temporary = out.parent / f".{out.name}.{os.getpid()}.tmp"
    try:
        write(temporary)
        os.replace(temporary, out)
    except OSError as err:
        raise CrossfedError(f"{out}: cannot write: {err.strerror or err}") from None
    finally:
        temporary.unlink(missing_ok=True)


def measure(process: str, detector: str, n_generated: int, seed: int, *, pythia_settings=(), workers=None,
            progress: bool = True) -> dict:
    """Cross-section and preselection efficiency from `n_generated` events (nothing is written)."""
    settings = _check_request(process, detector, n_generated, tuple(pythia_settings))
    chunks = [Chunk(i, tuple(settings), detector, seed, True, None, size)
              for i, size in enumerate(_chunk_sizes(n_generated, 5 * CHUNK_EVENTS))]
    bar = _progress(progress)
    with bar or contextlib.nullcontext():
        results = run_chunks(chunks, _worker_count(workers, len(chunks)), bar, n_generated,
                             f"pilot {process} ({detector})")
    sigma, sigma_error = _combined_cross_section(results)
    accepted = sum(len(r["events"]) for r in results)
    return dict(process=process, cross_section_pb=sigma, cross_section_error_pb=sigma_error,
                efficiency=accepted / n_generated, n_generated=n_generated, n_accepted=accepted)
