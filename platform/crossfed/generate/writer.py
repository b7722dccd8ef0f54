"""Reconstructed events -> each experiment's own file format, with the generation metadata inside.

CMS-like: NanoAOD, tree `Events`, GeV. ATLAS-like: the ATLAS 13 TeV open-data (2020) ntuple, tree
`mini`, MeV. The metadata is a JSON string stored as a TObjString named `crossfed_metadata`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crossfed.errors import CrossfedError

METADATA_KEY = "crossfed_metadata"
TREE_NAMES = {"cms": "Events", "atlas": "mini"}
MEV_PER_GEV = 1000.0


def _jagged(events: list[dict], collection: str, field: str, dtype):
    import awkward as ak

    counts = np.array([len(e[collection][field]) for e in events], np.int64)
    values = np.concatenate([e[collection][field] for e in events]) if events else np.zeros(0)
    return ak.unflatten(values.astype(dtype), counts)


def _energy(pt, eta, mass):
    return np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)


def cms_branches(events: list[dict], first_event: int) -> dict:
    import awkward as ak

    f32 = np.float32
    kin = lambda c: {k: _jagged(events, c, k, f32) for k in ("pt", "eta", "phi", "mass")}  # noqa: E731
    n = len(events)
    return {
        "run": np.ones(n, np.uint32),
        "luminosityBlock": np.ones(n, np.uint32),
        "event": np.arange(first_event, first_event + n, dtype=np.uint64),
        "Jet": ak.zip({
            **kin("jets"),
            "btagDeepFlavB": _jagged(events, "jets", "btag", f32),
            "hadronFlavour": _jagged(events, "jets", "flavour", np.int32),
        }),
        "Muon": ak.zip({**kin("muons"), "charge": _jagged(events, "muons", "charge", np.int32),
                        "pfRelIso04_all": _jagged(events, "muons", "rel_iso", f32)}),
        "Electron": ak.zip({**kin("electrons"), "charge": _jagged(events, "electrons", "charge", np.int32),
                            "pfRelIso03_all": _jagged(events, "electrons", "rel_iso", f32)}),
        "Tau": ak.zip({**kin("taus"), "charge": _jagged(events, "taus", "charge", np.int32)}),
        "Photon": ak.zip(kin("photons")),
        "MET_pt": np.array([e["met_pt"] for e in events], f32),
        "MET_phi": np.array([e["met_phi"] for e in events], f32),
        "genWeight": np.ones(n, f32),
    }


def _atlas_leptons(event: dict) -> dict:
    """Electrons and muons in one `lep_` collection, by pT, in MeV."""
    e, m = event["electrons"], event["muons"]
    cat = lambda k: np.concatenate([e[k], m[k]])  # noqa: E731
    pt, eta = cat("pt"), cat("eta")
    order = np.argsort(-pt, kind="stable")
    return {
        "pt": pt[order] * MEV_PER_GEV, "eta": eta[order], "phi": cat("phi")[order],
        "E": _energy(pt, eta, cat("mass"))[order] * MEV_PER_GEV, "charge": cat("charge")[order],
        "type": np.concatenate([np.full(len(e["pt"]), 11), np.full(len(m["pt"]), 13)])[order],
        "ptcone30": cat("ptcone30")[order] * MEV_PER_GEV, "etcone20": cat("etcone20")[order] * MEV_PER_GEV,
    }


def _in_mev(objects: dict, extra: dict[str, str]) -> dict:
    out = {"pt": objects["pt"] * MEV_PER_GEV, "eta": objects["eta"], "phi": objects["phi"],
           "E": _energy(objects["pt"], objects["eta"], objects["mass"]) * MEV_PER_GEV}
    return out | {name: objects[source] for name, source in extra.items()}


def atlas_branches(events: list[dict], first_event: int) -> dict:
    import awkward as ak

    converted = [
        {"lep": _atlas_leptons(e), "jet": _in_mev(e["jets"], {"MV2c10": "btag", "trueflav": "flavour"}),
         "photon": _in_mev(e["photons"], {}), "tau": _in_mev(e["taus"], {"charge": "charge"})}
        for e in events
    ]
    types = {"charge": np.int32, "type": np.uint32, "trueflav": np.int32}
    collection = lambda name: ak.zip({  # noqa: E731
        field: _jagged(converted, name, field, types.get(field, np.float32)) for field in converted[0][name]
    }) if converted else None
    n = len(events)
    return {
        "runNumber": np.full(n, 284500, np.int32),  # the mc16a run number of the open data
        "eventNumber": np.arange(first_event, first_event + n, dtype=np.int32),
        "mcWeight": np.ones(n, np.float32),
        "lep": collection("lep"), "jet": collection("jet"), "photon": collection("photon"), "tau": collection("tau"),
        "met_et": np.array([e["met_pt"] for e in events], np.float32) * np.float32(MEV_PER_GEV),
        "met_phi": np.array([e["met_phi"] for e in events], np.float32),
    }


def write_root(path: Path, detector: str, events: list[dict], metadata: dict, first_event: int = 1) -> None:
    """Write reconstructed events in the detector's format, numbered from `first_event` (the caller makes it atomic)."""
    if not events:
        raise CrossfedError(f"{path}: no events to write")
    branches = cms_branches(events, first_event) if detector == "cms" else atlas_branches(events, first_event)
    write_branches(path, detector, branches, metadata)


