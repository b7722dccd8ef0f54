"""ROOT files (TTree or RNTuple) of any experiment -> padded `EventBatch` arrays, chunk by chunk.

Each file is read with `uproot.iterate` in steps of `chunk_size` (bounded memory); per chunk the schema's
branches become physics objects in GeV, events with non-finite kinematics are dropped (counted, warned),
the selection is applied on the full object lists, then objects are ordered and truncated as
docs/architecture.md says: MET, electrons and muons by pT, taus, photons, jets by pT (softest jets go first).
"""

from __future__ import annotations

import glob
import os
import warnings
from dataclasses import asdict, dataclass

import awkward as ak
import numpy as np
import uproot

from crossfed.data.events import FEATURES, EventBatch, ObjectType
from crossfed.data.schema import CollectionSpec, MetSpec, Schema, load_schema
from crossfed.data.selection import VARIABLES, Selection, parse_selection
from crossfed.errors import CrossfedError, did_you_mean

TREE_CLASSES = ("TTree", "ROOT::RNTuple")
COLLECTION_TYPES = {"electrons": ObjectType.ELECTRON, "muons": ObjectType.MUON, "taus": ObjectType.TAU,
                    "photons": ObjectType.PHOTON, "jets": ObjectType.JET}
_FIELDS = (*FEATURES, "object_type")


@dataclass
class ReadStats:
    files: int = 0
    events_read: int = 0  # entries in the trees
    events_dropped: int = 0  # non-finite kinematics
    events_selected: int = 0  # finite and passing the selection (before max_events)
    from_cache: bool = False

    def add(self, other: ReadStats) -> None:
        self.files += other.files
        self.events_read += other.events_read
        self.events_dropped += other.events_dropped
        self.events_selected += other.events_selected

    def to_dict(self) -> dict:
        return asdict(self)


def expand_files(patterns: list[str]) -> list[str]:
    """Local paths and globs become sorted existing files; fsspec URLs (``scheme://``) pass unchanged."""
    files: list[str] = []
    for pattern in patterns:
        if "://" in pattern and not pattern.startswith("file://"):
            files.append(pattern)
            continue
        local = pattern.removeprefix("file://")
        if glob.has_magic(local):
            matches = sorted(glob.glob(local, recursive=True))
            if not matches:
                raise CrossfedError(f"{pattern}: no file matches this pattern")
            files += matches
        elif not os.path.isfile(local):
            raise CrossfedError(f"{local}: no such file")
        else:
            files.append(local)
    return files


def open_root(path: str):
    try:
        return uproot.open(path)
    except FileNotFoundError:
        raise CrossfedError(f"{path}: no such file") from None
    except Exception as err:  # noqa: BLE001 - uproot raises many kinds for non-ROOT or damaged files
        raise CrossfedError(f"{path}: not a readable ROOT file ({_first_line(err)})") from None


def list_trees(root_file, path: str) -> list[str]:
    """Names (without ;cycle) of the TTrees and RNTuples in a file."""
    try:
        classes = root_file.classnames()
    except Exception as err:  # noqa: BLE001
        raise CrossfedError(f"{path}: corrupt ROOT file, cannot list its contents ({_first_line(err)})") from None
    return sorted({key.split(";")[0] for key, cls in classes.items() if cls in TREE_CLASSES})


def find_tree(root_file, path: str, schema: Schema):
    trees = list_trees(root_file, path)
    for name in schema.tree_names:
        if name in trees:
            try:
                return name, root_file[name]
            except Exception as err:  # noqa: BLE001
                raise CrossfedError(f"{path}: corrupt ROOT file, cannot read tree {name!r} ({_first_line(err)})") \
                    from None
    wanted = " or ".join(repr(n) for n in schema.tree_names)
    has = ", ".join(repr(t) for t in trees) if trees else "no trees at all"
    raise CrossfedError(f"{path}: no tree {wanted}; the file has {has}")


def read_events(
    files: list[str],
    schema: Schema | str,
    *,
    selection: str | None = None,
    max_objects: int = 16,
    chunk_size: str | int = "100 MB",
    max_events: int | None = None,
) -> tuple[EventBatch, ReadStats]:
    """Read, convert, select and pad the events of some ROOT files (globs and fsspec URLs allowed)."""
    schema = load_schema(schema) if isinstance(schema, str) else schema
    cut = parse_selection(selection)
    paths = expand_files(files)
    batches, stats = [], ReadStats()
    for path in paths:
        for batch, chunk_stats in _read_file(path, schema, cut, max_objects, _step_size(chunk_size)):
            batches.append(batch)
            stats.add(chunk_stats)
            if max_events is not None and sum(len(b) for b in batches) >= max_events:
                break
        else:
            continue
        break
    stats.files = len(paths)
    if stats.events_dropped:
        warnings.warn(f"{stats.events_dropped} of {stats.events_read} event(s) with non-finite kinematics "
                      f"(NaN/inf) dropped while reading {', '.join(paths)}", RuntimeWarning, stacklevel=2)
    if cut is not None and stats.events_read and not stats.events_selected:
        raise CrossfedError(f"selection {selection!r} keeps none of the {stats.events_read} events in "
                            f"{', '.join(paths)}")
    batch = EventBatch.concat(batches) if batches else EventBatch.empty(max_objects)
    if max_events is not None:
        batch = batch.take(slice(0, max_events))
    return batch, stats


