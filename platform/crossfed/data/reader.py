"""ROOT files (TTree or RNTuple) of any experiment -> padded `EventBatch` arrays, chunk by chunk.

Each file is read with `uproot.iterate` in steps of `chunk_size` (bounded memory). Per chunk:
1. the schema's branches become physics objects in GeV (`_objects`); jets get the first usable b-tag
   discriminant among the schema's candidates (btag.py);
2. events with non-finite kinematics are dropped (counted, warned);
3. each collection's object definition is applied, then overlap removal between collections (objects.py);
4. MET is read, or rebuilt from the selected objects and a soft term (met.py);
5. the selection is applied on the full lists of selected objects, then objects are ordered and
   truncated as docs/architecture.md says: MET, electrons and muons by pT, taus, photons, jets by pT
   (softest jets go first).
What each step did (object efficiencies, the b-tagger and MET source used, cuts skipped) is counted in
`ReadStats` for `crossfed inspect`, and anything a physicist must know is also a warning.

Speed: every step is a numpy operation over all objects of the chunk, on flat columns (jagged.py), and
the next chunk is read in a thread while this one is processed, its baskets decompressed by a pool of
threads (`decompression_threads`). benchmarks/read_events.py compares the
reader with plain `uproot.iterate` of the same branches; tests/data/test_reader_reference.py holds it to
the bits of the awkward-record implementation it replaced.
"""

from __future__ import annotations

import functools
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from crossfed import kinematics
from crossfed.config.data import parse_chunk_size
from crossfed.data import btag
from crossfed.data.events import FEATURES, EventBatch, ObjectType
from crossfed.data.files import expand_files, find_tree, first_line, list_trees, open_root  # noqa: F401 (API)
from crossfed.data.jagged import Jagged, from_awkward, ranges
from crossfed.data.met import met_xy, rebuild
from crossfed.data.objects import apply_definition, cut_field, remove_overlaps
from crossfed.data.schema import BtagCandidate, CollectionSpec, Cut, MetSpec, Schema, load_schema
from crossfed.data.selection import VARIABLES, Selection, parse_selection
from crossfed.errors import CrossfedError, did_you_mean

COLLECTION_TYPES = {"electrons": ObjectType.ELECTRON, "muons": ObjectType.MUON, "taus": ObjectType.TAU,
                    "photons": ObjectType.PHOTON, "jets": ObjectType.JET}
_FIELDS = (*FEATURES, "object_type")
_FIELD_TYPES = {**{name: np.float64 for name in FEATURES}, "object_type": np.int8}  # an ObjectType per object
NO_BTAG = "no discriminant (jets not b-tagged)"


@dataclass
class ReadStats:
    files: int = 0
    events_read: int = 0  # entries in the trees
    events_dropped: int = 0  # non-finite kinematics
    events_selected: int = 0  # finite and passing the selection (before max_events)
    from_cache: bool = False
    # collection -> stage (objects.STAGES) -> objects left after it, counted in events with finite kinematics
    objects: dict[str, dict[str, int]] = field(default_factory=dict)
    btag: dict[str, int] = field(default_factory=dict)  # "Jet_btagCSVV2 > 0.8" -> events tagged with it
    btag_rejected: dict[str, int] = field(default_factory=dict)  # why a candidate was passed over -> chunks
    met: dict[str, int] = field(default_factory=dict)  # MET source -> events
    skipped_cuts: list[str] = field(default_factory=list)  # optional cuts whose branch a file lacks

    def add(self, other: ReadStats) -> None:
        self.files += other.files
        self.events_read += other.events_read
        self.events_dropped += other.events_dropped
        self.events_selected += other.events_selected
        for kind, stages in other.objects.items():
            mine = self.objects.setdefault(kind, {})
            for stage, n in stages.items():
                mine[stage] = mine.get(stage, 0) + n
        for name in ("btag", "btag_rejected", "met"):
            mine = getattr(self, name)
            for key, n in getattr(other, name).items():
                mine[key] = mine.get(key, 0) + n
        self.skipped_cuts += [s for s in other.skipped_cuts if s not in self.skipped_cuts]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CollectionPlan:
    """One collection as this file has it: branch names for each feature, b-tag candidate and cut."""

    spec: CollectionSpec
    features: dict[str, str]  # feature -> branch in the file
    btag: list[tuple[BtagCandidate, str]]  # candidates the file has, in the schema's order
    cuts: list[tuple[int, str, Cut, str]]  # (field index, stage, cut, branch in the file)


