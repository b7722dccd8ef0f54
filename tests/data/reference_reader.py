"""The reader's per-chunk processing as it was before it was vectorised (issue 18), kept as the oracle.

crossfed.data.reader._process_chunk computes the same EventBatch and ReadStats from flat numpy columns;
test_reader_reference.py runs both on every fixture and generated sample and requires identical bytes.
This is the awkward-record implementation verbatim (reader.py, objects.py, met.rebuild, btag.clip at
commit 546b1dc); only the imports and the names of the functions it shared with other modules changed.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from crossfed import kinematics
from crossfed.data import btag
from crossfed.data.events import FEATURES, EventBatch, ObjectType
from crossfed.data.met import met_xy
from crossfed.data.reader import COLLECTION_TYPES, NO_BTAG, CollectionPlan, ReadPlan, ReadStats
from crossfed.data.schema import BtagCandidate, CollectionSpec, Cut, OverlapStep, Schema
from crossfed.data.selection import VARIABLES

_FIELDS = (*FEATURES, "object_type")


def process_chunk_into(arrays, plan: ReadPlan, schema: Schema, cut, allocate) -> ReadStats:
    """`process_chunk` with the reader's calling convention since it writes into one output buffer
    (`reader.EventOutput`): the old code's batch is copied into the slots `allocate` hands out.
    `allocate(0)` asks nothing of the buffer; it tells the slot count per event."""
    batch, stats = process_chunk(arrays, plan, schema, cut, allocate(0).max_objects)
    slots = allocate(len(batch))
    slots.features[:], slots.types[:], slots.mask[:] = batch.features, batch.types, batch.mask
    return stats


def process_chunk(arrays, plan: ReadPlan, schema: Schema, cut, max_objects) -> tuple[EventBatch, ReadStats]:
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
        groups[kind], stats.objects[kind] = apply_definition(objects[finite], plan.collections[kind].spec,
                                                             [c[:3] for c in plan.collections[kind].cuts], scale)
    groups = remove_overlaps(groups, schema.overlap_removal)
    for kind, objects in groups.items():
        stats.objects[kind]["overlap"] = count(objects)
    groups = {kind: objects[list(_FIELDS)] for kind, objects in groups.items()}
    for kind in COLLECTION_TYPES:
        groups.setdefault(kind, _empty_objects(n_finite))

    if plan.met is None:
        met_objects = _empty_objects(n_finite)
    else:
        met_x, met_y = met_x[finite], met_y[finite]
        if plan.met.rebuild:
            met_x, met_y = rebuild(met_x, met_y, list(groups.values()))
        met_objects = _met_objects(met_x, met_y)
        stats.met[plan.met.describe()] = n_finite

    leptons = _by_pt(ak.concatenate([groups["electrons"], groups["muons"]], axis=1))
    ordered = ak.concatenate([met_objects, leptons, _by_pt(groups["taus"]), _by_pt(groups["photons"]),
                              _by_pt(groups["jets"])], axis=1)
    keep = np.ones(n_finite, bool) if cut is None else cut(_selection_variables(groups, met_objects))
    stats.events_selected = int(keep.sum())
    return _pad(ordered[keep], max_objects), stats


def _objects(kind: str, arrays, plan: CollectionPlan, scale: float) -> ak.Array:
    """The collection's objects in GeV with the common fields, plus its b-tag candidates and cut values."""
    spec = plan.spec
    get = lambda key: ak.values_astype(arrays[f"{kind}.{key}"], np.float64)  # noqa: E731
    if spec.is_cartesian:
        px, py, pz, energy = (get(f) * scale for f in ("px", "py", "pz", "energy"))
        # The maths itself is kinematics.py's (this reference checks the vectorised reader's bookkeeping).
        pt, eta, phi = kinematics.pt_eta_phi(px, py, pz)
        energy = kinematics.physical_energy(energy, px, py, pz)
    else:
        pt, eta, phi = get("pt") * scale, get("eta"), get("phi")
        if spec.energy is not None:
            energy = get("energy") * scale
        else:
            mass = get("mass") * scale if isinstance(spec.mass, str) else spec.mass * scale
            energy = np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)
    zeros = pt * 0.0
    charge = get("charge") if spec.charge is not None else zeros
    columns = dict(zip(_FIELDS, (pt, eta, phi, energy, charge, zeros, zeros + int(COLLECTION_TYPES[kind]))))
    columns.update({f"btag{i}": get(f"btag{i}") for i in range(len(plan.btag))})
    columns.update({cut_field(i): arrays[f"{kind}.{cut_field(i)}"] for i, _, _, _ in plan.cuts})
    objects = ak.zip(columns)
    if spec.type_branch is not None:
        object_kind = ak.values_astype(arrays[f"{kind}.type_branch"], np.int64)
        wanted = object_kind == spec.type_values[0]
        for value in spec.type_values[1:]:
            wanted = wanted | (object_kind == value)
        objects = objects[wanted]
    return objects


