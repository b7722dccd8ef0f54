"""A parametrised detector response: generator-level final state -> reconstructed objects (GeV).

One `DetectorResponse` per detector. The numbers follow the Delphes 3 cards `delphes_card_CMS.tcl`
and `delphes_card_ATLAS.tcl` (module and formula cited next to each field), simplified to what the
foundation model sees: isolated electrons, muons and photons, anti-kT R=0.4 jets with a flavour label
and a continuous b-tag discriminant, hadronic taus, and MET. The detectors differ the way the real ones
do: CMS has the better tracker (muon resolution) and a coarser hadron calorimeter (jet resolution),
muon acceptance |η|<2.4 vs ATLAS 2.5, electron 2.5 vs 2.47, different b-taggers and working points.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crossfed import kinematics

# |PDG id| of particles that leave nothing in the detector.
NEUTRINOS = (12, 14, 16)


@dataclass(frozen=True)
class TruthBatch:
    """What the detector sees of a batch of generated events, as flat arrays with each row's event number.

    particles: float64 [n, 4] (px, py, pz, E) final-state particles with pdg_id and charge; b_hadrons,
    c_hadrons: [k, 4] momenta of heavy-flavour hadrons (for jet flavour, like NanoAOD's ghost matching);
    taus: [t, 4] visible momenta of hadronically decaying taus and tau_charges. Rows are grouped by
    event in increasing order; `*event` says which of the n_events each row belongs to.
    """

    n_events: int
    particles: np.ndarray
    pdg_id: np.ndarray
    charge: np.ndarray
    event: np.ndarray
    b_hadrons: np.ndarray
    b_event: np.ndarray
    c_hadrons: np.ndarray
    c_event: np.ndarray
    taus: np.ndarray
    tau_charges: np.ndarray
    tau_event: np.ndarray

    def subset(self, keep: np.ndarray) -> "TruthBatch":
        """Only the events where `keep` (bool [n_events]) is true, renumbered from 0."""
        new_number = np.cumsum(keep) - 1
        rows = lambda event: keep[event]  # noqa: E731
        p, b, c, t = rows(self.event), rows(self.b_event), rows(self.c_event), rows(self.tau_event)
        return TruthBatch(
            n_events=int(keep.sum()), particles=self.particles[p], pdg_id=self.pdg_id[p], charge=self.charge[p],
            event=new_number[self.event[p]], b_hadrons=self.b_hadrons[b], b_event=new_number[self.b_event[b]],
            c_hadrons=self.c_hadrons[c], c_event=new_number[self.c_event[c]], taus=self.taus[t],
            tau_charges=self.tau_charges[t], tau_event=new_number[self.tau_event[t]],
        )


@dataclass(frozen=True)
class DetectorResponse:
    name: str
    calo_eta_max: float  # calorimeter coverage: particles beyond it are invisible
    # Electrons (Delphes ElectronEfficiency, ElectronEnergySmearing): efficiency in barrel / endcap.
    electron_eta_max: float
    electron_efficiency: tuple[float, float]
    # ECAL energy resolution sigma(E) = sqrt((C E)^2 + S^2 E + N^2) as (C, S, N) (Delphes ECal module).
    ecal_resolution: tuple[float, float, float]
    # Muons (Delphes MuonEfficiency, MuonMomentumSmearing): sigma(pT)/pT = sqrt(a^2 + (b pT)^2) per |η| bin.
    muon_eta_max: float
    muon_efficiency: float
    muon_resolution: tuple[tuple[float, float, float], ...]  # (|eta| upper edge, a, b)
    photon_eta_max: float
    # HCAL resolution per |η| bin as (|eta| upper edge, C, S, N), used for jets (Delphes HCal module).
    hcal_resolution: tuple[tuple[float, float, float, float], ...]
    jet_eta_max: float
    # Isolation (Delphes ElectronIsolation/MuonIsolation/PhotonIsolation): cone ΔR and max pT-sum ratio.
    electron_isolation: tuple[float, float]
    muon_isolation: tuple[float, float]
    photon_isolation: tuple[float, float]
    # B-tagging (Delphes BTagging module EfficiencyFormula): b: a tanh(b pT) c/(1 + d pT);
    # c: a tanh(b pT)/(1 + d pT); light: a + b pT.
    btag_eta_max: float
    btag_b: tuple[float, float, float, float]
    btag_c: tuple[float, float, float]
    btag_light: tuple[float, float]
    # The experiment's discriminant: range and the working point whose rates the formulas give.
    btag_range: tuple[float, float]
    btag_working_point: float
    # Tau tagging (Delphes TauTagging): efficiency on hadronic taus, mistag on other jets.
    tau_eta_max: float
    tau_efficiency: float
    tau_mistag: float
    # MET: resolution of the unclustered energy, sigma per component = k sqrt(sum ET).
    unclustered_resolution: float
    lepton_pt_min: float = 10.0
    photon_pt_min: float = 10.0
    jet_pt_min: float = 20.0
    units: str = field(default="GeV")


CMS = DetectorResponse(
    name="cms",
    calo_eta_max=5.0,
    electron_eta_max=2.5,
    electron_efficiency=(0.95, 0.85),  # CMS card: |eta|<=1.5: 0.95, 1.5<|eta|<=2.5: 0.85
    ecal_resolution=(0.0017, 0.101, 0.0),  # CMS card ElectronEnergySmearing, |eta|<=2.5
    muon_eta_max=2.4,
    muon_efficiency=0.95,  # CMS card MuonEfficiency
    muon_resolution=((0.5, 0.01, 1.0e-4), (1.5, 0.015, 1.5e-4), (2.4, 0.025, 3.5e-4)),  # CMS card
    photon_eta_max=2.5,
    hcal_resolution=((3.0, 0.050, 1.50, 0.0), (5.0, 0.130, 2.70, 0.0)),  # CMS card HCal
    jet_eta_max=4.7,
    electron_isolation=(0.3, 0.12),
    muon_isolation=(0.4, 0.25),  # NanoAOD pfRelIso04_all; CMS card PTRatioMax 0.25
    photon_isolation=(0.3, 0.12),
    btag_eta_max=2.5,
    btag_b=(0.85, 0.0025, 25.0, 0.063),  # CMS card BTagging {5}: 0.85*tanh(0.0025*pt)*(25.0/(1+0.063*pt))
    btag_c=(0.25, 0.018, 0.0013),  # {4}: 0.25*tanh(0.018*pt)*(1/(1+0.0013*pt))
    btag_light=(0.01, 0.000038),  # {0}: 0.01+0.000038*pt
    btag_range=(0.0, 1.0),  # DeepFlavB
    btag_working_point=0.2783,  # DeepFlavB medium working point (2018)
    tau_eta_max=2.3,
    tau_efficiency=0.6,  # CMS card TauTagging {15}: 0.6
    tau_mistag=0.01,  # {0}: 0.01
    unclustered_resolution=0.6,
)

ATLAS = DetectorResponse(
    name="atlas",
    calo_eta_max=4.9,
    electron_eta_max=2.47,
    electron_efficiency=(0.95, 0.85),  # ATLAS card ElectronEfficiency
    ecal_resolution=(0.0017, 0.101, 0.0),  # ATLAS card ECal, |eta|<=3.2
    muon_eta_max=2.5,
    muon_efficiency=0.95,  # ATLAS card MuonEfficiency
    # ATLAS card MuonMomentumSmearing: worse than CMS at high pT (smaller solenoid field).
    muon_resolution=((1.5, 0.01, 2.0e-4), (2.5, 0.02, 4.0e-4)),
    photon_eta_max=2.37,
    # ATLAS card HCal: sqrt(E^2 0.0302^2 + E 0.5205^2 + 1.59^2) for |eta|<=1.7, then 0.05/0.706, 0.0942/1.0.
    hcal_resolution=((1.7, 0.0302, 0.5205, 1.59), (3.2, 0.0500, 0.706, 0.0), (4.9, 0.0942, 1.0, 0.0)),
    jet_eta_max=4.5,
    electron_isolation=(0.2, 0.1),  # ATLAS etcone20-like cone
    muon_isolation=(0.3, 0.15),  # ptcone30-like cone
    photon_isolation=(0.2, 0.1),
    btag_eta_max=2.5,
    btag_b=(0.80, 0.003, 30.0, 0.086),  # ATLAS card BTagging {5}: 0.80*tanh(0.003*pt)*(30/(1+0.086*pt))
    btag_c=(0.20, 0.02, 0.0034),  # {4}: 0.20*tanh(0.02*pt)*(1/(1+0.0034*pt))
    btag_light=(0.002, 7.3e-6),  # {0}: 0.002+7.3e-06*pt
    btag_range=(-1.0, 1.0),  # MV2c10
    btag_working_point=0.8244273,  # MV2c10 77% working point
    tau_eta_max=2.5,
    tau_efficiency=0.4,  # ATLAS card TauTagging {15}: 0.4
    tau_mistag=0.01,
    unclustered_resolution=0.5,
)

DETECTORS = {"cms": CMS, "atlas": ATLAS}


# --- kinematics ---------------------------------------------------------------------------------

def pt_eta_phi(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of four-vectors p [n, 4] = (px, py, pz, E): the reader's conversion (kinematics.py)."""
    return kinematics.pt_eta_phi(p[:, 0], p[:, 1], p[:, 2])


def mass(p: np.ndarray) -> np.ndarray:
    return kinematics.mass(p[:, 3], p[:, 0], p[:, 1], p[:, 2])


def calorimeter_sigma(energy: np.ndarray, c: float, s: float, n: float) -> np.ndarray:
    return np.sqrt((c * energy) ** 2 + s**2 * energy + n**2)


# --- reconstruction (vectorised over a batch of events) ------------------------------------------

# Per-event fields of each reconstructed collection, in the order the writer reads them.
COLLECTIONS = ("electrons", "muons", "photons", "taus", "jets")


def _offsets(event: np.ndarray, n_events: int) -> np.ndarray:
    """Start of each event's rows (and the end), for rows grouped by event."""
    return np.concatenate([[0], np.cumsum(np.bincount(event, minlength=n_events))])


def _same_event_pairs(event_a: np.ndarray, offsets_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (row of A, row of B) pairs in the same event, B's rows grouped by event with `offsets_b`."""
    starts, counts = offsets_b[event_a], offsets_b[event_a + 1] - offsets_b[event_a]
    a = np.repeat(np.arange(len(event_a)), counts)
    first_pair = np.cumsum(counts) - counts
    b = np.arange(counts.sum()) - np.repeat(first_pair - starts, counts)
    return a, b


def reconstruct(truth: TruthBatch, det: DetectorResponse, rng: np.random.Generator) -> dict:
    """Reconstructed objects of a batch: name -> dict of flat arrays (GeV) with an `event` array; MET per event."""
    p = truth.particles
    pt, eta, phi = pt_eta_phi(p)
    visible = (np.abs(eta) < det.calo_eta_max) & ~np.isin(np.abs(truth.pdg_id), NEUTRINOS)
    used = ~visible  # particles already assigned to an object (or never seen)
    offsets = _offsets(truth.event, truth.n_events)

    isolated = {name: _isolated(pdg, eta_max, iso, truth, pt, eta, phi, visible, offsets, det, rng)
                for name, pdg, eta_max, iso in (("electrons", 11, det.electron_eta_max, det.electron_isolation),
                                                ("muons", 13, det.muon_eta_max, det.muon_isolation),
                                                ("photons", 22, det.photon_eta_max, det.photon_isolation))}
    for objects in isolated.values():
        used[objects.pop("index")] = True

    jets, jet_constituents = _cluster_jets(truth, ~used, det, rng)
    used[jet_constituents] = True
    jets["flavour"] = _jet_flavour(jets, truth)
    taus, jets = _tau_tag(jets, truth, det, rng)
    jets["btag"] = _btag(jets, det, rng)

    collections = isolated | dict(taus=taus, jets=jets)
    met_x, met_y = _missing_et(truth, ~used, list(collections.values()), det, rng)
    return collections | dict(met_pt=np.hypot(met_x, met_y), met_phi=np.arctan2(met_y, met_x))


def may_pass_preselection(truth: TruthBatch, det: DetectorResponse) -> np.ndarray:
    """bool [n_events]: the event holds an electron or muon candidate (before isolation, efficiency, smearing).

    Exactly the candidates `_isolated` starts from, so an event without one can never have a lepton
    and never passes the preselection: it is safe to drop it before the expensive reconstruction.
    """
    pt, eta, _ = pt_eta_phi(truth.particles)
    abs_id, abs_eta = np.abs(truth.pdg_id), np.abs(eta)
    candidate = (pt > det.lepton_pt_min) & (abs_eta < det.calo_eta_max) & (
        ((abs_id == 11) & (abs_eta < det.electron_eta_max)) | ((abs_id == 13) & (abs_eta < det.muon_eta_max)))
    return np.bincount(truth.event[candidate], minlength=truth.n_events) > 0


def passes_preselection(reco: dict, n_events: int, working_point: float) -> np.ndarray:
    """bool [n_events], KEK study preselection: at least one electron or muon, two jets, one b-tagged jet."""
    count = lambda event: np.bincount(event, minlength=n_events)  # noqa: E731
    jets = reco["jets"]
    n_leptons = count(reco["electrons"]["event"]) + count(reco["muons"]["event"])
    return (n_leptons >= 1) & (count(jets["event"]) >= 2) & (count(jets["event"][jets["btag"] > working_point]) >= 1)


def split_events(reco: dict, n_events: int, events: np.ndarray) -> list[dict]:
    """The chosen events, each as the writer's dict: collection -> dict of numpy arrays, met_pt, met_phi."""
    bounds = {name: _offsets(reco[name]["event"], n_events) for name in COLLECTIONS}
    return [
        {name: {k: v[bounds[name][e]:bounds[name][e + 1]] for k, v in reco[name].items() if k != "event"}
         for name in COLLECTIONS} | dict(met_pt=float(reco["met_pt"][e]), met_phi=float(reco["met_phi"][e]))
        for e in events.tolist()
    ]


def _isolated(pdg, eta_max, isolation, truth, pt, eta, phi, visible, offsets, det, rng) -> dict:
    """Isolated electrons, muons or photons above threshold, with efficiency and smearing."""
    cone, max_ratio = isolation
    pt_min = det.photon_pt_min if pdg == 22 else det.lepton_pt_min
    candidates = np.flatnonzero(
        visible & (np.abs(truth.pdg_id) == pdg) & (pt > pt_min) & (np.abs(eta) < eta_max)
    )
    # Isolation: scalar pT sum of the other visible particles above 0.5 GeV in the cone, relative to pT.
    others = visible & (pt > 0.5)
    cone_sum = lambda centres, contributing, r: _cone_sum(centres, contributing, r, truth.event, offsets, pt, eta, phi)  # noqa: E731
    rel_iso = cone_sum(candidates, others, cone) / pt[candidates]
    passed = (rel_iso < max_ratio) & (rng.random(len(candidates)) < _efficiency(pdg, eta[candidates], det))
    kept = candidates[passed]
    smeared_pt = _smear_pt(pdg, pt[kept], eta[kept], truth.particles[kept, 3], det, rng)
    return dict(
        index=kept, event=truth.event[kept], pt=smeared_pt, eta=eta[kept], phi=phi[kept],
        mass=mass(truth.particles[kept]), charge=truth.charge[kept].astype(np.int32), rel_iso=rel_iso[passed],
        # ATLAS ntuple variables: track isolation (charged, ΔR<0.3) and calorimeter isolation (all, ΔR<0.2)
        ptcone30=cone_sum(kept, others & (truth.charge != 0), 0.3),
        etcone20=cone_sum(kept, others, 0.2),
    )


def _cone_sum(centres, contributing, cone, event, offsets, pt, eta, phi) -> np.ndarray:
    """Scalar pT sum of the contributing particles within ΔR < cone of each centre, the centre excluded."""
    centre_row, other = _same_event_pairs(event[centres], offsets)
    centre = centres[centre_row]
    in_cone = contributing[other] & (other != centre) & (_pair_delta_r(eta[centre], phi[centre], eta[other], phi[other]) < cone)
    return np.bincount(centre_row[in_cone], weights=pt[other[in_cone]], minlength=len(centres))


def _pair_delta_r(eta1, phi1, eta2, phi2) -> np.ndarray:
    """ΔR of matched pairs (element by element)."""
    dphi = np.remainder(phi1 - phi2 + np.pi, 2 * np.pi) - np.pi
    return np.hypot(eta1 - eta2, dphi)


def _efficiency(pdg: int, eta: np.ndarray, det: DetectorResponse) -> np.ndarray:
    if pdg == 11:
        barrel, endcap = det.electron_efficiency
        return np.where(np.abs(eta) <= 1.5, barrel, endcap)
    if pdg == 13:
        return np.full(len(eta), det.muon_efficiency)
    return np.full(len(eta), 0.95)  # photons: Delphes PhotonEfficiency, |eta|<=1.5: 0.95


def _smear_pt(pdg, pt, eta, energy, det, rng) -> np.ndarray:
    if pdg == 13:
        edges = np.array([b[0] for b in det.muon_resolution])
        a, b = np.array([r[1:] for r in det.muon_resolution])[np.minimum(np.searchsorted(edges, np.abs(eta)), len(edges) - 1)].T
        relative = np.sqrt(a**2 + (b * pt) ** 2)
    else:  # electrons and photons: ECAL energy resolution
        relative = calorimeter_sigma(energy, *det.ecal_resolution) / np.maximum(energy, 1e-9)
    return np.maximum(pt * (1 + relative * rng.standard_normal(len(pt))), 0.1)


def _cluster_jets(truth: TruthBatch, clusterable: np.ndarray, det: DetectorResponse, rng) -> tuple[dict, np.ndarray]:
    """Anti-kT R=0.4 on the visible particles not used by isolated objects, smeared by the HCAL resolution.

    The whole batch goes to fastjet in one call (its awkward interface), not one PseudoJet per particle.
    """
    import awkward as ak

    from crossfed import extras

    fastjet = extras.fastjet()

    index = np.flatnonzero(clusterable)
    counts = np.bincount(truth.event[index], minlength=truth.n_events)
    p = truth.particles[index]
    inputs = ak.unflatten(ak.zip({"px": p[:, 0], "py": p[:, 1], "pz": p[:, 2], "E": p[:, 3]}, with_name="Momentum4D"), counts)
    sequence = fastjet.ClusterSequence(inputs, fastjet.JetDefinition(fastjet.antikt_algorithm, 0.4))
    raw = sequence.inclusive_jets(0.5 * det.jet_pt_min)
    jet_event = np.repeat(np.arange(truth.n_events), ak.to_numpy(ak.num(raw)))
    four = np.stack([ak.to_numpy(ak.flatten(raw[c])) for c in ("px", "py", "pz", "E")], axis=1).reshape(-1, 4)
    # Constituents: per event, per jet (same order as the jets), indices into that event's inputs.
    constituents = sequence.constituent_index(0.5 * det.jet_pt_min)
    n_constituents = ak.to_numpy(ak.flatten(ak.num(constituents, axis=2)))
    local = ak.to_numpy(ak.flatten(constituents, axis=None))
    constituent_jet = np.repeat(np.arange(len(four)), n_constituents)
    constituent_row = index[(np.cumsum(counts) - counts)[jet_event[constituent_jet]] + local]

    pt, eta, _ = pt_eta_phi(four)
    edges = np.array([b[0] for b in det.hcal_resolution])
    params = np.array([b[1:] for b in det.hcal_resolution])[np.minimum(np.searchsorted(edges, np.abs(eta)), len(edges) - 1)]
    sigma = calorimeter_sigma(four[:, 3], *params.T) / np.maximum(four[:, 3], 1e-9)
    four = four * np.maximum(1 + sigma * rng.standard_normal(len(four)), 0.0)[:, None]
    pt, eta, phi = pt_eta_phi(four)
    keep = (pt > det.jet_pt_min) & (np.abs(eta) < det.jet_eta_max)
    kept = np.flatnonzero(keep)
    order = kept[np.lexsort((-pt[kept], jet_event[kept]))]  # by event, then by pT
    jets = dict(event=jet_event[order], pt=pt[order], eta=eta[order], phi=phi[order], mass=mass(four[order]))
    return jets, constituent_row[keep[constituent_jet]]


def _jet_flavour(jets: dict, truth: TruthBatch) -> np.ndarray:
    """5 if a B hadron (pT > 5 GeV) is within ΔR < 0.4, else 4 for a C hadron, else 0 (hadronFlavour)."""
    flavour = np.zeros(len(jets["pt"]), np.int32)
    for code, hadrons, hadron_event in ((4, truth.c_hadrons, truth.c_event), (5, truth.b_hadrons, truth.b_event)):
        h_pt, h_eta, h_phi = pt_eta_phi(hadrons)  # b overrides c
        hard = h_pt > 5.0
        jet, hadron = _same_event_pairs(jets["event"], _offsets(hadron_event[hard], truth.n_events))
        close = _pair_delta_r(jets["eta"][jet], jets["phi"][jet], h_eta[hard][hadron], h_phi[hard][hadron]) < 0.4
        flavour[np.unique(jet[close])] = code
    return flavour


def _tau_tag(jets: dict, truth: TruthBatch, det: DetectorResponse, rng) -> tuple[dict, dict]:
    """Jets matched (ΔR < 0.4) to a visible hadronic tau become taus with the tagging efficiency; others mistag."""
    n = len(jets["pt"])
    matched_tau = np.full(n, -1)
    t_pt, t_eta, t_phi = pt_eta_phi(truth.taus)
    jet, tau = _same_event_pairs(jets["event"], _offsets(truth.tau_event, truth.n_events))
    dr = _pair_delta_r(jets["eta"][jet], jets["phi"][jet], t_eta[tau], t_phi[tau])
    nearest = np.lexsort((dr, jet))  # per jet, its closest tau first
    first = nearest[np.unique(jet[nearest], return_index=True)[1]]
    close = first[dr[first] < 0.4]
    matched_tau[jet[close]] = tau[close]
    rate = np.where(matched_tau >= 0, det.tau_efficiency, det.tau_mistag)
    tagged = (np.abs(jets["eta"]) < det.tau_eta_max) & (rng.random(n) < rate)
    random_charge = rng.choice(np.array([-1, 1], np.int32), n)
    tau_charge = truth.tau_charges[np.maximum(matched_tau, 0)] if len(truth.taus) else np.zeros(n, np.int32)
    charge = np.where(matched_tau >= 0, tau_charge, random_charge)
    taus = {k: v[tagged] for k, v in jets.items() if k != "flavour"}
    taus["charge"] = charge[tagged].astype(np.int32)
    return taus, {k: v[~tagged] for k, v in jets.items()}


def _btag(jets: dict, det: DetectorResponse, rng) -> np.ndarray:
    """A continuous discriminant whose cut at the working point reproduces the Delphes efficiencies."""
    pt, flavour = jets["pt"], jets["flavour"]
    a, b, c, d = det.btag_b
    efficiency = np.select(
        [flavour == 5, flavour == 4],
        [a * np.tanh(b * pt) * c / (1 + d * pt), det.btag_c[0] * np.tanh(det.btag_c[1] * pt) / (1 + det.btag_c[2] * pt)],
        det.btag_light[0] + det.btag_light[1] * pt,
    )
    in_tracker = np.abs(jets["eta"]) < det.btag_eta_max
    tagged = in_tracker & (rng.random(len(pt)) < efficiency)
    # Work in u = (x - lo)/(hi - lo) in [0, 1]; the working point is u_wp. Above it b jets pile up near 1
    # and mistags near the cut; below it light jets pile up near 0. Powers of a uniform shape the peaks.
    lo, hi = det.btag_range
    u_wp = (det.btag_working_point - lo) / (hi - lo)
    r = rng.random(len(pt))
    is_b = flavour == 5
    above = u_wp + (1 - u_wp) * np.where(is_b, 1 - r**3, r**2)
    below = u_wp * np.where(is_b, 1 - r**2, np.where(flavour == 4, r**2, r**4))
    u = np.where(tagged, above, below)
    u = np.where(in_tracker, u, 0.0)  # no tracks, no tag: the lowest value
    return (lo + (hi - lo) * u).astype(np.float32)


def _missing_et(truth: TruthBatch, unclustered: np.ndarray, collections: list[dict], det: DetectorResponse,
                rng) -> tuple[np.ndarray, np.ndarray]:
    """MET per event = -(sum of reconstructed objects + smeared unclustered energy)."""
    per_event = lambda event, values: np.bincount(event, weights=values, minlength=truth.n_events)  # noqa: E731
    sum_x = sum(per_event(o["event"], o["pt"] * np.cos(o["phi"])) for o in collections)
    sum_y = sum(per_event(o["event"], o["pt"] * np.sin(o["phi"])) for o in collections)
    u, event = truth.particles[unclustered], truth.event[unclustered]
    u_x, u_y = per_event(event, u[:, 0]), per_event(event, u[:, 1])
    sigma = det.unclustered_resolution * np.sqrt(per_event(event, np.hypot(u[:, 0], u[:, 1])))
    noise = sigma[:, None] * rng.standard_normal((truth.n_events, 2))
    return -(sum_x + u_x + noise[:, 0]), -(sum_y + u_y + noise[:, 1])