@dataclass
class ReadPlan:
    """What to read from one file's tree and how: the schema resolved against the branches it has."""

    tree_name: str
    collections: dict[str, CollectionPlan]
    met: MetSpec | None
    met_branches: dict[str, str]  # met key (pt, px, term_names, ...) -> branch in the file
    skipped_cuts: list[str]

    def branches(self) -> dict[str, str]:
        """Array key ("jets.pt", "jets.btag1", "muons.cut0", "met.px") -> branch name in the file."""
        keys = {}
        for kind, plan in self.collections.items():
            keys.update({f"{kind}.{feature}": name for feature, name in plan.features.items()})
            keys.update({f"{kind}.btag{i}": name for i, (_, name) in enumerate(plan.btag)})
            keys.update({f"{kind}.{cut_field(i)}": name for i, _, _, name in plan.cuts})
        keys.update({f"met.{key}": name for key, name in self.met_branches.items()})
        return keys


def read_events(
    files: list[str],
    schema: Schema | str,
    *,
    selection: str | None = None,
    max_objects: int = 16,
    chunk_size: str | int = "100 MB",
    max_events: int | None = None,
) -> tuple[EventBatch, ReadStats]:
    """Read, define, select and pad the events of some ROOT files (globs and fsspec URLs allowed)."""
    schema = load_schema(schema) if isinstance(schema, str) else schema
    step_size = _step_size(chunk_size)
    cut = parse_selection(selection)
    paths = expand_files(files)
    output, stats = EventOutput(max_objects), ReadStats()
    for path in paths:
        for chunk_stats in _read_file(path, schema, cut, output, step_size, max_events):
            stats.add(chunk_stats)
            if max_events is not None and output.filled >= max_events:
                break
        else:
            continue
        break
    stats.files = len(paths)
    where = ", ".join(paths)
    if stats.events_read and stats.events_dropped == stats.events_read:
        raise CrossfedError(f"{where}: no events left after dropping {stats.events_dropped} with NaN/inf kinematics")
    _warn_about(stats, where)
    if cut is not None and stats.events_read and not stats.events_selected:
        raise CrossfedError(f"selection {selection!r} keeps none of the {stats.events_read} events in {where}"
                            + _empty_selection_hint(stats))
    batch = output.events()
    if max_events is not None:
        batch = batch.take(slice(0, max_events))
    return batch, stats


class EventOutput:
    """Where a read puts its events: one buffer, filled chunk after chunk, of which the result is a view.
    Joining per-chunk arrays at the end would copy every event once more, and fault in every page of a
    second events-sized buffer. Each file reserves room for all its entries: `np.zeros` maps pages
    lazily, so the room the selection leaves unused costs address space, not memory."""

    def __init__(self, max_objects: int):
        self.buffer = EventBatch.zeros(0, max_objects)
        self.filled = 0

    def reserve(self, n_more: int) -> None:
        """Room for `n_more` events after the filled ones. Growing copies those, so it at least doubles."""
        needed = self.filled + n_more
        if needed <= len(self.buffer):
            return
        grown = EventBatch.zeros(max(needed, 2 * len(self.buffer)), self.buffer.max_objects)
        for name in ("features", "types", "mask"):
            getattr(grown, name)[:self.filled] = getattr(self.buffer, name)[:self.filled]
        self.buffer = grown

    def allocate(self, n: int) -> EventBatch:
        """The next `n` events' slots (zeros: padding), counted as filled."""
        self.reserve(n)
        slots = self.buffer.take(slice(self.filled, self.filled + n))
        self.filled += n
        return slots

    def events(self) -> EventBatch:
        return self.buffer.take(slice(0, self.filled))