def write_branches(path: Path, detector: str, branches: dict, metadata: dict) -> None:
    """One tree of branches (records become nJet/Jet_pt or lep_n/lep_pt, as each format names them)."""
    import uproot

    counter = (lambda name: f"n{name}") if detector == "cms" else (lambda name: f"{name}_n")
    tree = TREE_NAMES[detector]
    with uproot.recreate(path) as file:
        file[METADATA_KEY] = json.dumps(metadata, sort_keys=True)
        file.mktree(tree, {k: v.type if hasattr(v, "layout") else v.dtype for k, v in branches.items()},
                    counter_name=counter)
        file[tree].extend(branches)


def read_arrays(paths: list[Path], detector: str):
    """The events of files written by `write_branches`, concatenated (flat fields: Jet_pt, lep_pt ...)."""
    import awkward as ak
    import uproot

    parts = []
    for path in paths:
        with uproot.open(path) as file:
            parts.append(file[TREE_NAMES[detector]].arrays())
    return ak.concatenate(parts) if len(parts) > 1 else parts[0]


def read_branches(paths: list[Path], detector: str) -> dict:
    """The events of files written by `write_branches`, concatenated, as branches to write again."""
    return group_branches(read_arrays(paths, detector), detector)


def group_branches(arrays, detector: str) -> dict:
    """Flat fields read back (Jet_pt, lep_pt ...) -> records per collection, in the written order, without
    the counters (nJet, lep_n), which `write_branches` makes again."""
    import awkward as ak

    is_counter = (lambda f: f.startswith("n") and f[1:2].isupper()) if detector == "cms" else (lambda f: f.endswith("_n"))
    branches: dict = {}
    for field in arrays.fields:
        prefix, _, rest = field.partition("_")
        if is_counter(field):
            continue
        if rest and arrays[field].ndim == 2:
            branches.setdefault(prefix, {})[rest] = arrays[field]
        else:
            branches[field] = arrays[field]
    return {name: ak.zip(value) if isinstance(value, dict) else value for name, value in branches.items()}


def read_metadata(path: str | Path) -> dict:
    """The generation metadata stored in a file written by `generate()`."""
    import uproot

    path = Path(path)
    if not path.is_file():
        raise CrossfedError(f"{path}: no such file")
    try:
        with uproot.open(path) as file:
            if METADATA_KEY not in file:
                raise CrossfedError(f"{path}: no {METADATA_KEY} in this file (not written by crossfed generate)")
            return json.loads(str(file[METADATA_KEY]))
    except (OSError, ValueError) as err:
        raise CrossfedError(f"{path}: cannot read the generation metadata: {err}") from None