def _tag_jets(jets: ak.Array, candidates: list[tuple[BtagCandidate, str]], stats: ReadStats) -> tuple[ak.Array, str]:
    """Fill btag and BJET from the first usable candidate of this chunk; returns the jets and what was used."""
    values = [ak.to_numpy(ak.flatten(jets[f"btag{i}"])) for i in range(len(candidates))]
    chosen, rejected = btag.choose(values, [c for c, _ in candidates])
    for reason in rejected:
        stats.btag_rejected[reason] = 1
    if chosen is None:
        return jets, NO_BTAG
    candidate = candidates[chosen][0]
    discriminant = clip(jets[f"btag{chosen}"], candidate)
    jets = ak.with_field(jets, discriminant, "btag")
    tagged = ak.where(discriminant > candidate.wp, int(ObjectType.BJET), jets.object_type)
    return ak.with_field(jets, tagged, "object_type"), candidate.describe()


def _finite_events(raw: dict[str, ak.Array], met_x, met_y, n_events: int) -> np.ndarray:
    finite = np.ones(n_events, bool)
    for objects in raw.values():
        for name in FEATURES:
            finite &= ak.to_numpy(ak.all(np.isfinite(objects[name]), axis=1))
    if met_x is not None:
        finite &= np.isfinite(met_x) & np.isfinite(met_y)
    return finite


def _met_objects(met_x: np.ndarray, met_y: np.ndarray) -> ak.Array:
    pt, phi = np.hypot(met_x, met_y), np.arctan2(met_y, met_x)
    zeros = np.zeros_like(pt)
    columns = dict(zip(_FIELDS, (pt, zeros, phi, pt, zeros, zeros, zeros + int(ObjectType.MET))))
    return ak.unflatten(ak.zip(columns), np.ones(len(pt), np.int64))  # one MET object per event


def _empty_objects(n_events: int) -> ak.Array:
    return ak.unflatten(ak.zip({f: np.zeros(0) for f in _FIELDS}), np.zeros(n_events, np.int64))


def _by_pt(objects: ak.Array) -> ak.Array:
    return objects[ak.argsort(objects.pt, axis=1, ascending=False, stable=True)]