def _warn_about(stats: ReadStats, where: str) -> None:
    """One warning per thing a physicist must know about this read (each reported once, not per chunk)."""
    if stats.events_dropped:
        warnings.warn(f"{stats.events_dropped} of {stats.events_read} event(s) with non-finite kinematics "
                      f"(NaN/inf) dropped while reading {where}", RuntimeWarning, stacklevel=3)
    if stats.btag_rejected:
        used = ", ".join(stats.btag) or NO_BTAG
        reasons = "; ".join(f"{why} in {n} chunk(s)" for why, n in stats.btag_rejected.items())
        warnings.warn(f"b-tag: {reasons} of {where}; used {used}", RuntimeWarning, stacklevel=3)
    if stats.skipped_cuts:
        warnings.warn(f"object definition cuts not applied, their branches are missing in {where}: "
                      f"{'; '.join(stats.skipped_cuts)}", RuntimeWarning, stacklevel=3)


def _empty_selection_hint(stats: ReadStats) -> str:
    """Why a selection may have kept nothing: no b-tagging, or a collection the definitions emptied."""
    reasons = ["no usable b-tag discriminant: no jet is b-tagged"] if NO_BTAG in stats.btag else []
    reasons += [f"the object definitions kept none of the {n['read']} {kind}" for kind, n in stats.objects.items()
                if n["read"] and not n["overlap"]]
    return f" ({'; '.join(reasons)})" if reasons else ""


def _step_size(chunk_size: str | int) -> str | int:
    """'100 MB' (memory per chunk) or a plain number of entries."""
    try:
        return parse_chunk_size(chunk_size)
    except ValueError as err:
        raise CrossfedError(f"chunk size {err}") from None


def decompression_threads() -> ThreadPoolExecutor:
    """The threads uproot decompresses baskets in (zlib, LZ4 and ZSTD release the GIL): reading a chunk
    then uses the cores the processing thread leaves idle. One pool per process, up to 4 threads (by
    pid: a forked child inherits the pool but not its threads)."""
    return _threads_of(os.getpid())


@functools.lru_cache(maxsize=1)
def _threads_of(pid: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="crossfed-decompress")


def _read_file(path: str, schema: Schema, cut: Selection | None, output: EventOutput, step_size,
               max_events: int | None):
    """Read one file's events into `output`, chunk by chunk; yields each chunk's statistics."""
    root_file = open_root(path)
    with root_file:
        tree_name, tree = find_tree(root_file, path, schema.tree_names)
        plan = plan_read(tree, path, tree_name, schema)
        branches = plan.branches()
        if not branches:
            return
        wanted = tree.num_entries if max_events is None else min(tree.num_entries, max_events - output.filled)
        output.reserve(wanted)
        chunks = tree.iterate(sorted(set(branches.values())), step_size=step_size, library="ak", how=dict,
                              decompression_executor=decompression_threads())
        first = True
        # One chunk is read ahead in a thread while this one is processed: uproot's decompression and
        # awkward's kernels release the GIL, so reading and processing overlap (two chunks in memory).
        with ThreadPoolExecutor(1, thread_name_prefix="crossfed-read-ahead") as read_ahead:
            upcoming = read_ahead.submit(next, chunks, None)
            while True:
                try:
                    chunk = upcoming.result()
                except Exception as err:  # noqa: BLE001 - damaged baskets, decompression failures, ...
                    raise CrossfedError(f"{path}: cannot read tree {tree_name!r}, the file may be truncated or "
                                        f"corrupt ({first_line(err)})") from None
                if chunk is None:
                    return
                upcoming = read_ahead.submit(next, chunks, None)
                arrays = {key: chunk[name] for key, name in branches.items()}
                try:
                    stats = _process_chunk(arrays, plan, schema, cut, output.allocate)
                except CrossfedError as err:
                    raise CrossfedError(f"{path}: {err}") from None
                if first:  # per file, not per chunk
                    stats.skipped_cuts = list(plan.skipped_cuts)
                    first = False
                yield stats


