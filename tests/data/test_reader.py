"""Reading real ROOT files written by uproot: values in GeV, object order, padding, b-tag typing."""

from __future__ import annotations

import warnings

import awkward as ak
import numpy as np
import pytest
import yaml
from root_samples import (EVENTS, energy, nanoaod_branches, physlite_fields, random_nanoaod_branches,
                          write_rntuple, write_ttree)

from crossfed.data.events import CHARGE, ENERGY, ETA, PHI, PT, BTAG, ObjectType as T
from crossfed.data.reader import read_events
from crossfed.data.schema import SCHEMA_DIR
from crossfed.errors import CrossfedError

# Event 0 in the common order: MET, electron 40, muon 30, then jets by pT (100 light, 50 b, 22 b in CMS).
EVENT0_PT = [35.0, 40.0, 30.0, 100.0, 50.0, 22.0]
EVENT0_ETA = [0.0, -1.2, 0.5, -0.2, 0.1, 1.5]


def test_nanoaod_values_order_padding_and_btag(nanoaod_file):
    batch, stats = read_events([str(nanoaod_file)], "cms_nanoaod", max_objects=8)
    assert (stats.events_read, stats.events_selected, stats.events_dropped) == (3, 3, 0)
    assert batch.features.dtype == np.float32 and batch.features.shape == (3, 8, 6)
    f, t, m = batch.features, batch.types, batch.mask
    assert m[0].tolist() == [True] * 6 + [False] * 2
    assert t[0, :6].tolist() == [T.MET, T.ELECTRON, T.MUON, T.JET, T.BJET, T.BJET]  # wp 0.2783
    np.testing.assert_allclose(f[0, :6, PT], EVENT0_PT, rtol=1e-6)
    np.testing.assert_allclose(f[0, :6, ETA], EVENT0_ETA, rtol=1e-6)
    np.testing.assert_allclose(f[0, :6, CHARGE], [0, 1, -1, 0, 0, 0])
    np.testing.assert_allclose(f[0, 3:6, BTAG], [0.1, 0.9, 0.5], rtol=1e-6)
    np.testing.assert_allclose(f[0, 3, ENERGY], energy(100.0, -0.2, 12.0), rtol=1e-5)
    # MET: eta 0, energy = pt, phi kept
    assert f[0, 0, ETA] == 0 and f[0, 0, ENERGY] == f[0, 0, PT] and f[0, 0, PHI] == pytest.approx(-2.0)
    # padding is all zeros with type 0
    assert not f[0, 6:].any() and not t[0, 6:].any()
    # event 2: MET, muons by pT (60 then 20), tau, photon; no jets
    assert t[2, :5].tolist() == [T.MET, T.MUON, T.MUON, T.TAU, T.PHOTON]
    np.testing.assert_allclose(f[2, 1:3, PT], [60.0, 20.0])


def test_atlas_mini_in_mev_gives_the_same_physics_in_gev(nanoaod_file, atlas_mini_file):
    cms, _ = read_events([str(nanoaod_file)], "cms_nanoaod", max_objects=8)
    atlas, _ = read_events([str(atlas_mini_file)], "atlas_opendata", max_objects=8)
    np.testing.assert_array_equal(atlas.mask, cms.mask)
    for column in (PT, ETA, PHI, ENERGY, CHARGE):  # btag differs by design: each experiment's own tagger
        np.testing.assert_allclose(atlas.features[..., column], cms.features[..., column], rtol=1e-5, atol=1e-5)
    # lep_type split: electron then muon; MV2c10 0.95 > 0.8244 on the 50 GeV jet only, 0.9 on event 1's jet
    assert atlas.types[0, :6].tolist() == [T.MET, T.ELECTRON, T.MUON, T.JET, T.BJET, T.JET]
    assert atlas.types[1, :2].tolist() == [T.MET, T.BJET]


