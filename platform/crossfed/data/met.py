"""Missing transverse momentum per event: read as stored, one named term of a list, or rebuilt.

A format may store MET as one value per event (NanoAOD MET_pt, the ATLAS open-data met_et) or as a list
of terms per event (the xAOD MissingET containers: MET_Core_AnalysisMET holds the soft terms SoftClus and
PVSoftTrk; MET_Reference_* holds RefEle, RefJet, ..., FinalClus, FinalTrk). A list is never summed: the
schema names the term to read. A soft term is completed as ATLAS does, MET = −Σ pT(selected objects)
+ soft term (`rebuild: true`).
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from crossfed.data.jagged import Jagged
from crossfed.data.schema import MetSpec
from crossfed.errors import CrossfedError


def met_xy(arrays: dict, spec: MetSpec, branches: dict[str, str], scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(px, py) in GeV per event from the MET branches (`arrays` keyed met.pt, met.px, met.term_names ...)."""
    selected = _select_term(arrays, spec, branches) if spec.term is not None else None
    components = {}
    for key in ("pt", "phi", "px", "py"):
        if f"met.{key}" not in arrays:
            continue
        values = arrays[f"met.{key}"]
        if selected is not None:
            values = ak.sum(values[selected], axis=1)
        elif values.ndim > 1:
            raise CrossfedError(f"MET branch {branches[key]!r} holds a list of terms per event: name the one to "
                                "read with met.term and met.term_names (terms are alternatives, never summed)")
        components[key] = ak.to_numpy(values).astype(np.float64)
    if "pt" in components:
        pt = components["pt"] * scale
        return pt * np.cos(components["phi"]), pt * np.sin(components["phi"])
    return components["px"] * scale, components["py"] * scale


def _select_term(arrays: dict, spec: MetSpec, branches: dict[str, str]) -> ak.Array:
    names = arrays["met.term_names"]
    selected = names == spec.term
    found = ak.to_numpy(ak.sum(selected, axis=1))
    if (found != 1).any():
        bad = int((found != 1).sum())
        seen = sorted(set(ak.flatten(names).tolist()))
        raise CrossfedError(f"MET term {spec.term!r} is missing (or repeated) in {bad} of {len(found)} events of "
                            f"{branches['term_names']!r} (terms seen: {', '.join(seen) or 'none'})")
    return selected


def rebuild(soft_x: np.ndarray, soft_y: np.ndarray, objects: list[Jagged]) -> tuple[np.ndarray, np.ndarray]:
    """MET = −(vector sum of the objects' pT) + the soft term, per event, GeV."""
    met_x, met_y = soft_x.copy(), soft_y.copy()
    for group in objects:
        met_x -= group.sum(group["pt"] * np.cos(group["phi"]))
        met_y -= group.sum(group["pt"] * np.sin(group["phi"]))
    return met_x, met_y
