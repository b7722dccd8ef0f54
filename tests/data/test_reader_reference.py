"""The vectorised reader gives the same bytes as the awkward-record reader it replaced, on every sample.

reference_reader.process_chunk is the old per-chunk code; each case reads a file once with the reader as
it is and once with the old chunk processing in its place, and requires identical features (compared as
bits, so -0.0 and NaN payloads count), types, mask and statistics.
"""

from __future__ import annotations

import warnings

import awkward as ak
import numpy as np
import reference_reader
import yaml
from root_samples import (atlas_mini_branches, physlite_fields, physlite_met_truth_sample,
                          random_nanoaod_branches, write_rntuple, write_ttree)

from crossfed.data import reader
from crossfed.data.reader import read_events
from crossfed.data.schema import SCHEMA_DIR

EVERY_VARIABLE = ("n_electrons + n_muons + n_taus + n_photons >= 1 and n_leptons >= 1 and n_jets >= 2 "
                  "and n_bjets >= 0 and met >= 0 and ht > 30 and lead_lepton_pt > 12 and lead_jet_pt > 25")


def assert_same_as_reference(monkeypatch, files, schema, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch, stats = read_events([str(f) for f in files], str(schema), **options)
        with monkeypatch.context() as patch:
            patch.setattr(reader, "_process_chunk", reference_reader.process_chunk_into)
            expected, expected_stats = read_events([str(f) for f in files], str(schema), **options)
    assert len(batch) == len(expected) and batch.features.shape == expected.features.shape
    assert np.array_equal(batch.features.view(np.uint32), expected.features.view(np.uint32))
    assert np.array_equal(batch.types, expected.types) and batch.types.dtype == expected.types.dtype
    assert np.array_equal(batch.mask, expected.mask)
    assert stats.to_dict() == expected_stats.to_dict()
    return batch, stats


def _schema_variant(tmp_path, name: str, edit) -> str:
    schema = yaml.safe_load((SCHEMA_DIR / f"{name}.yaml").read_text())
    edit(schema)
    path = tmp_path / f"{name}_variant.yaml"
    path.write_text(yaml.safe_dump(schema))
    return str(path)


def test_hand_made_fixtures(monkeypatch, nanoaod_file, atlas_mini_file, physlite_rntuple_file):
    for max_objects in (3, 8):  # truncating, and padding every event
        for selection in (None, "n_jets >= 1"):
            assert_same_as_reference(monkeypatch, [nanoaod_file], "cms_nanoaod", max_objects=max_objects,
                                     selection=selection)
        assert_same_as_reference(monkeypatch, [atlas_mini_file], "atlas_opendata", max_objects=max_objects)
        assert_same_as_reference(monkeypatch, [physlite_rntuple_file], "atlas_physlite", max_objects=max_objects)


def test_generated_samples(monkeypatch, samples):
    for detector, schema in (("cms", "cms_nanoaod"), ("atlas", "atlas_opendata")):
        files = list(samples[detector].values())
        for selection, max_objects in ((None, 16), (EVERY_VARIABLE, 6)):
            batch, _ = assert_same_as_reference(monkeypatch, files, schema, selection=selection,
                                                max_objects=max_objects, chunk_size=160)  # two chunks per file
            assert len(batch) > 100


def test_random_nanoaod_with_non_finite_values_in_many_chunks(monkeypatch, tmp_path):
    branches = random_nanoaod_branches(2000, seed=5)
    pt = ak.to_numpy(ak.flatten(branches["Jet"].pt)).copy()
    pt[::97] = np.nan
    pt[5::211] = np.inf
    branches["Jet"] = ak.with_field(branches["Jet"], ak.unflatten(pt, ak.num(branches["Jet"])), "pt")
    met = branches["MET_pt"].copy()
    met[::301] = np.nan
    branches["MET_pt"] = met
    path = write_ttree(tmp_path / "random.root", "Events", branches)
    for selection, max_objects in ((None, 5), (EVERY_VARIABLE, 16)):
        batch, stats = assert_same_as_reference(monkeypatch, [path], "cms_nanoaod", selection=selection,
                                                max_objects=max_objects, chunk_size=700)
        assert len(batch) > 300 and stats.events_dropped > 50


def test_btag_fallback_clipping_and_tight_definitions(monkeypatch, tmp_path):
    branches = random_nanoaod_branches(1500, seed=9)
    jets = branches["Jet"]
    csv = ak.to_numpy(ak.flatten(jets.btagDeepFlavB)).copy() * 1.2 - 0.1  # some below 0 and above 1: clipped
    jets = ak.with_field(jets, ak.unflatten(csv.astype(np.float32), ak.num(jets)), "btagCSVV2")
    branches["Jet"] = ak.with_field(jets, jets.btagDeepFlavB * 0 - 3000, "btagDeepFlavB")  # the 2015 placeholder
    path = write_ttree(tmp_path / "fallback.root", "Events", branches)
    assert_same_as_reference(monkeypatch, [path], "cms_nanoaod", selection="n_bjets >= 1", max_objects=10)

    def tight(schema):
        schema["collections"]["electrons"]["exclude_abs_eta"] = [1.44, 1.57]
        schema["collections"]["muons"]["isolation"] = [{"branch": "Muon_pfRelIso04_all", "max": 0.1}]
        schema["collections"]["jets"]["min_pt"] = 30
        schema["overlap_removal"].append({"remove": "electrons", "near": "jets", "dr": 0.4})
    assert_same_as_reference(monkeypatch, [path], _schema_variant(tmp_path, "cms_nanoaod", tight), max_objects=12)


def test_atlas_mini_relative_isolation_and_physlite_met_rebuild(monkeypatch, tmp_path):
    def relative_isolation(schema):
        schema["collections"]["muons"]["isolation"] = [{"branch": "lep_ptcone30", "max": 0.15, "relative": True}]
    branches = atlas_mini_branches()
    branches["lep"] = ak.with_field(branches["lep"], ak.Array([[1000.0, 6000.0], [], [1000.0, 12000.0]]), "ptcone30")
    path = write_ttree(tmp_path / "mini_iso.root", "mini", branches)
    assert_same_as_reference(monkeypatch, [path], _schema_variant(tmp_path, "atlas_opendata", relative_isolation),
                             max_objects=8)

    fields, _ = physlite_met_truth_sample(600)
    path = write_rntuple(tmp_path / "physlite_truth.root", "EventData", fields)
    for max_objects in (6, 40):
        assert_same_as_reference(monkeypatch, [path], "atlas_physlite", max_objects=max_objects, chunk_size=250,
                                 selection="met > 10 or n_leptons >= 2")

    tree_fields = physlite_fields(term_names=False)  # the TTree layout, MET soft term as flat branches
    for axis in ("x", "y"):
        tree_fields[f"soft_mp{axis}"] = ak.to_numpy(tree_fields.pop(f"MET_Core_AnalysisMETAuxDyn.mp{axis}")[:, 1])
    path = write_ttree(tmp_path / "physlite.root", "CollectionTree", tree_fields)

    def flat_met(schema):
        schema["met"] = {"px": "soft_mpx", "py": "soft_mpy", "rebuild": True}
    assert_same_as_reference(monkeypatch, [path], _schema_variant(tmp_path, "atlas_physlite", flat_met), max_objects=8)


def test_cartesian_kinematics_and_a_schema_without_met(monkeypatch, tmp_path):
    rng = np.random.default_rng(3)
    counts = rng.poisson(3, 500)
    px, py, pz = (rng.normal(0, 40, counts.sum()).astype(np.float32) for _ in range(3))
    energy = np.sqrt(px.astype(np.float64) ** 2 + py**2 + pz**2 + 25.0).astype(np.float32)
    jets = ak.zip({name: ak.unflatten(values, counts) for name, values in
                   (("px", px), ("py", py), ("pz", pz), ("E", energy))})
    path = write_ttree(tmp_path / "cartesian.root", "t", {"jet": jets})
    schema = tmp_path / "cartesian.yaml"
    schema.write_text(yaml.safe_dump({"tree": "t", "units": "MeV", "collections": {"jets": {
        "px": "jet_px", "py": "jet_py", "pz": "jet_pz", "energy": "jet_E", "min_pt": 0.01}}}))
    assert_same_as_reference(monkeypatch, [path], schema, max_objects=4)
    assert_same_as_reference(monkeypatch, [path], schema, max_objects=4, selection="ht > 0.05")
