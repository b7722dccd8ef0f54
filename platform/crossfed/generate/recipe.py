"""Dataset recipes (`jobs/datasets/*.yaml`): all the generated data of one study, for each detector.

- collision data: an unlabelled mixture of SM processes in proportion to the cross-section Pythia
  reports times the preselection efficiency (both measured on a pilot run), for pre-training;
- labelled samples: signal and background files per downstream task (tth vs ttbar, hplus vs ttbar).
Output files: <output_dir>/<detector>/collision_data.root and <output_dir>/<detector>/<process>.root,
in a local folder or under a storage URI (s3://...). Making a recipe again skips the files already made
for the same request and continues an interrupted file from its finished chunks.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from crossfed.errors import CrossfedError
from crossfed.generate import storage


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollisionData(_Strict):
    events: PositiveInt = Field(description="events in the mixture, after preselection")
    processes: list[str] = Field(default_factory=lambda: ["ttbar", "wjets", "zjets", "single_top"], min_length=1)
    pilot_events: PositiveInt = Field(500, description="generated events per process to measure sigma × efficiency")


class LabelledTask(_Strict):
    signal: str
    background: str
    events: PositiveInt = Field(description="events per class, after preselection")


class Recipe(_Strict):
    name: str
    output_dir: str = Field(description="relative to the recipe file, or a storage URI (s3://bucket/prefix)")
    seed: int = 0
    detectors: list[Literal["cms", "atlas"]] = Field(default_factory=lambda: ["cms", "atlas"], min_length=1)
    workers: PositiveInt | None = None
    forced_decays: bool = Field(True, description="force the top processes' W decays (generate/decay_filter.py)")
    node_groups: dict[Literal["cms", "atlas"], str] = Field(
        default_factory=dict, description="detector -> node group (label crossfed.io/experiment) to generate on")
    collision_data: CollisionData | None = None
    labelled: dict[str, LabelledTask] = Field(default_factory=dict)


def load_recipe(path: str | Path) -> Recipe:
    from crossfed.config import describe_validation_error, read_yaml
    from crossfed.generate.processes import PROCESSES

    raw = read_yaml(path)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as err:
        raise CrossfedError(describe_validation_error(err, str(path))) from None
    named = [*(recipe.collision_data.processes if recipe.collision_data else [])]
    named += [p for task in recipe.labelled.values() for p in (task.signal, task.background)]
    for process in named:
        if process not in PROCESSES:
            raise CrossfedError(f"{path}: unknown process {process!r}; known processes: {', '.join(sorted(PROCESSES))}")
    if not storage.is_uri(recipe.output_dir):
        recipe.output_dir = str((Path(path).resolve().parent / recipe.output_dir).resolve())
    return recipe


def mixture_counts(rates: dict[str, float], total: int) -> dict[str, int]:
    """Split `total` events in proportion to rates (largest remainders), so the counts add up exactly."""
    norm = sum(rates.values())
    if norm <= 0:
        raise CrossfedError("no process of the collision-data mixture passes the preselection")
    exact = {p: total * r / norm for p, r in rates.items()}
    counts = {p: int(x) for p, x in exact.items()}
    for p in sorted(exact, key=lambda p: counts[p] - exact[p])[: total - sum(counts.values())]:
        counts[p] += 1
    return counts


def make_recipe(path: str | Path, *, progress: bool = True, address: str | None = None,
                workers: int | None = None) -> list[dict]:
    """Generate every file of a recipe (on `address` / RAY_ADDRESS, else an embedded Ray; `workers` overrides
    the recipe's, which does not change the events); one summary per file."""
    from crossfed.generate.core import CHUNKS_PER_FILE
    from crossfed.ray_session import connect_ray
    from crossfed.generate.tasks import needs_ray

    recipe = load_recipe(path)
    if workers is not None:
        recipe.workers = workers
    summaries = []
    # One Ray for the whole recipe (when there is anything to spread): starting it takes seconds.
    spread = needs_ray(recipe.workers, CHUNKS_PER_FILE, address, next(iter(recipe.node_groups.values()), None))
    with connect_ray(address, log_to_driver=False) if spread else contextlib.nullcontext():
        for d, detector in enumerate(recipe.detectors):
            folder = storage.join(recipe.output_dir, detector)
            storage.make_folder(folder)
            seed = recipe.seed + 1000 * d  # each detector sees different events, like two real experiments
            if recipe.collision_data:
                summaries.append(_collision_data(recipe, detector, folder, seed, progress))
            summaries += _labelled(recipe, detector, folder, seed, progress)
    return summaries


def _labelled(recipe: Recipe, detector: str, folder: str, seed: int, progress: bool) -> list[dict]:
    """One file per signal and background; a background shared by several tasks (ttbar) is made once,
    with the most events asked for."""
    from crossfed.generate.core import generate
    from crossfed.generate.processes import PROCESSES

    labelled = {p: max(t.events for t in recipe.labelled.values() if p in (t.signal, t.background))
                for t in recipe.labelled.values() for p in (t.signal, t.background)}
    summaries = []
    for process, events in sorted(labelled.items()):
        request = dict(process=process, detector=detector, n_events=events,
                       seed=seed + 10 + list(PROCESSES).index(process), forced_decays=recipe.forced_decays)
        out = storage.join(folder, f"{process}.root")
        summaries.append(_made_already(out, request_key(**request)) or generate(
            **request, out=out, workers=recipe.workers, progress=progress,
            node_group=recipe.node_groups.get(detector)))
    return summaries


def request_key(process: str, detector: str, n_events: int, seed: int, forced_decays: bool = True) -> str:
    """The fingerprint generate() stores in a file's metadata for this request (preselected, no extra settings)."""
    from crossfed.generate.core import plan_chunks, plan_key
    from crossfed.generate.processes import pythia_settings, uses_decay_filter

    filtered = uses_decay_filter(process, (), True, forced_decays)
    return plan_key(plan_chunks(pythia_settings(process), detector, n_events, seed, True, filtered))


def _made_already(out: str, key: str) -> dict | None:
    """The metadata (and path) of `out` if it exists and was made for this very request, else None."""
    from crossfed.generate.writer import read_metadata

    if not storage.exists(out):
        return None
    with tempfile.TemporaryDirectory(prefix="crossfed-check-") as scratch:
        try:
            metadata = read_metadata(storage.fetch(out, Path(scratch)))
        except CrossfedError:
            return None  # not one of ours, or unreadable: made again
    return metadata | dict(path=out, resumed_chunks="all") if metadata.get("fingerprint") == key else None


def _collision_data(recipe: Recipe, detector: str, folder: str, seed: int, progress: bool) -> dict:
    """Measure each SM process (pilot runs), generate its share, merge the shares into one shuffled file.

    Pilots and shares are kept in <folder>/.collision_data.parts/ until the file is written, so an
    interrupted mixture continues from them."""
    import awkward as ak
    import numpy as np

    from crossfed.generate.core import generate
    from crossfed.generate.writer import group_branches, read_arrays, read_metadata, write_branches

    spec = recipe.collision_data
    out = storage.join(folder, "collision_data.root")
    key = _mixture_key(recipe, detector, seed)
    if made := _made_already(out, key):
        return made
    parts_folder = storage.join(folder, ".collision_data.parts")
    storage.make_folder(parts_folder)
    pilots = _pilots(recipe, detector, seed, storage.join(parts_folder, f"pilots-{key}.json"), progress)
    counts = mixture_counts({p: m["cross_section_pb"] * m["efficiency"] for p, m in pilots.items()}, spec.events)
    node_group = recipe.node_groups.get(detector)
    parts = {}
    for i, (process, n) in enumerate(counts.items()):
        if n:
            parts[process] = storage.join(parts_folder, f"{process}.root")
            request = dict(process=process, detector=detector, n_events=n, seed=seed + 100 + i,
                           forced_decays=recipe.forced_decays)
            if not _made_already(parts[process], request_key(**request)):
                generate(**request, out=parts[process], workers=recipe.workers, progress=progress,
                         node_group=node_group)
    with tempfile.TemporaryDirectory(prefix="crossfed-mixture-") as scratch:
        local = {p: storage.fetch(location, Path(scratch)) for p, location in parts.items()}
        arrays = read_arrays(list(local.values()), detector)
        versions = {k: v for k, v in read_metadata(next(iter(local.values()))).items()
                    if k in ("generator", "fastjet", "crossfed")}
    arrays = arrays[np.random.default_rng(seed).permutation(len(arrays))]  # collision data has no order by process
    event_number = "event" if detector == "cms" else "eventNumber"  # unique again after the merge
    arrays[event_number] = np.arange(1, len(arrays) + 1, dtype=ak.to_numpy(arrays[event_number]).dtype)
    branches = group_branches(arrays, detector)
    metadata = dict(process="collision_data", detector=detector, seed=seed, n_events=len(arrays), **versions,
                    forced_decays=recipe.forced_decays, fingerprint=key,
                    mixture={p: dict(pilots[p], n_events=counts[p]) for p in counts})
    storage.write_file(out, lambda temporary: write_branches(temporary, detector, branches, metadata))
    storage.remove_folder(parts_folder)
    return metadata | dict(path=out)


def _mixture_key(recipe: Recipe, detector: str, seed: int) -> str:
    """What the collision-data file depends on: the mixture's spec, its seed and the generator."""
    from crossfed.generate.core import fingerprint

    return fingerprint(dict(spec=recipe.collision_data.model_dump(), detector=detector, seed=seed,
                            forced_decays=recipe.forced_decays))


def _pilots(recipe: Recipe, detector: str, seed: int, saved: str, progress: bool) -> dict[str, dict]:
    """sigma × efficiency of each process from its pilot run, or from an earlier run's saved result."""
    from crossfed.generate.core import measure

    if storage.exists(saved):
        return json.loads(storage.read_text(saved))
    spec = recipe.collision_data
    pilots = {p: measure(p, detector, spec.pilot_events, seed + 500 + i, workers=recipe.workers, progress=progress,
                         forced_decays=recipe.forced_decays, node_group=recipe.node_groups.get(detector))
              for i, p in enumerate(spec.processes)}
    for process, pilot in pilots.items():
        if pilot["n_accepted"] == 0:
            _warn(f"{process} ({detector}): none of {spec.pilot_events} pilot events passed the preselection; "
                  f"it is left out of the collision data (raise collision_data.pilot_events)")
    storage.write_text(saved, json.dumps(pilots))
    return pilots


def _warn(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[yellow]warning:[/] {message}")
