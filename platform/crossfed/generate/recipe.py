"""Dataset recipes (`jobs/datasets/*.yaml`): all the generated data of one study, for each detector.

- collision data: an unlabelled mixture of SM processes in proportion to the cross-section Pythia
  reports times the preselection efficiency (both measured on a pilot run), for pre-training;
- labelled samples: signal and background files per downstream task (tth vs ttbar, hplus vs ttbar).
Output files: <output_dir>/<detector>/collision_data.root and <output_dir>/<detector>/<process>.root.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from crossfed.errors import CrossfedError


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
    output_dir: str = Field(description="relative to the recipe file")
    seed: int = 0
    detectors: list[Literal["cms", "atlas"]] = Field(default_factory=lambda: ["cms", "atlas"], min_length=1)
    workers: PositiveInt | None = None
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


def make_recipe(path: str | Path, *, progress: bool = True) -> list[dict]:
    """Generate every file of a recipe; returns one summary per file written."""
    from crossfed.generate.core import generate
    from crossfed.generate.processes import PROCESSES

    recipe = load_recipe(path)
    summaries = []
    for d, detector in enumerate(recipe.detectors):
        folder = Path(recipe.output_dir) / detector
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CrossfedError(f"{folder}: cannot create the output folder: {err.strerror}") from None
        seed = recipe.seed + 1000 * d  # each detector sees different events, like two real experiments
        if recipe.collision_data:
            summaries.append(_collision_data(recipe, detector, folder, seed, progress))
        # A background shared by several tasks (ttbar) is generated once, with the most events asked for.
        labelled = {p: max(t.events for t in recipe.labelled.values() if p in (t.signal, t.background))
                    for t in recipe.labelled.values() for p in (t.signal, t.background)}
        for process, events in sorted(labelled.items()):
            summaries.append(generate(process, detector, events, seed + 10 + list(PROCESSES).index(process),
                                      folder / f"{process}.root", workers=recipe.workers, progress=progress))
    return summaries


def _collision_data(recipe: Recipe, detector: str, folder: Path, seed: int, progress: bool) -> dict:
    """Measure each SM process, generate its share, merge the shares into one shuffled file."""
    import awkward as ak
    import numpy as np
    import uproot

    from crossfed.generate.core import generate, measure, write_atomically
    from crossfed.generate.writer import TREE_NAMES, read_metadata, write_branches

    spec = recipe.collision_data
    pilots = {p: measure(p, detector, spec.pilot_events, seed + 500 + i, workers=recipe.workers, progress=progress)
              for i, p in enumerate(spec.processes)}
    for process, pilot in pilots.items():
        if pilot["n_accepted"] == 0:
            _warn(f"{process} ({detector}): none of {spec.pilot_events} pilot events passed the preselection; "
                  f"it is left out of the collision data (raise collision_data.pilot_events)")
    counts = mixture_counts({p: m["cross_section_pb"] * m["efficiency"] for p, m in pilots.items()}, spec.events)
    out = folder / "collision_data.root"
    with tempfile.TemporaryDirectory(dir=folder, prefix=".mixture-") as scratch:
        parts = {}
        for i, (process, n) in enumerate(counts.items()):
            if n:
                generate(process, detector, n, seed + 100 + i, Path(scratch) / f"{process}.root",
                         workers=recipe.workers, progress=progress)
                parts[process] = Path(scratch) / f"{process}.root"
        tree = TREE_NAMES[detector]
        arrays = ak.concatenate([uproot.open(f)[tree].arrays() for f in parts.values()])
        arrays = arrays[np.random.default_rng(seed).permutation(len(arrays))]  # collision data has no order by process
        event_number = "event" if detector == "cms" else "eventNumber"  # unique again after the merge
        arrays[event_number] = np.arange(1, len(arrays) + 1, dtype=arrays[event_number].type.content.primitive)
        versions = {k: v for k, v in read_metadata(next(iter(parts.values()))).items()
                    if k in ("generator", "fastjet", "crossfed")}
        metadata = dict(process="collision_data", detector=detector, seed=seed, n_events=len(arrays), **versions,
                        mixture={p: dict(pilots[p], n_events=counts[p]) for p in counts})
        branches = _regroup(arrays, detector)
        write_atomically(out, lambda temporary: write_branches(temporary, detector, branches, metadata))
    return metadata | dict(path=str(out))


def _warn(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[yellow]warning:[/] {message}")


def _regroup(arrays, detector: str) -> dict:
    """Flat fields read back (Jet_pt, lep_pt ...) -> records per collection, so the counters are written again."""
    import awkward as ak

    is_counter = (lambda f: f.startswith("n") and f[1:2].isupper()) if detector == "cms" else (lambda f: f.endswith("_n"))
    groups: dict[str, dict] = {}
    flat = {}
    for field in arrays.fields:
        if is_counter(field):
            continue
        prefix, _, rest = field.partition("_")
        if rest and arrays[field].ndim == 2:
            groups.setdefault(prefix, {})[rest] = arrays[field]
        else:
            flat[field] = arrays[field]
    return flat | {name: ak.zip(fields) for name, fields in groups.items()}
