"""kinematics.py: pT = 0 and E < |p| have one defined result, the same in generation and in reading."""

from __future__ import annotations

import awkward as ak
import numpy as np
from root_samples import write_ttree

from crossfed import kinematics
from crossfed.data.events import ENERGY, ETA, PT
from crossfed.data.reader import read_events
from crossfed.generate import detector

# (px, py, pz, E) in GeV: along +z, along -z, at rest, E below |p| (|p| = 13), and an ordinary one.
VECTORS = np.array([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, -7.0, 7.5], [0.0, 0.0, 0.0, 1.0],
                    [5.0, 0.0, 12.0, 12.9], [30.0, 40.0, 0.0, 60.0]])
EXPECTED_ETA = [kinematics.ETA_AT_ZERO_PT, -kinematics.ETA_AT_ZERO_PT, 0.0, np.arcsinh(12 / 5), 0.0]


def test_edge_cases_are_finite_and_defined():
    pt, eta, _ = kinematics.pt_eta_phi(*VECTORS[:, :3].T)
    np.testing.assert_allclose(eta, EXPECTED_ETA, rtol=1e-12)
    assert 21 < kinematics.ETA_AT_ZERO_PT < 22 and np.isfinite(np.float32(kinematics.ETA_AT_ZERO_PT))
    mass = kinematics.mass(VECTORS[:, 3], *VECTORS[:, :3].T)
    np.testing.assert_allclose(mass, [0.0, np.sqrt(7.5**2 - 49), 1.0, 0.0, np.sqrt(3600 - 2500)])
    energy = kinematics.physical_energy(VECTORS[:, 3], *VECTORS[:, :3].T)
    np.testing.assert_allclose(energy, [20.0, 7.5, 1.0, 13.0, 60.0])  # only E < |p| changes: to |p|


def test_generation_and_reading_agree_on_the_edge_cases(tmp_path):
    gen_pt, gen_eta, _ = detector.pt_eta_phi(VECTORS)
    np.testing.assert_array_equal(gen_eta, kinematics.pt_eta_phi(*VECTORS[:, :3].T)[1])
    np.testing.assert_array_equal(detector.mass(VECTORS), kinematics.mass(VECTORS[:, 3], *VECTORS[:, :3].T))

    # The same vectors as muons of one event each, read through a cartesian schema: no event is dropped.
    column = lambda i: ak.Array([[v] for v in VECTORS[:, i]])  # noqa: E731
    write_ttree(tmp_path / "edge.root", "events", {
        "mu": ak.zip({"px": column(0), "py": column(1), "pz": column(2), "e": column(3),
                      "q": ak.Array([[1]] * len(VECTORS))}),
        "metx": np.zeros(len(VECTORS)), "mety": np.zeros(len(VECTORS))})
    schema = tmp_path / "edge.yaml"
    schema.write_text("tree: events\nunits: GeV\ncollections:\n  muons:\n    px: mu_px\n    py: mu_py\n"
                      "    pz: mu_pz\n    energy: mu_e\n    charge: mu_q\nmet:\n  px: metx\n  py: mety\n")
    batch, stats = read_events([str(tmp_path / "edge.root")], str(schema), max_objects=2)
    assert len(batch) == len(VECTORS)  # before: the pT = 0 events were non-finite and dropped
    muons = batch.features[:, 1]
    np.testing.assert_allclose(muons[:, ETA], np.float32(gen_eta), rtol=1e-6)
    np.testing.assert_allclose(muons[:, PT], gen_pt, atol=1e-6)
    np.testing.assert_allclose(muons[:, ENERGY], [20.0, 7.5, 1.0, 13.0, 60.0], rtol=1e-6)