def _step_size(chunk_size: str | int) -> str | int:
    """'100 MB' (memory per chunk) or a plain number of entries."""
    text = str(chunk_size).strip()
    return int(text) if text.isdigit() else text


def _read_file(path: str, schema: Schema, cut: Selection | None, max_objects: int, step_size):
    root_file = open_root(path)
    with root_file:
        tree_name, tree = find_tree(root_file, path, schema)
        collections, met, branches = _resolve_branches(tree, path, tree_name, schema)
        if not branches:
            return
        chunks = tree.iterate(sorted(set(branches.values())), step_size=step_size, library="ak", how=dict)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except Exception as err:  # noqa: BLE001 - damaged baskets, decompression failures, ...
                raise CrossfedError(f"{path}: cannot read tree {tree_name!r}, the file may be truncated or "
                                    f"corrupt ({_first_line(err)})") from None
            arrays = {key: chunk[name] for key, name in branches.items()}
            yield _process_chunk(arrays, collections, met, schema.scale_to_gev, cut, max_objects)


def _resolve_branches(tree, path: str, tree_name: str, schema: Schema):
    """Map each schema branch to the name the file uses; skip optional collections the file lacks.

    Returns (collections present, met spec or None, {"<collection>.<feature>": branch name in file}).
    """
    available = set(tree.keys())
    is_rntuple = "RNTuple" in type(tree).__name__

    def lookup(name: str) -> str | None:
        if name in available:
            return name
        alternative = name.replace(".", ":")  # ATLAS RNTuple spelling of aux variables
        return alternative if is_rntuple and alternative in available else None

    specs: dict[str, CollectionSpec | MetSpec] = {
        kind: spec for kind, spec in schema.collections if spec is not None}
    if schema.met is not None:
        specs["met"] = schema.met
    branches: dict[str, str] = {}
    present: dict[str, CollectionSpec] = {}
    met = None
    for kind, spec in specs.items():
        wanted = {feature: name for feature, name in spec if isinstance(name, str) and feature in _BRANCH_KEYS}
        found = {feature: lookup(name) for feature, name in wanted.items()}
        missing = [feature for feature, name in found.items() if name is None]
        if missing and spec.optional:
            continue
        if missing:
            feature = missing[0]
            where = f"met.{feature}" if kind == "met" else f"collections.{kind}.{feature}"
            hint = did_you_mean(wanted[feature], sorted(available))
            raise CrossfedError(f"{path}: tree {tree_name!r} has no branch {wanted[feature]!r} "
                                f"(schema key {where}){hint}")
        branches.update({f"{kind}.{feature}": name for feature, name in found.items()})
        if kind == "met":
            met = spec
        else:
            present[kind] = spec
    return present, met, branches


_BRANCH_KEYS = ("pt", "eta", "phi", "mass", "energy", "px", "py", "pz", "charge", "btag", "type_branch")


def _process_chunk(arrays, collections, met, scale, cut, max_objects) -> tuple[EventBatch, ReadStats]:
    n_events = len(next(iter(arrays.values())))
    groups = {kind: _objects(kind, arrays, collections.get(kind), scale, n_events) for kind in COLLECTION_TYPES}
    met_objects = _met_objects(arrays, met, scale) if met is not None else _empty_objects(n_events)
    leptons = _by_pt(ak.concatenate([groups["electrons"], groups["muons"]], axis=1))
    ordered = ak.concatenate([met_objects, leptons, _by_pt(groups["taus"]), _by_pt(groups["photons"]),
                              _by_pt(groups["jets"])], axis=1)

    finite = np.ones(n_events, bool)
    for field in FEATURES:
        finite &= ak.to_numpy(ak.all(np.isfinite(ordered[field]), axis=1))
    keep = finite
    if cut is not None:
        keep = finite & cut(_selection_variables(groups, met_objects))
    stats = ReadStats(events_read=n_events, events_dropped=int((~finite).sum()), events_selected=int(keep.sum()))
    return _pad(ordered[keep], max_objects), stats


