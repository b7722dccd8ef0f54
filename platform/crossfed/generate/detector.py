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

# |PDG id| of particles that leave nothing in the detector.
NEUTRINOS = (12, 14, 16)


@dataclass(frozen=True)
class TruthEvent:
    """What the detector sees of one generated event: visible final-state particles and flavour truth.

    particles: float64 [n, 4] (px, py, pz, E) with pdg_id and charge per particle; b_hadrons,
    c_hadrons: [k, 4] momenta of heavy-flavour hadrons (for jet flavour, like NanoAOD's ghost matching);
    taus: [t, 4] visible momenta of hadronically decaying taus and tau_charges.
    """

    particles: np.ndarray
    pdg_id: np.ndarray
    charge: np.ndarray
    b_hadrons: np.ndarray
    c_hadrons: np.ndarray
    taus: np.ndarray
    tau_charges: np.ndarray


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
    pt = np.hypot(p[:, 0], p[:, 1])
    eta = np.arcsinh(np.divide(p[:, 2], pt, out=np.full_like(pt, 1e9), where=pt > 0))
    return pt, eta, np.arctan2(p[:, 1], p[:, 0])


def mass(p: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(p[:, 3] ** 2 - (p[:, :3] ** 2).sum(1), 0.0))


def delta_r(eta1, phi1, eta2, phi2) -> np.ndarray:
    """Pairwise ΔR, shape [len1, len2]."""
    dphi = np.angle(np.exp(1j * (np.asarray(phi1)[:, None] - np.asarray(phi2)[None, :])))
    return np.hypot(np.asarray(eta1)[:, None] - np.asarray(eta2)[None, :], dphi)


def calorimeter_sigma(energy: np.ndarray, c: float, s: float, n: float) -> np.ndarray:
    return np.sqrt((c * energy) ** 2 + s**2 * energy + n**2)


# --- reconstruction -----------------------------------------------------------------------------

def reconstruct(truth: TruthEvent, det: DetectorResponse, rng: np.random.Generator) -> dict:
    """One event's reconstructed objects: dict of name -> dict of numpy arrays (GeV), plus MET."""
    p = truth.particles
    pt, eta, phi = pt_eta_phi(p)
    visible = (np.abs(eta) < det.calo_eta_max) & ~np.isin(np.abs(truth.pdg_id), NEUTRINOS)
    used = ~visible  # particles already assigned to an object (or never seen)

    electrons = _isolated(11, det.electron_eta_max, det.electron_isolation, truth, pt, eta, phi, visible, det, rng)
    muons = _isolated(13, det.muon_eta_max, det.muon_isolation, truth, pt, eta, phi, visible, det, rng)
    photons = _isolated(22, det.photon_eta_max, det.photon_isolation, truth, pt, eta, phi, visible, det, rng)
    for objects in (electrons, muons, photons):
        used[objects.pop("index")] = True

    jets, jet_constituents = _cluster_jets(p, ~used, det, rng)
    used[jet_constituents] = True
    jets["flavour"] = _jet_flavour(jets, truth)
    taus, jets = _tau_tag(jets, truth, det, rng)
    jets["btag"] = _btag(jets, det, rng)

    met_x, met_y = _missing_et(p[~used], [electrons, muons, photons, taus, jets], det, rng)
    return dict(
        electrons=electrons, muons=muons, photons=photons, taus=taus, jets=jets,
        met_pt=float(np.hypot(met_x, met_y)), met_phi=float(np.arctan2(met_y, met_x)),
    )


def _isolated(pdg, eta_max, isolation, truth, pt, eta, phi, visible, det, rng) -> dict:
    """Isolated electrons, muons or photons above threshold, with efficiency and smearing."""
    cone, max_ratio = isolation
    pt_min = det.photon_pt_min if pdg == 22 else det.lepton_pt_min
    candidates = np.flatnonzero(
        visible & (np.abs(truth.pdg_id) == pdg) & (pt > pt_min) & (np.abs(eta) < eta_max)
    )
    # Isolation: scalar pT sum of the other visible particles above 0.5 GeV in the cone, relative to pT.
    others = visible & (pt > 0.5)
    rel_iso = _cone_sum(candidates, others, cone, pt, eta, phi) / pt[candidates]
    passed = (rel_iso < max_ratio) & (rng.random(len(candidates)) < _efficiency(pdg, eta[candidates], det))
    kept = candidates[passed]
    smeared_pt = _smear_pt(pdg, pt[kept], eta[kept], truth.particles[kept, 3], det, rng)
    return dict(
        index=kept, pt=smeared_pt, eta=eta[kept], phi=phi[kept],
        mass=mass(truth.particles[kept]), charge=truth.charge[kept].astype(np.int32), rel_iso=rel_iso[passed],
        # ATLAS ntuple variables: track isolation (charged, ΔR<0.3) and calorimeter isolation (all, ΔR<0.2)
        ptcone30=_cone_sum(kept, others & (truth.charge != 0), 0.3, pt, eta, phi),
        etcone20=_cone_sum(kept, others, 0.2, pt, eta, phi),
    )