def test_physlite_ttree_and_rntuple(tmp_path, physlite_rntuple_file):
    from_rntuple, stats = read_events([str(physlite_rntuple_file)], "atlas_physlite", max_objects=8)
    np.testing.assert_allclose(from_rntuple.features[0, :6, PT], EVENT0_PT, rtol=1e-5)
    # MET rebuilt from the objects and the track soft term PVSoftTrkCore gives the event's MET back
    np.testing.assert_allclose(from_rntuple.features[:, 0, PT], EVENTS["met"]["pt"], rtol=1e-5)
    np.testing.assert_allclose(from_rntuple.features[:, 0, PHI], EVENTS["met"]["phi"], rtol=1e-5)
    assert stats.met == {"rebuilt: −Σ selected objects + PVSoftTrkCore of MET_Core_AnalysisMETAuxDyn.mpx/mpy": 3}
    # muon mass is the schema's constant 105.658 MeV
    np.testing.assert_allclose(from_rntuple.features[0, 2, ENERGY], energy(30.0, 0.5, 0.105658), rtol=1e-5)
    assert set(from_rntuple.types[from_rntuple.mask].tolist()) == {T.MET, T.ELECTRON, T.MUON, T.JET}
    # The TTree layout (CollectionTree) gives the same events. uproot cannot write the string lists naming
    # the MET terms into a TTree, so this copy carries the track soft term as flat branches.
    fields = physlite_fields(term_names=False)
    for axis in ("x", "y"):
        fields[f"soft_mp{axis}"] = ak.to_numpy(fields.pop(f"MET_Core_AnalysisMETAuxDyn.mp{axis}")[:, 1])
    tree_file = write_ttree(tmp_path / "physlite.root", "CollectionTree", fields)
    schema = yaml.safe_load((SCHEMA_DIR / "atlas_physlite.yaml").read_text())
    schema["met"] = {"px": "soft_mpx", "py": "soft_mpy", "rebuild": True}
    (tmp_path / "physlite_flat_met.yaml").write_text(yaml.safe_dump(schema))
    from_tree, _ = read_events([str(tree_file)], str(tmp_path / "physlite_flat_met.yaml"), max_objects=8)
    np.testing.assert_allclose(from_tree.features, from_rntuple.features, rtol=1e-6, atol=1e-4)


def test_custom_yaml_schema_with_cartesian_kinematics(tmp_path):
    px, py, pz = [[30.0, -4.0], [0.0]], [[40.0, 3.0], [10.0]], [[0.0, 12.0], [-10.0]]
    e = [[60.0, 13.5], [15.0]]
    write_ttree(tmp_path / "cart.root", "events", {
        "mu": ak.zip({"px": ak.Array(px), "py": ak.Array(py), "pz": ak.Array(pz), "e": ak.Array(e),
                      "q": ak.Array([[1, -1], [1]])}),
        "metx": np.array([3000.0, 0.0]), "mety": np.array([4000.0, -1000.0])})
    schema = tmp_path / "cart.yaml"
    schema.write_text("tree: events\nunits: MeV\ncollections:\n  muons:\n    px: mu_px\n    py: mu_py\n"
                      "    pz: mu_pz\n    energy: mu_e\n    charge: mu_q\nmet:\n  px: metx\n  py: mety\n")
    batch, _ = read_events([str(tmp_path / "cart.root")], str(schema), max_objects=4)
    f = batch.features
    np.testing.assert_allclose(f[0, :3, PT], [5.0, 0.05, 0.005], rtol=1e-5)  # MET 5 GeV, muons 50 MeV, 5 MeV
    np.testing.assert_allclose(f[0, 1, ETA], 0.0, atol=1e-6)
    np.testing.assert_allclose(f[0, 1, PHI], np.arctan2(40, 30), rtol=1e-6)
    np.testing.assert_allclose(f[0, 2, ETA], np.arcsinh(12 / 5), rtol=1e-5)
    np.testing.assert_allclose(f[1, 1, [PT, ETA, PHI, ENERGY]], [0.01, np.arcsinh(-1.0), np.pi / 2, 0.015], rtol=1e-5)
    np.testing.assert_allclose(f[1, 0, PHI], -np.pi / 2, rtol=1e-6)


def test_truncation_drops_softest_jets_first(nanoaod_file):
    batch, _ = read_events([str(nanoaod_file)], "cms_nanoaod", max_objects=4)
    np.testing.assert_allclose(batch.features[0, :, PT], [35.0, 40.0, 30.0, 100.0])
    assert batch.mask.all(axis=1).tolist() == [True, False, True]


def test_tiny_chunks_give_the_same_arrays_as_one_chunk(tmp_path):
    path = write_ttree(tmp_path / "many.root", "Events", random_nanoaod_branches(600))
    whole, whole_stats = read_events([str(path)], "cms_nanoaod", selection="n_jets >= 3", chunk_size="100 MB")
    chunked, chunked_stats = read_events([str(path)], "cms_nanoaod", selection="n_jets >= 3", chunk_size="53")
    assert 0 < len(whole) < 600
    np.testing.assert_array_equal(chunked.features, whole.features)
    np.testing.assert_array_equal(chunked.types, whole.types)
    assert chunked_stats == whole_stats


