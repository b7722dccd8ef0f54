"""Small real ROOT files written with uproot: NanoAOD-like, ATLAS-mini-like (MeV), PHYSLITE-like.

A uniquely named module (not conftest) so that tests and benchmarks/read_events.py can import it.
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import uproot

# Three hand-made events, GeV. Event 0 has an electron, a muon and three jets (two b-tagged in CMS);
# event 1 a single soft jet; event 2 two muons, a tau and a photon, no jets.
EVENTS = {
    "electrons": {"pt": [[40.0], [], []], "eta": [[-1.2], [], []], "phi": [[0.3], [], []],
                  "mass": [[0.000511], [], []], "charge": [[1], [], []]},
    "muons": {"pt": [[30.0], [], [20.0, 60.0]], "eta": [[0.5], [], [2.0, -0.1]], "phi": [[1.0], [], [3.0, -3.0]],
              "mass": [[0.10566], [], [0.10566, 0.10566]], "charge": [[-1], [], [1, -1]]},
    "taus": {"pt": [[], [], [45.0]], "eta": [[], [], [0.7]], "phi": [[], [], [2.0]], "mass": [[], [], [1.777]],
             "charge": [[], [], [-1]]},
    "photons": {"pt": [[], [], [15.0]], "eta": [[], [], [-0.4]], "phi": [[], [], [0.1]], "mass": [[], [], [0.0]]},
    "jets": {"pt": [[50.0, 100.0, 20.0], [25.0], []], "eta": [[0.1, -0.2, 1.5], [3.0], []],
             "phi": [[-1.0, 2.5, 0.0], [1.0], []], "mass": [[8.0, 12.0, 4.0], [5.0], []],
             "btag": [[0.9, 0.1, 0.5], [0.05], []]},
    "met": {"pt": [35.0, 10.0, 50.0], "phi": [-2.0, 0.5, 1.5]},
}
N_EVENTS = 3


def energy(pt, eta, mass):
    pt, eta, mass = (np.asarray(x, dtype=np.float64) for x in (pt, eta, mass))
    return np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)


def jagged(values, dtype=np.float32) -> ak.Array:
    return ak.values_astype(ak.Array(values), dtype)


def write_ttree(path: Path, tree: str, branches: dict) -> Path:
    """Write a TTree; a value that is an ak record array becomes <name>_<field> branches with counter n<name>."""
    with uproot.recreate(path) as out:
        out.mktree(tree, {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in branches.items()})
        out[tree].extend(branches)
    return path


def write_rntuple(path: Path, name: str, fields: dict) -> Path:
    with uproot.recreate(path) as out:
        out.mkrntuple(name, ak.Array(fields))
    return path


def nanoaod_branches(events=EVENTS) -> dict:
    def collection(kind, names):
        return ak.zip({out: jagged(events[kind][src], np.int32 if src == "charge" else np.float32)
                       for out, src in names.items()})

    kin = {"pt": "pt", "eta": "eta", "phi": "phi", "mass": "mass"}
    return {
        "Electron": collection("electrons", {**kin, "charge": "charge"}),
        "Muon": collection("muons", {**kin, "charge": "charge"}),
        "Tau": collection("taus", {**kin, "charge": "charge"}),
        "Photon": collection("photons", kin),
        "Jet": collection("jets", {**kin, "btagDeepFlavB": "btag"}),
        "MET_pt": np.asarray(events["met"]["pt"], np.float32),
        "MET_phi": np.asarray(events["met"]["phi"], np.float32),
    }


def atlas_mini_branches(events=EVENTS) -> dict:
    """lep_ holds electrons then muons per event, lep_type 11/13; energies instead of masses; MeV."""
    mev = lambda values: jagged(values) * 1000.0  # noqa: E731
    leptons = {f: [e + m for e, m in zip(events["electrons"][f], events["muons"][f])]
               for f in ("pt", "eta", "phi", "mass", "charge")}
    lep_type = [[11] * len(e) + [13] * len(m) for e, m in zip(events["electrons"]["pt"], events["muons"]["pt"])]

    def with_energy(values):
        return {**values, "E": [list(energy(p, e, m)) for p, e, m in zip(values["pt"], values["eta"], values["mass"])]}

    lep, jet, tau, photon = (with_energy(x) for x in (leptons, events["jets"], events["taus"], events["photons"]))
    # MV2c10 values: the b-tag discriminant differs per experiment; wp 0.8244273
    mv2c10 = [[0.95, 0.2, 0.3], [0.9], []]
    return {
        "lep": ak.zip({"pt": mev(lep["pt"]), "eta": jagged(lep["eta"]), "phi": jagged(lep["phi"]),
                       "E": mev(lep["E"]), "charge": jagged(lep["charge"], np.int32),
                       "type": jagged(lep_type, np.uint32)}),
        "jet": ak.zip({"pt": mev(jet["pt"]), "eta": jagged(jet["eta"]), "phi": jagged(jet["phi"]),
                       "E": mev(jet["E"]), "MV2c10": jagged(mv2c10)}),
        "tau": ak.zip({"pt": mev(tau["pt"]), "eta": jagged(tau["eta"]), "phi": jagged(tau["phi"]),
                       "E": mev(tau["E"]), "charge": jagged(tau["charge"])}),
        "photon": ak.zip({"pt": mev(photon["pt"]), "eta": jagged(photon["eta"]), "phi": jagged(photon["phi"]),
                          "E": mev(photon["E"])}),
        "met_et": np.asarray(events["met"]["pt"], np.float32) * 1000.0,
        "met_phi": np.asarray(events["met"]["phi"], np.float32),
    }


def physlite_fields(events=EVENTS, separator=".") -> dict:
    """PHYSLITE aux branches, MeV. MET as two MET_Core terms per event that sum to the event's MET."""
    fields = {}
    containers = {"AnalysisElectronsAuxDyn": ("electrons", ("pt", "eta", "phi", "m", "charge")),
                  "AnalysisMuonsAuxDyn": ("muons", ("pt", "eta", "phi", "charge")),
                  "AnalysisJetsAuxDyn": ("jets", ("pt", "eta", "phi", "m"))}
    for container, (kind, variables) in containers.items():
        for variable in variables:
            values = jagged(events[kind]["mass" if variable == "m" else variable])
            fields[f"{container}{separator}{variable}"] = values * 1000.0 if variable in ("pt", "m") else values
    met_x = np.asarray(events["met"]["pt"]) * np.cos(events["met"]["phi"]) * 1000.0
    met_y = np.asarray(events["met"]["pt"]) * np.sin(events["met"]["phi"]) * 1000.0
    fields[f"MET_Core_AnalysisMETAuxDyn{separator}mpx"] = jagged([[0.25 * x, 0.75 * x] for x in met_x])
    fields[f"MET_Core_AnalysisMETAuxDyn{separator}mpy"] = jagged([[0.5 * y, 0.5 * y] for y in met_y])
    return fields


def random_nanoaod_branches(n_events: int, seed: int = 1) -> dict:
    """Many random NanoAOD-like events, for chunking and cache tests."""
    rng = np.random.default_rng(seed)

    def collection(mean, extra=()):
        counts = rng.poisson(mean, n_events)
        total = counts.sum()
        columns = {"pt": rng.exponential(30.0, total) + 5.0, "eta": rng.uniform(-2.5, 2.5, total),
                   "phi": rng.uniform(-np.pi, np.pi, total), "mass": rng.uniform(0.0, 10.0, total)}
        columns.update({name: make(total) for name, make in extra})
        return ak.zip({k: ak.unflatten(v.astype(np.float32), counts) for k, v in columns.items()})

    charge = ("charge", lambda total: rng.choice([-1.0, 1.0], total))
    return {
        "Electron": collection(0.5, [charge]), "Muon": collection(0.7, [charge]),
        "Tau": collection(0.2, [charge]), "Photon": collection(0.3),
        "Jet": collection(5.0, [("btagDeepFlavB", lambda total: rng.uniform(0, 1, total))]),
        "MET_pt": rng.exponential(40.0, n_events).astype(np.float32),
        "MET_phi": rng.uniform(-np.pi, np.pi, n_events).astype(np.float32),
    }