def plan_read(tree, path: str, tree_name: str, schema: Schema) -> ReadPlan:
    """Resolve every schema branch against the file's tree; a missing required one is a CrossfedError.

    Optional collections the file lacks are left out; optional cuts whose branch is missing are listed in
    `skipped_cuts`; b-tag candidates the file lacks are passed over; `met.prefer` is used when present.
    """
    available = set(tree.keys())
    is_rntuple = "RNTuple" in type(tree).__name__

    def lookup(name: str) -> str | None:
        if name in available:
            return name
        alternative = name.replace(".", ":")  # ATLAS RNTuple spelling of aux variables
        return alternative if is_rntuple and alternative in available else None

    def missing(name: str, key: str) -> CrossfedError:
        return CrossfedError(f"{path}: tree {tree_name!r} has no branch {name!r} (schema key {key})"
                             f"{did_you_mean(name, sorted(available))}")

    collections: dict[str, CollectionPlan] = {}
    skipped: list[str] = []
    for kind, spec in schema.collections:
        if spec is None:
            continue
        key = f"collections.{kind}"
        wanted = spec.feature_branches()
        found = {feature: lookup(name) for feature, name in wanted.items()}
        candidates = [(c, lookup(c.branch)) for c in spec.btag or []]
        btag_found = [(c, name) for c, name in candidates if name is not None]
        absent = [f for f, name in found.items() if name is None]
        if spec.optional and (absent or (candidates and not btag_found)):
            continue
        if absent:
            raise missing(wanted[absent[0]], f"{key}.{absent[0]}")
        if candidates and not btag_found:
            others = ", ".join(c.branch for c in spec.btag[1:])
            raise CrossfedError(str(missing(spec.btag[0].branch, f"{key}.btag"))
                                + (f"; nor the other candidates {others}" if others else ""))
        cuts = []
        for index, (stage, cut) in enumerate(spec.cuts()):
            name = lookup(cut.branch)
            if name is not None:
                cuts.append((index, stage, cut, name))
            elif cut.optional:
                skipped.append(f"{kind} {stage} {cut.describe()}")
            else:
                raise missing(cut.branch, f"{key}.{stage}")
        collections[kind] = CollectionPlan(spec, {f: n for f, n in found.items() if n is not None}, btag_found, cuts)

    met, met_branches = None, {}
    if schema.met is not None:
        for spec, key in ((schema.met.prefer, "met.prefer"), (schema.met, "met")):
            if spec is None:
                continue
            found = {k: lookup(name) for k, name in spec.branches().items()}
            absent = [k for k, name in found.items() if name is None]
            if not absent:
                met, met_branches = spec, found
                break
            if key == "met" and not spec.optional:
                raise missing(spec.branches()[absent[0]], f"met.{absent[0]}")
    return ReadPlan(tree_name, collections, met, met_branches, skipped)


