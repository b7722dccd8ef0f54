"""The physics of reading: b-tag fallback, MET as each format stores it, object definitions, overlap removal.

Every case is a real ROOT file written with uproot that reproduces what real open data does.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import yaml
from root_samples import (atlas_mini_branches, nanoaod_branches, physlite_fields, physlite_met_truth_sample, write_rntuple,
                          write_ttree)

from crossfed.data.events import BTAG, PHI, PT, ObjectType as T
from crossfed.data.reader import read_events
from crossfed.data.schema import SCHEMA_DIR
from crossfed.errors import CrossfedError


def _with_jet_fields(**fields) -> dict:
    branches = nanoaod_branches()
    for name, values in fields.items():
        branches["Jet"] = ak.with_field(branches["Jet"], ak.values_astype(ak.Array(values), np.float32), name)
    return branches


# --- b-tagging -------------------------------------------------------------------------------------------

def test_placeholder_btag_falls_back_to_the_next_candidate_and_says_so(tmp_path):
    # The 2015 CMS open-data NanoAOD: DeepFlavB is -3000 for every jet; here DeepCSV is constant too, CSVv2 filled.
    path = write_ttree(tmp_path / "nano2015.root", "Events", _with_jet_fields(
        btagDeepFlavB=[[-3000.0] * 3, [-3000.0], []], btagDeepB=[[0.5] * 3, [0.5], []],
        btagCSVV2=[[0.95, 0.3, -10.0], [0.85], []]))
    with pytest.warns(RuntimeWarning) as caught:
        batch, stats = read_events([str(path)], "cms_nanoaod", selection="n_bjets >= 1", max_objects=8)
    assert stats.btag == {"Jet_btagCSVV2 > 0.8": 3}
    assert stats.btag_rejected == {"Jet_btagDeepFlavB has no value inside its range [0, 1] (all -3000)": 1,
                                   "Jet_btagDeepB is constant (0.5)": 1}
    messages = [str(w.message) for w in caught if "b-tag" in str(w.message)]
    assert len(messages) == 1 and "used Jet_btagCSVV2 > 0.8" in messages[0]
    # event 0: jets by pT are 100 (CSVv2 0.3), 50 (0.95: b), 22 (-10, outside [0, 1]: clipped to 0); event 1: 0.85
    assert len(batch) == 2 and stats.events_selected == 2
    assert batch.types[0, 3:6].tolist() == [T.JET, T.BJET, T.JET]
    np.testing.assert_allclose(batch.features[0, 3:6, BTAG], [0.3, 0.95, 0.0], rtol=1e-6)
    assert batch.types[1, 1] == T.BJET


def test_a_candidate_the_file_lacks_is_skipped_silently_and_none_at_all_is_an_error(tmp_path):
    branches = _with_jet_fields(btagCSVV2=[[0.95, 0.3, 0.9], [0.1], []])
    branches["Jet"] = ak.without_field(branches["Jet"], "btagDeepFlavB")
    path = write_ttree(tmp_path / "csv_only.root", "Events", branches)
    _, stats = read_events([str(path)], "cms_nanoaod")
    assert stats.btag == {"Jet_btagCSVV2 > 0.8": 3} and not stats.btag_rejected
    branches["Jet"] = ak.without_field(branches["Jet"], "btagCSVV2")
    path = write_ttree(tmp_path / "no_btag.root", "Events", branches)
    with pytest.raises(CrossfedError, match=r"no branch 'Jet_btagDeepFlavB' \(schema key collections.jets.btag\); "
                                            r"nor the other candidates Jet_btagDeepB, Jet_btagCSVV2"):
        read_events([str(path)], "cms_nanoaod")


def test_no_usable_btag_tags_nothing_and_an_empty_bjet_selection_says_why(tmp_path):
    path = write_ttree(tmp_path / "placeholders.root", "Events", _with_jet_fields(
        btagDeepFlavB=[[-3000.0] * 3, [-3000.0], []], btagDeepB=[[-1.0] * 3, [-1.0], []],
        btagCSVV2=[[-10.0] * 3, [-10.0], []]))
    with pytest.warns(RuntimeWarning, match=r"used no discriminant \(jets not b-tagged\)"):
        batch, stats = read_events([str(path)], "cms_nanoaod")
    assert not (batch.types == T.BJET).any() and not batch.features[..., BTAG].any()
    with pytest.raises(CrossfedError, match=r"keeps none of the 3 events .*\(no usable b-tag discriminant"), \
            pytest.warns(RuntimeWarning, match="b-tag"):
        read_events([str(path)], "cms_nanoaod", selection="n_bjets >= 1")


# --- MET -------------------------------------------------------------------------------------------------

def test_physlite_met_is_rebuilt_from_objects_and_the_track_soft_term_as_generated(tmp_path):
    fields, truth = physlite_met_truth_sample(400)
    path = write_rntuple(tmp_path / "physlite_truth.root", "EventData", fields)
    batch, stats = read_events([str(path)], "atlas_physlite", max_objects=40)
    assert len(batch) == 400 and (batch.types[:, 0] == T.MET).all()
    met_pt, met_phi = batch.features[:, 0, PT].astype(np.float64), batch.features[:, 0, PHI].astype(np.float64)
    rebuilt_x, rebuilt_y = met_pt * np.cos(met_phi), met_pt * np.sin(met_phi)
    # exactly the generated MET, up to the neutral soft particles no track soft term can see
    np.testing.assert_allclose(rebuilt_x - truth["met_x"], truth["neutral_x"], atol=0.02)
    np.testing.assert_allclose(rebuilt_y - truth["met_y"], truth["neutral_y"], atol=0.02)
    # electrons that fail LHLoose or sit in the crack were dropped and their jets kept; the others removed their jets
    assert stats.objects["electrons"]["id"] < stats.objects["electrons"]["kinematics"] < stats.objects["electrons"]["read"]
    assert stats.objects["jets"]["overlap"] == stats.objects["jets"]["read"] - stats.objects["electrons"]["overlap"]
    true_met = np.hypot(truth["met_x"], truth["met_y"])
    assert abs(np.median(met_pt) / np.median(true_met) - 1) < 0.05
    # what the old reading did, the sum of both soft terms, is nothing like MET
    terms_x = ak.to_numpy(ak.sum(fields["MET_Core_AnalysisMETAuxDyn:mpx"], axis=1)) / 1000.0
    terms_y = ak.to_numpy(ak.sum(fields["MET_Core_AnalysisMETAuxDyn:mpy"], axis=1)) / 1000.0
    assert np.median(np.hypot(terms_x, terms_y)) < 0.3 * np.median(true_met)


def test_a_final_met_container_is_read_where_the_file_has_one(tmp_path):
    fields = physlite_fields(separator=":")
    # a DAOD_PHYS-style MET_Reference container: object terms, then the final sums; FinalTrk is the MET
    names = ["RefEle", "RefJet", "Muons", "PVSoftTrk", "FinalClus", "FinalTrk"]
    final_x, final_y = [np.array([10.0, 20.0, 30.0]) * 1000.0, np.array([0.0, -20.0, 40.0]) * 1000.0]
    fields["MET_Reference_AntiKt4EMPFlowAuxDyn:name"] = ak.Array([names] * 3)
    fields["MET_Reference_AntiKt4EMPFlowAuxDyn:mpx"] = ak.Array([[1e5] * 4 + [-9e5, x] for x in final_x])
    fields["MET_Reference_AntiKt4EMPFlowAuxDyn:mpy"] = ak.Array([[1e5] * 4 + [-9e5, y] for y in final_y])
    path = write_rntuple(tmp_path / "with_final_met.root", "EventData", fields)
    batch, stats = read_events([str(path)], "atlas_physlite")
    np.testing.assert_allclose(batch.features[:, 0, PT], np.hypot(final_x, final_y) / 1000.0, rtol=1e-6)
    assert stats.met == {"FinalTrk of MET_Reference_AntiKt4EMPFlowAuxDyn.mpx/mpy": 3}


def _physlite_schema_with_met(tmp_path, met: dict):
    schema = yaml.safe_load((SCHEMA_DIR / "atlas_physlite.yaml").read_text())
    schema["met"] = met
    path = tmp_path / "physlite_variant.yaml"
    path.write_text(yaml.safe_dump(schema))
    return str(path)


def test_soft_term_containers_are_never_summed_and_a_missing_term_is_named(tmp_path, physlite_rntuple_file):
    summed = _physlite_schema_with_met(tmp_path, {"px": "MET_Core_AnalysisMETAuxDyn.mpx",
                                                  "py": "MET_Core_AnalysisMETAuxDyn.mpy"})
    with pytest.raises(CrossfedError, match=r"MET branch 'MET_Core_AnalysisMETAuxDyn:mpx' holds a list of terms per "
                                            r"event: name the one to read with met.term and met.term_names"):
        read_events([str(physlite_rntuple_file)], summed)
    wrong_term = _physlite_schema_with_met(tmp_path, {
        "px": "MET_Core_AnalysisMETAuxDyn.mpx", "py": "MET_Core_AnalysisMETAuxDyn.mpy",
        "term_names": "MET_Core_AnalysisMETAuxDyn.name", "term": "PVSoftTrk", "rebuild": True})
    with pytest.raises(CrossfedError, match=r"physlite_rntuple.root: MET term 'PVSoftTrk' is missing \(or repeated\) "
                                            r"in 3 of 3 events .*terms seen: PVSoftTrkCore, SoftClusCore"):
        read_events([str(physlite_rntuple_file)], wrong_term)


# --- object definitions and overlap removal --------------------------------------------------------------

def test_object_definitions_and_overlap_removal_on_nanoaod(tmp_path):
    branches = nanoaod_branches()
    # event 0: a second electron that fails the cut-based ID (1 = veto), sitting on the 50 GeV jet;
    #          the real electron gets a jet on top of it (ΔR 0.05), which overlap removal must drop;
    #          a non-isolated muon (pfRelIso04_all 0.6) and a 15 GeV jet below threshold
    electron = {"pt": [[40.0, 30.0], [], []], "eta": [[-1.2, 0.12], [], []], "phi": [[0.3, -1.0], [], []],
                "mass": [[0.0, 0.0], [], []], "charge": [[1, -1], [], []], "cutBased": [[4, 1], [], []]}
    muon = {"pt": [[30.0, 25.0], [], [20.0, 60.0]], "eta": [[0.5, -2.0], [], [2.0, -0.1]],
            "phi": [[1.0, -2.5], [], [3.0, -3.0]], "mass": [[0.1] * 2, [], [0.1] * 2],
            "charge": [[-1, 1], [], [1, -1]], "pfRelIso04_all": [[0.05, 0.6], [], [0.1, 0.02]],
            "looseId": [[True, True], [], [True, True]]}
    jet = {"pt": [[50.0, 100.0, 22.0, 38.0, 15.0], [25.0], []], "eta": [[0.1, -0.2, 1.5, -1.25, 0.0], [2.2], []],
           "phi": [[-1.0, 2.5, 0.0, 0.28, -2.0], [1.0], []], "mass": [[8.0, 12.0, 4.0, 1.0, 1.0], [5.0], []],
           "btagDeepFlavB": [[0.9, 0.1, 0.5, 0.1, 0.1], [0.05], []], "jetId": [[6] * 5, [6], []]}
    types = {"charge": np.int32, "cutBased": np.int32, "jetId": np.int32, "looseId": np.bool_}
    for name, values in (("Electron", electron), ("Muon", muon), ("Jet", jet)):
        branches[name] = ak.zip({k: ak.values_astype(ak.Array(v), types.get(k, np.float32)) for k, v in values.items()})
    path = write_ttree(tmp_path / "overlaps.root", "Events", branches)
    batch, stats = read_events([str(path)], "cms_nanoaod", max_objects=8)
    # the same analysis-level event 0 as the plain sample: MET, e 40, μ 30, jets 100, 50 (b), 22 (b)
    assert batch.types[0, :6].tolist() == [T.MET, T.ELECTRON, T.MUON, T.JET, T.BJET, T.BJET]
    np.testing.assert_allclose(batch.features[0, :6, PT], [35.0, 40.0, 30.0, 100.0, 50.0, 22.0], rtol=1e-6)
    assert not batch.mask[0, 6:].any()
    assert stats.objects["electrons"] == {"read": 2, "kinematics": 2, "id": 1, "isolation": 1, "overlap": 1}
    assert stats.objects["muons"] == {"read": 4, "kinematics": 4, "id": 4, "isolation": 3, "overlap": 3}
    assert stats.objects["jets"] == {"read": 6, "kinematics": 5, "id": 5, "isolation": 5, "overlap": 4}


def test_optional_cuts_on_missing_branches_are_skipped_and_reported_required_ones_fail(tmp_path):
    branches = nanoaod_branches()
    branches["Electron"] = ak.without_field(branches["Electron"], "cutBased")
    branches["Jet"] = ak.without_field(branches["Jet"], "jetId")
    path = write_ttree(tmp_path / "no_ids.root", "Events", branches)
    with pytest.warns(RuntimeWarning, match=r"object definition cuts not applied, their branches are missing in "
                                            r".*no_ids.root: electrons id Electron_cutBased >= 2; jets id Jet_jetId >= 1"):
        batch, stats = read_events([str(path)], "cms_nanoaod")
    assert stats.skipped_cuts == ["electrons id Electron_cutBased >= 2", "jets id Jet_jetId >= 1"]
    assert ((batch.types == T.ELECTRON) & batch.mask).sum() == 1
    branches["Muon"] = ak.without_field(branches["Muon"], "pfRelIso04_all")
    path = write_ttree(tmp_path / "no_iso.root", "Events", branches)
    with pytest.raises(CrossfedError, match=r"no branch 'Muon_pfRelIso04_all' \(schema key collections.muons.isolation\)"):
        read_events([str(path)], "cms_nanoaod")


def test_relative_isolation_and_crack_veto_in_a_custom_schema(tmp_path):
    # ATLAS-mini style: lep_ptcone30 is an absolute cone sum in MeV, cut on ptcone30 / pT < 0.15
    schema = yaml.safe_load((SCHEMA_DIR / "atlas_opendata.yaml").read_text())
    schema["collections"]["muons"]["isolation"] = [{"branch": "lep_ptcone30", "max": 0.15, "relative": True}]
    (tmp_path / "tight.yaml").write_text(yaml.safe_dump(schema))
    branches = atlas_mini_branches()
    # leptons per event: e 40 then μ 30 | - | μ 20, μ 60 ; cone sums 1, 6 GeV | - | 1, 12 GeV -> μ 30 and μ 60 fail
    branches["lep"] = ak.with_field(branches["lep"], ak.Array([[1000.0, 6000.0], [], [1000.0, 12000.0]]), "ptcone30")
    branches["lep"] = ak.with_field(branches["lep"], ak.Array([[1.45, 0.5], [], [2.0, -0.1]]), "eta")  # e in crack
    path = write_ttree(tmp_path / "mini_iso.root", "mini", branches)
    batch, stats = read_events([str(path)], str(tmp_path / "tight.yaml"), max_objects=8)
    assert stats.objects["muons"] == {"read": 3, "kinematics": 3, "id": 3, "isolation": 1, "overlap": 1}
    assert stats.objects["electrons"]["kinematics"] == 0
    assert (batch.types == T.MUON).sum() == 1 and batch.features[2, 1, PT] == pytest.approx(20.0)


def test_a_selection_emptied_by_the_definitions_says_which_collection(tmp_path):
    branches = nanoaod_branches()
    branches["Electron"] = ak.with_field(branches["Electron"], ak.Array([[1], [], []]), "cutBased")  # veto only
    path = write_ttree(tmp_path / "veto_electrons.root", "Events", branches)
    with pytest.raises(CrossfedError, match=r"keeps none of the 3 events .*\(the object definitions kept none of "
                                            r"the 1 electrons\)"):
        read_events([str(path)], "cms_nanoaod", selection="n_electrons >= 1")
