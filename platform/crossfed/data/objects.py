"""Object definitions: which reconstructed objects an analysis keeps, per collection and between them.

Per collection, in this order (each step counted, so `crossfed inspect` can show the efficiencies):
kinematics (pT threshold in GeV, |η| range, an excluded |η| band), ID cuts, isolation cuts. Then overlap
removal between collections, step by step in the schema's order: each step drops the objects of one
collection that lie within ΔR < dr of an object of another still kept at that step.

Objects are `Jagged` columns (jagged.py) with at least pt (GeV), eta, phi; ID and isolation values ride
along as extra columns named by `cut_field(index)`. Every step is a numpy operation over all objects.
"""

from __future__ import annotations

import numpy as np

from crossfed.data.jagged import Jagged, ranges
from crossfed.data.schema import CollectionSpec, Cut, OverlapStep

STAGES = ("read", "kinematics", "id", "isolation", "overlap")


def cut_field(index: int) -> str:
    return f"cut{index}"


def apply_definition(objects: Jagged, spec: CollectionSpec, cuts: list[tuple[int, str, Cut]],
                     scale: float) -> tuple[Jagged, dict[str, int]]:
    """The objects passing the collection's definition, and how many survive each stage.

    `cuts`: (field index, stage, cut) for the cuts whose branches the file has; `scale` converts the
    file's units to GeV (a relative cut divides by the pT in the file's units). Each cut is decided per
    object, so the stages combine into one mask and the objects are filtered once.
    """
    keep = _kinematics_pass(objects, spec)
    survivors = {"read": objects.size, "kinematics": int(keep.sum())}
    for stage in ("id", "isolation"):
        for index, cut_stage, cut in cuts:
            if cut_stage == stage:
                keep &= _cut_pass(objects[cut_field(index)], cut, objects["pt"] / scale)
        survivors[stage] = int(keep.sum())
    return objects.keep(keep), survivors


def _kinematics_pass(objects: Jagged, spec: CollectionSpec) -> np.ndarray:
    pt = objects["pt"]
    keep = pt >= 0.0  # every object; NaN pT never gets this far (the event is dropped first)
    abs_eta = np.abs(objects["eta"])
    if spec.min_pt is not None:
        keep &= pt > spec.min_pt
    if spec.max_abs_eta is not None:
        keep &= abs_eta < spec.max_abs_eta
    if spec.exclude_abs_eta is not None:
        low, high = spec.exclude_abs_eta
        keep &= ~((abs_eta > low) & (abs_eta < high))
    return keep


def _cut_pass(values: np.ndarray, cut: Cut, pt_in_file_units: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    if cut.relative:
        with np.errstate(divide="ignore", invalid="ignore"):
            values = values / pt_in_file_units
    if cut.min is None and cut.max is None:
        return values != 0
    keep = values == values  # True except NaN: a NaN isolation never passes a bound
    if cut.min is not None:
        keep &= values >= cut.min
    if cut.max is not None:
        keep &= values <= cut.max
    return keep


def remove_overlaps(groups: dict[str, Jagged], steps: list[OverlapStep]) -> dict[str, Jagged]:
    """Apply the overlap-removal steps in order; collections absent from `groups` are skipped.

    Whether an object is removed depends on the other collection only, so a collection's removals are
    collected over consecutive steps and applied once, before it serves as `near` or at the end.
    """
    groups = dict(groups)
    removed: dict[str, np.ndarray] = {}

    def settle(kind: str) -> None:
        if kind in removed:
            groups[kind] = groups[kind].keep(~removed.pop(kind))

    for step in steps:
        if step.remove in groups and step.near in groups:
            settle(step.near)
            close = any_within(groups[step.remove], groups[step.near], step.dr)
            removed[step.remove] = close | removed[step.remove] if step.remove in removed else close
    for kind in list(removed):
        settle(kind)
    return groups


def any_within(objects: Jagged, others: Jagged, dr: float) -> np.ndarray:
    """Per object, whether an object of `others` in its event lies at ΔR = sqrt(Δη² + Δφ²) < dr.

    The pairs are listed from the side of `others` (few leptons, many jets): for each other object, the
    objects of its event. Pairs further apart than dr in η alone are set aside first (the margin keeps
    every pair whose rounded ΔR could fall below dr); on the rest ΔR is computed as the awkward
    implementation computed it (np.power(·, 2), Δφ wrapped with a remainder), to the same bits.
    """
    close = np.zeros(objects.size, bool)
    mine, theirs = ranges(objects.offsets[:-1][others.event], objects.counts[others.event])
    rows = objects.row_numbers()[mine]
    eta, other_eta = objects.table["eta"][rows], others["eta"][theirs]
    near = np.flatnonzero(np.abs(eta - other_eta) < dr * (1 + 1e-9))
    mine, theirs, rows = mine[near], theirs[near], rows[near]
    dphi = (objects.table["phi"][rows] - others["phi"][theirs] + np.pi) % (2 * np.pi) - np.pi
    delta_r = np.sqrt(np.power(eta[near] - other_eta[near], 2) + np.power(dphi, 2))
    close[mine[delta_r < dr]] = True
    return close