def _process_chunk(arrays, plan: ReadPlan, schema: Schema, cut, allocate) -> ReadStats:
    """One chunk's events, defined, selected and padded into `allocate(n_kept)` (EventOutput.allocate)."""
    n_events = len(next(iter(arrays.values())))
    scale = schema.scale_to_gev
    stats = ReadStats(events_read=n_events)
    raw = {kind: _objects(kind, arrays, collection, scale) for kind, collection in plan.collections.items()}
    btag_used = None
    if "jets" in raw and plan.collections["jets"].btag:
        raw["jets"], btag_used = _tag_jets(raw["jets"], plan.collections["jets"].btag, stats)
    met_x = met_y = None
    if plan.met is not None:
        met_x, met_y = met_xy(arrays, plan.met, plan.met_branches, scale)

    finite = _finite_events(raw, met_x, met_y, n_events)
    stats.events_dropped = int((~finite).sum())
    n_finite = n_events - stats.events_dropped
    if btag_used is not None:
        stats.btag[btag_used] = n_finite
    groups = {}
    for kind, objects in raw.items():
        selected, stats.objects[kind] = apply_definition(objects.events(finite), plan.collections[kind].spec,
                                                         [c[:3] for c in plan.collections[kind].cuts], scale)
        groups[kind] = selected.select(_FIELDS)
    groups = remove_overlaps(groups, schema.overlap_removal)
    for kind, objects in groups.items():
        stats.objects[kind]["overlap"] = objects.size
    for kind in COLLECTION_TYPES:
        groups.setdefault(kind, Jagged.empty(n_finite, _FIELD_TYPES))

    if plan.met is None:
        met_objects = Jagged.empty(n_finite, _FIELD_TYPES)
    else:
        met_x, met_y = met_x[finite], met_y[finite]
        if plan.met.rebuild:
            met_x, met_y = rebuild(met_x, met_y, list(groups.values()))
        met_objects = _met_objects(met_x, met_y)
        stats.met[plan.met.describe()] = n_finite

    keep = np.ones(n_finite, bool) if cut is None else cut(_selection_variables(groups, met_objects))
    stats.events_selected = int(keep.sum())
    leptons = Jagged.concat([groups["electrons"], groups["muons"]], _FIELDS)
    ordered = [met_objects, *(objects.sorted_by("pt") for objects in
                              (leptons, groups["taus"], groups["photons"], groups["jets"]))]
    _pad(ordered, keep, allocate(int(keep.sum())))
    return stats


def _objects(kind: str, arrays, plan: CollectionPlan, scale: float) -> Jagged:
    """The collection's objects in GeV with the common fields, plus its b-tag candidates and cut values."""
    spec = plan.spec
    keys = [*plan.features, *(f"btag{i}" for i in range(len(plan.btag))), *(cut_field(i) for i, _, _, _ in plan.cuts)]
    branch = {**plan.features, **{f"btag{i}": name for i, (_, name) in enumerate(plan.btag)},
              **{cut_field(i): name for i, _, _, name in plan.cuts}}
    try:
        flat = from_awkward({key: arrays[f"{kind}.{key}"] for key in keys}, branch)
    except ValueError as err:
        raise CrossfedError(f"collection {kind}: {err}") from None
    get = lambda key: flat[key].astype(np.float64)  # noqa: E731
    if spec.is_cartesian:
        px, py, pz, energy = (get(f) * scale for f in ("px", "py", "pz", "energy"))
        pt, eta, phi = kinematics.pt_eta_phi(px, py, pz)
        energy = kinematics.physical_energy(energy, px, py, pz)
    else:
        pt, eta, phi = get("pt") * scale, get("eta"), get("phi")
        if spec.energy is not None:
            energy = get("energy") * scale
        else:  # np.power(·, 2), not ** 2 (numpy's square): the exact operations the awkward reader did
            mass = np.power(get("mass") * scale, 2) if isinstance(spec.mass, str) else (spec.mass * scale) ** 2
            energy = kinematics.energy_from_pt_eta(pt, eta, mass)
    zeros = pt * 0.0
    charge = get("charge") if spec.charge is not None else zeros
    object_type = np.full(len(pt), COLLECTION_TYPES[kind], np.int8)
    columns = dict(zip(_FIELDS, (pt, eta, phi, energy, charge, zeros, object_type)))
    columns.update({f"btag{i}": get(f"btag{i}") for i in range(len(plan.btag))})
    columns.update({cut_field(i): flat[cut_field(i)] for i, _, _, _ in plan.cuts})
    objects = Jagged(flat.offsets, columns)
    if spec.type_branch is not None:
        objects = objects.keep(np.isin(flat["type_branch"].astype(np.int64), spec.type_values))
    return objects


def _tag_jets(jets: Jagged, candidates: list[tuple[BtagCandidate, str]], stats: ReadStats) -> tuple[Jagged, str]:
    """Fill btag and BJET from the first usable candidate of this chunk; returns the jets and what was used."""
    chosen, rejected = btag.choose([jets[f"btag{i}"] for i in range(len(candidates))], [c for c, _ in candidates])
    for reason in rejected:
        stats.btag_rejected[reason] = 1
    if chosen is None:
        return jets, NO_BTAG
    candidate = candidates[chosen][0]
    discriminant = btag.clip(jets.table[f"btag{chosen}"], candidate)
    tagged = np.where(discriminant > candidate.wp, np.int8(ObjectType.BJET), jets.table["object_type"])
    return jets.with_columns(btag=discriminant, object_type=tagged), candidate.describe()


