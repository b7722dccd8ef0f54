"""The vectorised detector response on one real Pythia batch: the truth-level pre-check is safe, jets are whole."""

import numpy as np
import pytest

from crossfed.generate.detector import DETECTORS, may_pass_preselection, passes_preselection, reconstruct, split_events
from crossfed.generate.processes import pythia_settings
from crossfed.generate.pythia import ChargeTable, initialise, new_pythia, next_batch, silenced_stdout, truth_batch


@pytest.fixture(scope="module")
def truth():
    settings = pythia_settings("ttbar")
    pythia = new_pythia(settings, seed=5)
    initialise(pythia, settings)
    with silenced_stdout():
        batch, failed = next_batch(pythia, 60)
    assert not any(failed)
    return truth_batch(batch, ChargeTable(pythia))


@pytest.mark.parametrize("detector", sorted(DETECTORS))
def test_precheck_never_drops_an_event_that_passes(truth, detector):
    det = DETECTORS[detector]
    with silenced_stdout():
        reco = reconstruct(truth, det, np.random.default_rng(0))
    passes = passes_preselection(reco, truth.n_events, det.btag_working_point)
    may_pass = may_pass_preselection(truth, det)
    assert passes.any() and not may_pass.all()  # the check has something to decide on both sides
    assert not (passes & ~may_pass).any()


def test_subset_and_split_keep_events_whole(truth):
    keep = np.arange(truth.n_events) % 3 == 0
    part = truth.subset(keep)
    assert part.n_events == keep.sum() and len(part.particles) == np.isin(truth.event, np.flatnonzero(keep)).sum()
    with silenced_stdout():
        reco = reconstruct(part, DETECTORS["cms"], np.random.default_rng(1))
    events = split_events(reco, part.n_events, np.arange(part.n_events))
    assert len(events) == part.n_events
    for event in events:
        assert np.all(np.diff(event["jets"]["pt"]) <= 0)  # jets by pT within each event
        assert np.all(event["jets"]["pt"] > 20) and np.isfinite(event["met_pt"])
    assert sum(len(e["jets"]["pt"]) for e in events) == len(reco["jets"]["pt"])
