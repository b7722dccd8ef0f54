"""Object definitions: which reconstructed objects an analysis keeps, per collection and between them.

Per collection, in this order (each step counted, so `crossfed inspect` can show the efficiencies):
kinematics (pT threshold in GeV, |η| range, an excluded |η| band), ID cuts, isolation cuts. Then overlap
removal between collections, step by step in the schema's order: each step drops the objects of one
collection that lie within ΔR < dr of an object of another still kept at that step.

Objects are awkward record arrays [event][object] with at least pt (GeV), eta, phi; ID and isolation
values ride along as extra fields named by `cut_field(index)`.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from crossfed.data.schema import CollectionSpec, Cut, OverlapStep

STAGES = ("read", "kinematics", "id", "isolation", "overlap")


def cut_field(index: int) -> str:
    return f"cut{index}"


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