def _finite_events(raw: dict[str, Jagged], met_x, met_y, n_events: int) -> np.ndarray:
    finite = np.ones(n_events, bool)
    for objects in raw.values():
        if all(np.isfinite(objects[name].sum()) for name in FEATURES):
            continue  # a NaN or inf makes the sum non-finite; a finite sum means every value is finite
        bad = np.zeros(objects.size, bool)
        for name in FEATURES:
            bad |= ~np.isfinite(objects[name])
        finite &= ~objects.any(bad)
    if met_x is not None:
        finite &= np.isfinite(met_x) & np.isfinite(met_y)
    return finite


def _met_objects(met_x: np.ndarray, met_y: np.ndarray) -> Jagged:
    pt, phi = np.hypot(met_x, met_y), np.arctan2(met_y, met_x)
    zeros = np.zeros_like(pt)
    columns = dict(zip(_FIELDS, (pt, zeros, phi, pt, zeros, zeros, np.full(len(pt), ObjectType.MET, np.int8))))
    return Jagged(np.arange(len(pt) + 1, dtype=np.int64), columns)  # one MET object per event


def _selection_variables(groups: dict[str, Jagged], met_objects: Jagged) -> dict[str, np.ndarray]:
    electrons, muons, jets = groups["electrons"], groups["muons"], groups["jets"]
    variables = {
        "n_electrons": electrons.counts,
        "n_muons": muons.counts,
        "n_leptons": electrons.counts + muons.counts,
        "n_taus": groups["taus"].counts,
        "n_photons": groups["photons"].counts,
        "n_jets": jets.counts,
        "n_bjets": jets.sum(jets["object_type"] == int(ObjectType.BJET)).astype(np.int64),
        "met": met_objects.max("pt", 0.0),  # one MET object per event
        "ht": jets.sum(jets["pt"]),  # in the file's order, as ak.sum added them
        "lead_lepton_pt": np.maximum(electrons.max("pt", 0.0), muons.max("pt", 0.0)),
        "lead_jet_pt": jets.max("pt", 0.0),
    }
    assert variables.keys() == VARIABLES.keys()  # selection.py documents exactly these
    return variables


def _pad(parts: list[Jagged], keep: np.ndarray, out: EventBatch) -> None:
    """Write the kept events' objects, part after part, into the first of their `out.max_objects` slots;
    `out` holds zeros (type 0, masked out) after them."""
    max_objects = out.max_objects
    # views (copy=False raises rather than copy): `out` is a slice of EventOutput's C-contiguous buffer
    features = np.reshape(out.features, (-1, len(FEATURES)), copy=False)
    types, mask = np.reshape(out.types, -1, copy=False), np.reshape(out.mask, -1, copy=False)
    whole_rows = features.view(np.dtype((np.void, features.itemsize * len(FEATURES))))[:, 0]
    first_slot = (np.cumsum(keep) - 1) * max_objects  # of each event's row in the output (kept events)
    free = np.where(keep, max_objects, 0)  # per event: slots left for the parts still to come
    for part in parts:
        n_put = np.minimum(part.counts, free)
        slots, event = ranges(first_slot + (max_objects - free), n_put)
        rows = part.row_numbers()[slots - (first_slot + max_objects - free - part.offsets[:-1])[event]]
        shown = np.empty((len(rows), len(FEATURES)), np.float32)
        for column, name in enumerate(FEATURES):
            shown[:, column] = part.table[name][rows]  # float64 -> float32 as astype rounds
        whole_rows[slots] = shown.view(whole_rows.dtype)[:, 0]  # one copy per object, not per value
        types[slots] = part.table["object_type"][rows]
        mask[slots] = True
        free -= n_put
