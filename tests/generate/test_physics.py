"""Physics sanity of the generated samples (the shared `samples` fixture: 300 ttbar / ttH events per detector)."""

import awkward as ak
import numpy as np
import pytest
import uproot

from crossfed.generate import ATLAS, CMS, read_metadata


def _cms(path):
    return uproot.open(path)["Events"].arrays()


def _atlas(path):
    return uproot.open(path)["mini"].arrays()


def _best_w_mass(pt, eta, phi, mass, tagged):
    """Per event: the invariant mass of the untagged jet pair closest to 80 GeV (NaN without two untagged jets)."""
    best = []
    for p, e, f, m, t in zip(pt, eta, phi, mass, tagged):
        keep = ~np.asarray(t)
        p, e, f, m = (np.asarray(x)[keep] for x in (p, e, f, m))
        px, py, pz = p * np.cos(f), p * np.sin(f), p * np.sinh(e)
        energy = np.sqrt(px**2 + py**2 + pz**2 + m**2)
        masses = [
            np.sqrt(max((energy[i] + energy[j]) ** 2 - (px[i] + px[j]) ** 2 - (py[i] + py[j]) ** 2 - (pz[i] + pz[j]) ** 2, 0))
            for i in range(len(p)) for j in range(i + 1, len(p))
        ]
        best.append(min(masses, key=lambda x: abs(x - 80.0)) if masses else np.nan)
    return np.array(best)


def test_ttbar_has_many_jets_and_a_w_peak(samples):
    events = _cms(samples["cms"]["ttbar"])
    assert len(events) == 300
    assert ak.mean(events.nJet) >= 4.0
    tagged = events.Jet_btagDeepFlavB > CMS.btag_working_point
    w_mass = _best_w_mass(events.Jet_pt, events.Jet_eta, events.Jet_phi, events.Jet_mass, tagged)
    w_mass = w_mass[np.isfinite(w_mass)]
    assert len(w_mass) > 200
    assert 60.0 < np.median(w_mass) < 100.0
    # the mode: the most populated 10 GeV bin lies around the W mass
    counts, edges = np.histogram(w_mass, bins=np.arange(0, 300, 10))
    assert 60.0 <= edges[np.argmax(counts)] < 100.0


def test_btagged_jets_are_mostly_b_jets(samples):
    for path, tree, tag, flavour, wp in (
        (samples["cms"]["ttbar"], "Events", "Jet_btagDeepFlavB", "Jet_hadronFlavour", CMS.btag_working_point),
        (samples["atlas"]["ttbar"], "mini", "jet_MV2c10", "jet_trueflav", ATLAS.btag_working_point),
    ):
        jets = uproot.open(path)[tree].arrays([tag, flavour])
        tag_values, flavours = ak.flatten(jets[tag]).to_numpy(), ak.flatten(jets[flavour]).to_numpy()
        tagged = tag_values > wp
        assert (flavours[tagged] == 5).mean() > 0.7, path
        # the working point reproduces the detector's efficiency: most b jets tagged, few light jets
        assert 0.4 < tagged[flavours == 5].mean() < 0.9
        assert tagged[flavours == 0].mean() < 0.05


def test_discriminant_ranges_and_units_differ_per_experiment(samples):
    cms, atlas = _cms(samples["cms"]["ttbar"]), _atlas(samples["atlas"]["ttbar"])
    deepflav, mv2 = ak.flatten(cms.Jet_btagDeepFlavB), ak.flatten(atlas.jet_MV2c10)
    assert ak.min(deepflav) >= 0 and ak.max(deepflav) <= 1
    assert ak.min(mv2) >= -1 and ak.max(mv2) <= 1 and ak.min(mv2) < 0
    # ATLAS ntuple in MeV, NanoAOD in GeV: the same physics differs by 1000 in scale
    assert 20_000 < np.median(ak.flatten(atlas.jet_pt)) < 200_000
    assert 20 < np.median(ak.flatten(cms.Jet_pt)) < 200
    assert ak.min(ak.flatten(atlas.jet_pt)) >= 20_000
    assert 10_000 < np.median(atlas.met_et) < 200_000
    assert set(ak.flatten(atlas.lep_type).to_numpy()) <= {11, 13}
    # acceptances: CMS muons |eta| < 2.4, ATLAS electrons |eta| < 2.47
    assert ak.max(abs(ak.flatten(cms.Muon_eta))) < 2.4
    assert ak.max(abs(ak.flatten(atlas.lep_eta[atlas.lep_type == 11]))) < 2.47
    # the preselection: >= 1 lepton, >= 2 jets, >= 1 b-tagged jet
    assert ak.all(atlas.lep_n >= 1) and ak.all(atlas.jet_n >= 2)
    assert ak.all(ak.any(atlas.jet_MV2c10 > ATLAS.btag_working_point, axis=1))


def test_tth_has_more_b_jets_than_ttbar(samples):
    for detector, read, tag, wp in (("cms", _cms, "Jet_btagDeepFlavB", CMS.btag_working_point),
                                    ("atlas", _atlas, "jet_MV2c10", ATLAS.btag_working_point)):
        n_b = {p: ak.mean(ak.sum(read(samples[detector][p])[tag] > wp, axis=1)) for p in ("ttbar", "tth")}
        assert n_b["tth"] > n_b["ttbar"] + 0.3, (detector, n_b)


def test_metadata_round_trip(samples):
    meta = read_metadata(samples["atlas"]["tth"])
    assert meta["process"] == "tth" and meta["detector"] == "atlas" and meta["seed"] == 22
    assert meta["n_events"] == 300 and meta["n_generated"] > 300
    assert 0 < meta["efficiency"] < 1
    assert "25:onIfMatch = 5 -5" in meta["pythia_settings"]
    assert 0.1 < meta["inclusive_cross_section_pb"] < 5
    assert 0 < meta["cross_section_error_pb"] < meta["cross_section_pb"]
    # Forced decays: the file holds sigma x BR, BR = the share of W-decay chains kept. With Pythia's W and tau
    # branching ratios that is 1 - (1 - 0.2162)^2 + 2 * 0.1081 * 0.6757 * 0.3504 + 0.1081^2 = 0.4486.
    assert meta["forced_decays"]
    assert abs(meta["decay_filter_efficiency"] - 0.4486) < 4 * meta["decay_filter_efficiency_error"]
    assert meta["cross_section_pb"] == pytest.approx(meta["inclusive_cross_section_pb"] * meta["decay_filter_efficiency"])
    assert meta["generator"].startswith("pythia8mc") and meta["crossfed"]
    assert uproot.open(samples["atlas"]["tth"])["mini"].num_entries == meta["n_events"]
