"""Pythia's speed settings change no event: the same seed gives the same events with its self-check on."""

import awkward as ak
import numpy as np

from crossfed.generate.core import _select
from crossfed.generate.detector import CMS
from crossfed.generate.processes import pythia_settings
from crossfed.generate.pythia import ChargeTable, initialise, new_pythia, next_batch, silenced_stdout, truth_batch


def _events(extra: list[str]):
    settings = pythia_settings("ttbar") + extra
    pythia = new_pythia(settings, seed=8)
    initialise(pythia, settings)
    with silenced_stdout():
        batch, failed = next_batch(pythia, 40)
    return batch, failed, pythia


def test_the_event_check_off_changes_no_event():
    fast, fast_failed, _ = _events([])
    checked, checked_failed, _ = _events(["Check:event = on"])
    assert not any(fast_failed) and not any(checked_failed)
    for field in ("id", "status", "mother1", "daughter1"):
        assert ak.all(ak.ravel(fast.prt[field]) == ak.ravel(checked.prt[field])), field
    for component in ("px", "py", "pz", "e"):
        assert ak.all(ak.ravel(fast.prt.p[component]) == ak.ravel(checked.prt.p[component])), component


def test_a_non_finite_event_is_never_kept():
    batch, _, pythia = _events([])
    truth = truth_batch(batch, ChargeTable(pythia))
    kept = {position for position, _ in _select(truth, CMS, np.random.default_rng(1), preselect=False)[0]}
    broken = int(truth.event[0])
    truth.particles[0, 0] = np.nan  # as a broken record would be
    kept_now = {position for position, _ in _select(truth, CMS, np.random.default_rng(1), preselect=False)[0]}
    assert kept == set(range(40)) and kept_now == kept - {broken}