def _cone_sum(centres: np.ndarray, contributing: np.ndarray, cone: float, pt, eta, phi) -> np.ndarray:
    """Scalar pT sum of the contributing particles within ΔR < cone of each centre, the centre excluded."""
    others = np.flatnonzero(contributing)
    in_cone = (delta_r(eta[centres], phi[centres], eta[others], phi[others]) < cone) & (others[None, :] != centres[:, None])
    return (in_cone * pt[others][None, :]).sum(1)


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


def _cluster_jets(p: np.ndarray, clusterable: np.ndarray, det: DetectorResponse, rng) -> tuple[dict, np.ndarray]:
    """Anti-kT R=0.4 on the visible particles not used by isolated objects, smeared by the HCAL resolution."""
    import fastjet

    index = np.flatnonzero(clusterable)
    pseudojets = []
    for i, momentum in zip(index.tolist(), p[index].tolist()):  # Python floats: the fastest way into SWIG
        pj = fastjet.PseudoJet(*momentum)
        pj.set_user_index(i)
        pseudojets.append(pj)
    sequence = fastjet.ClusterSequence(pseudojets, fastjet.JetDefinition(fastjet.antikt_algorithm, 0.4))
    raw = fastjet.sorted_by_pt(sequence.inclusive_jets(0.5 * det.jet_pt_min))
    four = np.array([[j.px(), j.py(), j.pz(), j.e()] for j in raw]).reshape(-1, 4)
    pt, eta, _ = pt_eta_phi(four)
    edges = np.array([b[0] for b in det.hcal_resolution])
    params = np.array([b[1:] for b in det.hcal_resolution])[np.minimum(np.searchsorted(edges, np.abs(eta)), len(edges) - 1)]
    sigma = calorimeter_sigma(four[:, 3], *params.T) / np.maximum(four[:, 3], 1e-9)
    four = four * np.maximum(1 + sigma * rng.standard_normal(len(four)), 0.0)[:, None]
    pt, eta, phi = pt_eta_phi(four)
    keep = (pt > det.jet_pt_min) & (np.abs(eta) < det.jet_eta_max)
    order = np.argsort(-pt[keep], kind="stable")
    constituents = [c.user_index() for j, k in zip(raw, keep) if k for c in j.constituents()]
    jets = dict(pt=pt[keep][order], eta=eta[keep][order], phi=phi[keep][order], mass=mass(four[keep])[order])
    return jets, np.array(constituents, dtype=np.int64)


def _jet_flavour(jets: dict, truth: TruthEvent) -> np.ndarray:
    """5 if a B hadron (pT > 5 GeV) is within ΔR < 0.4, else 4 for a C hadron, else 0 (hadronFlavour)."""
    flavour = np.zeros(len(jets["pt"]), np.int32)
    for code, hadrons in ((4, truth.c_hadrons), (5, truth.b_hadrons)):  # b overrides c
        if len(hadrons) == 0 or len(flavour) == 0:
            continue
        h_pt, h_eta, h_phi = pt_eta_phi(hadrons)
        hard = h_pt > 5.0
        matched = (delta_r(jets["eta"], jets["phi"], h_eta[hard], h_phi[hard]) < 0.4).any(1)
        flavour[matched] = code
    return flavour


def _tau_tag(jets: dict, truth: TruthEvent, det: DetectorResponse, rng) -> tuple[dict, dict]:
    """Jets matched (ΔR < 0.4) to a visible hadronic tau become taus with the tagging efficiency; others mistag."""
    n = len(jets["pt"])
    matched_tau = np.full(n, -1)
    if len(truth.taus) and n:
        t_pt, t_eta, t_phi = pt_eta_phi(truth.taus)
        dr = delta_r(jets["eta"], jets["phi"], t_eta, t_phi)
        close = dr.min(1) < 0.4
        matched_tau[close] = dr.argmin(1)[close]
    rate = np.where(matched_tau >= 0, det.tau_efficiency, det.tau_mistag)
    tagged = (np.abs(jets["eta"]) < det.tau_eta_max) & (rng.random(n) < rate)
    random_charge = rng.choice(np.array([-1, 1], np.int32), n)
    charge = np.where(matched_tau >= 0, truth.tau_charges[np.maximum(matched_tau, 0)] if len(truth.taus) else 0, random_charge)
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


def _missing_et(unclustered: np.ndarray, collections: list[dict], det: DetectorResponse, rng) -> tuple[float, float]:
    """MET = -(sum of reconstructed objects + smeared unclustered energy)."""
    sum_x = sum(float((o["pt"] * np.cos(o["phi"])).sum()) for o in collections)
    sum_y = sum(float((o["pt"] * np.sin(o["phi"])).sum()) for o in collections)
    u_x, u_y = float(unclustered[:, 0].sum()), float(unclustered[:, 1].sum())
    sigma = det.unclustered_resolution * np.sqrt(float(np.hypot(unclustered[:, 0], unclustered[:, 1]).sum()))
    noise_x, noise_y = sigma * rng.standard_normal(2)
    return -(sum_x + u_x + noise_x), -(sum_y + u_y + noise_y)