def _objects(kind: str, arrays, spec: CollectionSpec | None, scale: float, n_events: int) -> ak.Array:
    if spec is None:
        return _empty_objects(n_events)
    get = lambda feature: ak.values_astype(arrays[f"{kind}.{feature}"], np.float64)  # noqa: E731
    if spec.is_cartesian:
        px, py, pz, energy = (get(f) * scale for f in ("px", "py", "pz", "energy"))
        pt = np.hypot(px, py)
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.arcsinh(pz / pt)
        phi = np.arctan2(py, px)
    else:
        pt, eta, phi = get("pt") * scale, get("eta"), get("phi")
        if spec.energy is not None:
            energy = get("energy") * scale
        else:
            mass = get("mass") * scale if isinstance(spec.mass, str) else spec.mass * scale
            energy = np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)
    zeros = pt * 0.0
    charge = get("charge") if spec.charge is not None else zeros
    btag = get("btag") if spec.btag is not None else zeros
    object_type = zeros + int(COLLECTION_TYPES[kind])
    if spec.btag is not None:
        object_type = ak.where(btag > spec.btag_wp, int(ObjectType.BJET), object_type)
    objects = ak.zip(dict(zip(_FIELDS, (pt, eta, phi, energy, charge, btag, object_type))))
    if spec.type_branch is not None:
        object_kind = ak.values_astype(arrays[f"{kind}.type_branch"], np.int64)
        wanted = object_kind == spec.type_values[0]
        for value in spec.type_values[1:]:
            wanted = wanted | (object_kind == value)
        objects = objects[wanted]
    return objects


def _met_objects(arrays, spec: MetSpec, scale: float) -> ak.Array:
    def per_event(key: str) -> np.ndarray:
        values = arrays[key]
        if values.ndim > 1:  # a list of MET terms per event (PHYSLITE MET_Core): their vector sum
            values = ak.sum(values, axis=1)
        return ak.to_numpy(values).astype(np.float64)

    if spec.pt is not None:
        pt, phi = per_event("met.pt") * scale, per_event("met.phi")
    else:
        px, py = per_event("met.px") * scale, per_event("met.py") * scale
        pt, phi = np.hypot(px, py), np.arctan2(py, px)
    zeros = np.zeros_like(pt)
    columns = dict(zip(_FIELDS, (pt, zeros, phi, pt, zeros, zeros, zeros + int(ObjectType.MET))))
    return ak.unflatten(ak.zip(columns), 1)  # one MET object per event


def _empty_objects(n_events: int) -> ak.Array:
    return ak.unflatten(ak.zip({f: np.zeros(0) for f in _FIELDS}), np.zeros(n_events, np.int64))


def _by_pt(objects: ak.Array) -> ak.Array:
    return objects[ak.argsort(objects.pt, axis=1, ascending=False, stable=True)]


def _selection_variables(groups, met_objects) -> dict[str, np.ndarray]:
    def count(objects) -> np.ndarray:
        return ak.to_numpy(ak.num(objects, axis=1))

    def leading_pt(objects) -> np.ndarray:
        return ak.to_numpy(ak.fill_none(ak.max(objects.pt, axis=1), 0.0))

    jets = groups["jets"]
    leptons = ak.concatenate([groups["electrons"], groups["muons"]], axis=1)
    variables = {
        "n_electrons": count(groups["electrons"]),
        "n_muons": count(groups["muons"]),
        "n_leptons": count(leptons),
        "n_taus": count(groups["taus"]),
        "n_photons": count(groups["photons"]),
        "n_jets": count(jets),
        "n_bjets": count(jets[jets.object_type == int(ObjectType.BJET)]),
        "met": ak.to_numpy(ak.fill_none(ak.firsts(met_objects.pt), 0.0)),
        "ht": ak.to_numpy(ak.sum(jets.pt, axis=1)),
        "lead_lepton_pt": leading_pt(leptons),
        "lead_jet_pt": leading_pt(jets),
    }
    assert variables.keys() == VARIABLES.keys()  # selection.py documents exactly these
    return variables


def _pad(objects: ak.Array, max_objects: int) -> EventBatch:
    padded = ak.pad_none(objects, max_objects, axis=1, clip=True)
    mask = ak.to_numpy(~ak.is_none(padded, axis=1))
    columns = [ak.to_numpy(ak.fill_none(padded[f], 0.0)) for f in FEATURES]
    features = np.stack(columns, axis=-1).astype(np.float32).reshape(len(objects), max_objects, len(FEATURES))
    types = ak.to_numpy(ak.fill_none(padded.object_type, 0)).astype(np.int8).reshape(len(objects), max_objects)
    return EventBatch(features, types, mask.reshape(len(objects), max_objects))


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