def test_many_files_by_glob_and_max_events(tmp_path):
    for i in range(3):
        write_ttree(tmp_path / f"part{i}.root", "Events", nanoaod_branches())
    batch, stats = read_events([str(tmp_path / "part*.root")], "cms_nanoaod")
    assert (len(batch), stats.files, stats.events_read) == (9, 3, 9)
    first4, _ = read_events([f"file://{tmp_path}/part0.root", str(tmp_path / "part1.root")], "cms_nanoaod",
                            max_events=4)
    np.testing.assert_array_equal(first4.features, batch.features[:4])


def test_files_of_growing_size_read_together_equal_each_read_alone(tmp_path):
    # The reader fills one buffer, reserving each file's entries as it opens it: here the second and the
    # third file make it grow, copying what was read (73 + 393 + 240 events pass, in chunks of 37).
    paths = [str(write_ttree(tmp_path / f"part{i}.root", "Events", random_nanoaod_branches(n, seed=i)))
             for i, n in enumerate((100, 500, 300))]
    alone = [read_events([path], "cms_nanoaod", selection="n_jets >= 2", chunk_size="37")[0] for path in paths]
    together, stats = read_events(paths, "cms_nanoaod", selection="n_jets >= 2", chunk_size="37")
    assert stats.events_read == 900 and len(together) == sum(len(batch) for batch in alone)
    for name in ("features", "types", "mask"):
        np.testing.assert_array_equal(getattr(together, name), np.concatenate([getattr(b, name) for b in alone]))
    cut_short, _ = read_events(paths, "cms_nanoaod", selection="n_jets >= 2", chunk_size="37",
                               max_events=len(alone[0]) + 10)
    np.testing.assert_array_equal(cut_short.features, together.features[:len(alone[0]) + 10])


def test_non_finite_events_are_dropped_counted_and_warned(tmp_path):
    branches = nanoaod_branches()
    branches["MET_pt"] = np.array([35.0, np.nan, 50.0], np.float32)
    branches["Jet"] = ak.with_field(branches["Jet"], ak.Array([[50.0, np.inf, 20.0], [25.0], []]), "eta")
    path = write_ttree(tmp_path / "nan.root", "Events", branches)
    with pytest.warns(RuntimeWarning, match=r"2 of 3 event\(s\) with non-finite"):
        batch, stats = read_events([str(path)], "cms_nanoaod")
    assert (len(batch), stats.events_dropped) == (1, 2)
    assert batch.types[0, :5].tolist() == [T.MET, T.MUON, T.MUON, T.TAU, T.PHOTON]


def test_optional_collections_may_be_absent_required_ones_may_not(tmp_path):
    branches = nanoaod_branches()
    del branches["Tau"], branches["Photon"]
    path = write_ttree(tmp_path / "no_taus.root", "Events", branches)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch, _ = read_events([str(path)], "cms_nanoaod")
    assert not np.isin(batch.types[batch.mask], [T.TAU, T.PHOTON]).any()
    del branches["Muon"]
    path = write_ttree(tmp_path / "no_muons.root", "Events", branches)
    with pytest.raises(CrossfedError, match=r"no_muons.root: tree 'Events' has no branch 'Muon_pt' "
                                            r"\(schema key collections.muons.pt\)"):
        read_events([str(path)], "cms_nanoaod")


def test_rntuple_nanoaod_with_flat_field_names(tmp_path):
    fields = {f"{name}_{field}": branches[field] for name, branches in nanoaod_branches().items()
              if isinstance(branches, ak.Array) for field in branches.fields}
    fields.update({"MET_pt": nanoaod_branches()["MET_pt"], "MET_phi": nanoaod_branches()["MET_phi"]})
    path = write_rntuple(tmp_path / "nano_rntuple.root", "Events", fields)
    batch, _ = read_events([str(path)], "cms_nanoaod", max_objects=8)
    np.testing.assert_allclose(batch.features[0, :6, PT], EVENT0_PT, rtol=1e-6)


def _count_events(path: str, answers) -> None:
    answers.put(read_events([path], "cms_nanoaod", max_objects=8)[1].events_read)


def test_a_forked_child_reads_with_its_own_decompression_threads(nanoaod_file):
    """The decompression threads are per process: a child forked after its parent read (a DataLoader
    worker, a multiprocessing pool) would otherwise queue its baskets to threads it does not have."""
    import multiprocessing

    from crossfed.data.reader import decompression_threads

    _, stats = read_events([str(nanoaod_file)], "cms_nanoaod", max_objects=8)
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=_count_events, args=(str(nanoaod_file), answers))
    child.start()
    assert answers.get(timeout=60) == stats.events_read
    child.join(timeout=30)
    assert child.exitcode == 0 and decompression_threads() is decompression_threads()