def _selection_variables(groups, met_objects) -> dict[str, np.ndarray]:
    def multiplicity(objects) -> np.ndarray:
        return ak.to_numpy(ak.num(objects, axis=1))

    def leading_pt(objects) -> np.ndarray:
        return ak.to_numpy(ak.fill_none(ak.max(objects.pt, axis=1), 0.0))

    jets = groups["jets"]
    leptons = ak.concatenate([groups["electrons"], groups["muons"]], axis=1)
    variables = {
        "n_electrons": multiplicity(groups["electrons"]),
        "n_muons": multiplicity(groups["muons"]),
        "n_leptons": multiplicity(leptons),
        "n_taus": multiplicity(groups["taus"]),
        "n_photons": multiplicity(groups["photons"]),
        "n_jets": multiplicity(jets),
        "n_bjets": multiplicity(jets[jets.object_type == int(ObjectType.BJET)]),
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


# --- objects.py -----------------------------------------------------------------------------------------

def count(objects: ak.Array) -> int:
    return int(ak.sum(ak.num(objects, axis=1)))


def apply_definition(objects: ak.Array, spec: CollectionSpec, cuts: list[tuple[int, str, Cut]],
                     scale: float) -> tuple[ak.Array, dict[str, int]]:
    """The objects passing the collection's definition, and how many survive each stage.

    `cuts`: (field index, stage, cut) for the cuts whose branches the file has; `scale` converts the
    file's units to GeV (a relative cut divides by the pT in the file's units).
    """
    survivors = {"read": count(objects)}
    objects = objects[_kinematics_pass(objects, spec)]
    survivors["kinematics"] = count(objects)
    for stage in ("id", "isolation"):
        for index, cut_stage, cut in cuts:
            if cut_stage == stage:
                objects = objects[_cut_pass(objects[cut_field(index)], cut, objects.pt / scale)]
        survivors[stage] = count(objects)
    return objects, survivors


def _kinematics_pass(objects: ak.Array, spec: CollectionSpec) -> ak.Array:
    keep = objects.pt >= 0.0  # every object; NaN pT never gets this far (the event is dropped first)
    abs_eta = np.abs(objects.eta)
    if spec.min_pt is not None:
        keep = keep & (objects.pt > spec.min_pt)
    if spec.max_abs_eta is not None:
        keep = keep & (abs_eta < spec.max_abs_eta)
    if spec.exclude_abs_eta is not None:
        low, high = spec.exclude_abs_eta
        keep = keep & ~((abs_eta > low) & (abs_eta < high))
    return keep


def _cut_pass(values: ak.Array, cut: Cut, pt_in_file_units: ak.Array) -> ak.Array:
    values = ak.values_astype(values, np.float64)
    if cut.relative:
        with np.errstate(divide="ignore", invalid="ignore"):
            values = values / pt_in_file_units
    if cut.min is None and cut.max is None:
        return values != 0
    keep = values == values  # True except NaN: a NaN isolation never passes a bound
    if cut.min is not None:
        keep = keep & (values >= cut.min)
    if cut.max is not None:
        keep = keep & (values <= cut.max)
    return keep


def remove_overlaps(groups: dict[str, ak.Array], steps: list[OverlapStep]) -> dict[str, ak.Array]:
    """Apply the overlap-removal steps in order; collections absent from `groups` are skipped."""
    groups = dict(groups)
    for step in steps:
        if step.remove in groups and step.near in groups:
            close = min_delta_r(groups[step.remove], groups[step.near]) < step.dr
            groups[step.remove] = groups[step.remove][~close]
    return groups


def min_delta_r(objects: ak.Array, others: ak.Array) -> ak.Array:
    """Per object, the ΔR = sqrt(Δη² + Δφ²) to the closest object of `others` in its event (inf if none)."""
    pairs = ak.cartesian({"a": objects[["eta", "phi"]], "b": others[["eta", "phi"]]}, axis=1, nested=True)
    dphi = (pairs.a.phi - pairs.b.phi + np.pi) % (2 * np.pi) - np.pi
    delta_r = np.sqrt((pairs.a.eta - pairs.b.eta) ** 2 + dphi**2)
    return ak.fill_none(ak.min(delta_r, axis=2), np.inf)


def cut_field(index: int) -> str:
    return f"cut{index}"


# --- met.py, btag.py ---------------------------------------------------------------------------------

def rebuild(soft_x: np.ndarray, soft_y: np.ndarray, objects: list[ak.Array]) -> tuple[np.ndarray, np.ndarray]:
    """MET = −(vector sum of the objects' pT) + the soft term, per event, GeV."""
    met_x, met_y = soft_x.copy(), soft_y.copy()
    for group in objects:
        met_x -= ak.to_numpy(ak.sum(group.pt * np.cos(group.phi), axis=1))
        met_y -= ak.to_numpy(ak.sum(group.pt * np.sin(group.phi), axis=1))
    return met_x, met_y


def clip(values: ak.Array, candidate: BtagCandidate) -> ak.Array:
    """Single jets outside the physical range (-1: no tracks) are clipped into it, so no -1000s reach the model."""
    if candidate.range is None:
        return values
    low, high = candidate.range
    return ak.where(values < low, low, ak.where(values > high, high, values))
