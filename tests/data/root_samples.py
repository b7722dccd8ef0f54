"""Small real ROOT files written with uproot: NanoAOD-like, ATLAS-mini-like (MeV), PHYSLITE-like.

A uniquely named module (not conftest) so that tests and benchmarks/read_events.py can import it.
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import uproot

# Three hand-made events, GeV, every object inside every built-in schema's loose definition (`id` holds
# the NanoAOD ID values: cut-based tight electrons and photons, loose muons, jets with jet ID 6) and no two
# objects overlapping. Event 0 has an electron, a muon and three jets (two b-tagged in CMS); event 1 a
# single soft jet; event 2 two muons, a tau and a photon, no jets.
EVENTS = {
    "electrons": {"pt": [[40.0], [], []], "eta": [[-1.2], [], []], "phi": [[0.3], [], []],
                  "mass": [[0.000511], [], []], "charge": [[1], [], []], "id": [[4], [], []]},
    "muons": {"pt": [[30.0], [], [20.0, 60.0]], "eta": [[0.5], [], [2.0, -0.1]], "phi": [[1.0], [], [3.0, -3.0]],
              "mass": [[0.10566], [], [0.10566, 0.10566]], "charge": [[-1], [], [1, -1]],
              "rel_iso": [[0.05], [], [0.1, 0.02]], "id": [[1], [], [1, 1]]},
    "taus": {"pt": [[], [], [45.0]], "eta": [[], [], [0.7]], "phi": [[], [], [2.0]], "mass": [[], [], [1.777]],
             "charge": [[], [], [-1]]},
    "photons": {"pt": [[], [], [30.0]], "eta": [[], [], [-0.4]], "phi": [[], [], [0.1]], "mass": [[], [], [0.0]],
                "id": [[], [], [3]]},
    "jets": {"pt": [[50.0, 100.0, 22.0], [25.0], []], "eta": [[0.1, -0.2, 1.5], [2.2], []],
             "phi": [[-1.0, 2.5, 0.0], [1.0], []], "mass": [[8.0, 12.0, 4.0], [5.0], []],
             "btag": [[0.9, 0.1, 0.5], [0.05], []], "id": [[6, 6, 6], [6], []]},
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
    types = {"charge": np.int32, "cutBased": np.int32, "jetId": np.int32, "looseId": np.bool_}

    def collection(kind, names):
        return ak.zip({out: jagged(events[kind][src], types.get(out, np.float32)) for out, src in names.items()})

    kin = {"pt": "pt", "eta": "eta", "phi": "phi", "mass": "mass"}
    return {
        "Electron": collection("electrons", {**kin, "charge": "charge", "cutBased": "id"}),
        "Muon": collection("muons", {**kin, "charge": "charge", "pfRelIso04_all": "rel_iso", "looseId": "id"}),
        "Tau": collection("taus", {**kin, "charge": "charge"}),
        "Photon": collection("photons", {**kin, "cutBased": "id"}),
        "Jet": collection("jets", {**kin, "btagDeepFlavB": "btag", "jetId": "id"}),
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


def physlite_fields(events=EVENTS, separator=".", term_names=True) -> dict:
    """PHYSLITE aux branches, MeV, with MET_Core_AnalysisMET's two core soft terms per event.

    PVSoftTrkCore (the track soft term) completes the objects to the event's MET: MET = −Σ objects +
    PVSoftTrkCore. SoftClusCore (the cluster soft term) is another number, so adding the terms up or
    taking the wrong one gives a wrong MET. uproot cannot write a TTree branch of string lists:
    term_names=False leaves the names out.
    """
    fields = {}
    containers = {"AnalysisElectronsAuxDyn": ("electrons", ("pt", "eta", "phi", "m", "charge")),
                  "AnalysisMuonsAuxDyn": ("muons", ("pt", "eta", "phi", "charge")),
                  "AnalysisJetsAuxDyn": ("jets", ("pt", "eta", "phi", "m"))}
    for container, (kind, variables) in containers.items():
        for variable in variables:
            values = jagged(events[kind]["mass" if variable == "m" else variable])
            fields[f"{container}{separator}{variable}"] = values * 1000.0 if variable in ("pt", "m") else values
    fields[f"AnalysisElectronsAuxDyn{separator}DFCommonElectronsLHLoose"] = jagged(events["electrons"]["id"], np.int8)
    fields[f"AnalysisMuonsAuxDyn{separator}quality"] = jagged(events["muons"]["pt"], np.uint8) * 0  # 0: tight
    met_x, met_y = np.cos(events["met"]["phi"]) * events["met"]["pt"], np.sin(events["met"]["phi"]) * events["met"]["pt"]
    objects_x, objects_y = (sum(np.array([sum(p * f(a) for p, a in zip(pts, phis)) for pts, phis in
                                          zip(events[kind]["pt"], events[kind]["phi"])])
                                for kind in ("electrons", "muons", "jets")) for f in (np.cos, np.sin))
    track_x, track_y = (met_x + objects_x) * 1000.0, (met_y + objects_y) * 1000.0
    core = f"MET_Core_AnalysisMETAuxDyn{separator}"
    fields[f"{core}mpx"] = jagged([[0.6 * x + 5000.0, x] for x in track_x])
    fields[f"{core}mpy"] = jagged([[0.6 * y - 3000.0, y] for y in track_y])
    if term_names:
        fields[f"{core}name"] = ak.Array([["SoftClusCore", "PVSoftTrkCore"]] * len(track_x))
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
        return ak.zip({k: ak.unflatten(v.astype(np.float32) if v.dtype.kind == "f" else v, counts)
                       for k, v in columns.items()})

    charge = ("charge", lambda total: rng.choice([-1.0, 1.0], total))
    cut_based = ("cutBased", lambda total: rng.integers(0, 5, total))
    return {
        "Electron": collection(0.5, [charge, cut_based]),
        "Muon": collection(0.7, [charge, ("pfRelIso04_all", lambda total: rng.exponential(0.1, total)),
                                 ("looseId", lambda total: rng.uniform(0, 1, total) < 0.95)]),
        "Tau": collection(0.2, [charge]), "Photon": collection(0.3, [cut_based]),
        "Jet": collection(5.0, [("btagDeepFlavB", lambda total: rng.uniform(0, 1, total)),
                                ("jetId", lambda total: rng.choice([0, 2, 6], total, p=[0.02, 0.08, 0.9]))]),
        "MET_pt": rng.exponential(40.0, n_events).astype(np.float32),
        "MET_phi": rng.uniform(-np.pi, np.pi, n_events).astype(np.float32),
    }


def physlite_met_truth_sample(n_events: int, seed: int = 7) -> tuple[dict, dict]:
    """Generated PHYSLITE-like events (RNTuple field names, MeV) and the truth they were made from (GeV).

    Per event: electrons (each also reconstructed as a jet, as in PHYSLITE, where jets are built from all
    clusters), muons, jets, and soft particles, two thirds of them charged. The neutrinos carry what
    balances the event: true MET = −(Σ hard objects + Σ soft particles). The core soft terms are
    PVSoftTrkCore = −Σ charged soft particles (the tracks) and SoftClusCore = −0.8 Σ all soft particles
    (clusters, with a calorimeter response). Some electrons fail LHLoose or fall in the calorimeter crack:
    analysis definitions drop them and keep their jet, so MET still counts that energy once. The hard
    objects of an event are spread in φ (≥ 0.7 apart) so the only overlaps are electrons and their jets.

    truth: met_x, met_y (the neutrinos), neutral_x, neutral_y (Σ neutral soft particles: what the track
    soft term cannot see, so rebuilt MET − true MET = Σ neutral soft pT).
    """
    rng = np.random.default_rng(seed)
    fields: dict[str, list] = {}
    truth = {k: np.zeros(n_events) for k in ("met_x", "met_y", "neutral_x", "neutral_y")}
    rows = {k: [] for k in ("el_pt", "el_eta", "el_phi", "el_loose", "mu_pt", "mu_eta", "mu_phi", "jet_pt", "jet_eta",
                            "jet_phi", "trk_x", "trk_y", "clus_x", "clus_y")}
    for event in range(n_events):
        n_el, n_mu, n_jet = rng.poisson(0.7), rng.poisson(0.5), rng.poisson(3.0)
        n_hard = n_el + n_mu + n_jet
        phis = (rng.uniform(-np.pi, np.pi) + np.arange(n_hard) * 2 * np.pi / max(n_hard, 9)
                + rng.uniform(-0.02, 0.02, n_hard) + np.pi) % (2 * np.pi) - np.pi
        el_phi, mu_phi, jet_phi = np.split(phis, [n_el, n_el + n_mu])
        el_pt, mu_pt, jet_pt = 25 + rng.exponential(30, n_el), 15 + rng.exponential(25, n_mu), 25 + rng.exponential(40, n_jet)
        el_eta, mu_eta, jet_eta = rng.uniform(-2.4, 2.4, n_el), rng.uniform(-2.4, 2.4, n_mu), rng.uniform(-4.4, 4.4, n_jet)
        el_loose = rng.uniform(0, 1, n_el) < 0.85
        # every electron is also a jet at (almost) the same place, with the same pT
        all_jet_pt, all_jet_eta = np.concatenate([jet_pt, el_pt]), np.concatenate([jet_eta, el_eta + 0.01])
        all_jet_phi = np.concatenate([jet_phi, el_phi])
        n_soft = rng.poisson(10)
        soft_pt, soft_phi = rng.exponential(2.0, n_soft), rng.uniform(-np.pi, np.pi, n_soft)
        charged = rng.uniform(0, 1, n_soft) < 2 / 3
        soft_x, soft_y = soft_pt * np.cos(soft_phi), soft_pt * np.sin(soft_phi)
        hard_x = sum((p * np.cos(f)).sum() for p, f in ((el_pt, el_phi), (mu_pt, mu_phi), (jet_pt, jet_phi)))
        hard_y = sum((p * np.sin(f)).sum() for p, f in ((el_pt, el_phi), (mu_pt, mu_phi), (jet_pt, jet_phi)))
        truth["met_x"][event], truth["met_y"][event] = -(hard_x + soft_x.sum()), -(hard_y + soft_y.sum())
        truth["neutral_x"][event], truth["neutral_y"][event] = soft_x[~charged].sum(), soft_y[~charged].sum()
        for key, value in (("el_pt", el_pt), ("el_eta", el_eta), ("el_phi", el_phi), ("el_loose", el_loose),
                           ("mu_pt", mu_pt), ("mu_eta", mu_eta), ("mu_phi", mu_phi), ("jet_pt", all_jet_pt),
                           ("jet_eta", all_jet_eta), ("jet_phi", all_jet_phi)):
            rows[key].append(value)
        rows["trk_x"].append(-soft_x[charged].sum())
        rows["trk_y"].append(-soft_y[charged].sum())
        rows["clus_x"].append(-0.8 * soft_x.sum())
        rows["clus_y"].append(-0.8 * soft_y.sum())

    def mev(key):
        return jagged([list(v * 1000.0) for v in rows[key]])

    def plain(key, dtype=np.float32):
        return jagged([list(v) for v in rows[key]], dtype)

    fields = {
        "AnalysisElectronsAuxDyn:pt": mev("el_pt"), "AnalysisElectronsAuxDyn:eta": plain("el_eta"),
        "AnalysisElectronsAuxDyn:phi": plain("el_phi"), "AnalysisElectronsAuxDyn:m": mev("el_pt") * 0 + 0.511,
        "AnalysisElectronsAuxDyn:charge": mev("el_pt") * 0 - 1,
        "AnalysisElectronsAuxDyn:DFCommonElectronsLHLoose": plain("el_loose", np.int8),
        "AnalysisMuonsAuxDyn:pt": mev("mu_pt"), "AnalysisMuonsAuxDyn:eta": plain("mu_eta"),
        "AnalysisMuonsAuxDyn:phi": plain("mu_phi"), "AnalysisMuonsAuxDyn:charge": mev("mu_pt") * 0 + 1,
        "AnalysisMuonsAuxDyn:quality": plain("mu_pt", np.uint8) * 0 + 1,
        "AnalysisJetsAuxDyn:pt": mev("jet_pt"), "AnalysisJetsAuxDyn:eta": plain("jet_eta"),
        "AnalysisJetsAuxDyn:phi": plain("jet_phi"), "AnalysisJetsAuxDyn:m": mev("jet_pt") * 0 + 5000.0,
        "MET_Core_AnalysisMETAuxDyn:name": ak.Array([["SoftClusCore", "PVSoftTrkCore"]] * n_events),
        "MET_Core_AnalysisMETAuxDyn:mpx": jagged([[c * 1000.0, t * 1000.0] for c, t in zip(rows["clus_x"], rows["trk_x"])]),
        "MET_Core_AnalysisMETAuxDyn:mpy": jagged([[c * 1000.0, t * 1000.0] for c, t in zip(rows["clus_y"], rows["trk_y"])]),
    }
    return fields, truth
