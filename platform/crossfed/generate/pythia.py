"""Pythia 8 (the `pythia8mc` wheel): checking settings, running a generator, reading its event records in batches."""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from crossfed.errors import CrossfedError
from crossfed.generate.detector import TruthBatch
from crossfed.generate.processes import QUIET_SETTINGS, SPEED_SETTINGS

# Pythia's random seed must lie in 1..900 000 000.
MAX_PYTHIA_SEED = 900_000_000


@contextlib.contextmanager
def silenced_stdout():
    """Pythia and fastjet print banners and errors from C++ straight to file descriptor 1: hide them."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def new_pythia(settings: list[str], seed: int | None = None):
    """A Pythia instance with the settings applied; a setting Pythia rejects is a CrossfedError naming it."""
    import pythia8mc

    with silenced_stdout():
        pythia = pythia8mc.Pythia("", False)
        for setting in (*QUIET_SETTINGS, *SPEED_SETTINGS):  # before the user's: they may turn a check back on
            pythia.readString(setting)
        for setting in settings:
            if not _value_is_meaningful(pythia, setting) or not pythia.readString(setting):
                raise CrossfedError(f"Pythia rejected the setting {setting!r} (unknown key or invalid value)")
        if seed is not None:
            pythia.readString("Random:setSeed = on")
            pythia.readString(f"Random:seed = {seed}")
    return pythia


# Pythia reads these silently as 0 / off when the value is not a number / a boolean word: check them ourselves.
NUMERIC_PARTICLE_PROPERTIES = {"m0", "mwidth", "mmin", "mmax", "tau0"}
FLAG_WORDS = {"on", "off", "true", "false", "yes", "no", "1", "0"}


def _value_is_meaningful(pythia, setting: str) -> bool:
    key, equals, value = (part.strip() for part in setting.partition("="))
    if not equals:
        return True  # not our syntax to judge: Pythia's readString decides
    if pythia.settings.isFlag(key):
        return value.lower() in FLAG_WORDS
    particle, _, prop = key.partition(":")
    if particle.lstrip("-").isdigit() and prop.lower() in NUMERIC_PARTICLE_PROPERTIES:
        try:
            float(value)
        except ValueError:
            return False
    return True


def attach_decay_filter(pythia):
    """Force the top events' W decays to the channels the preselection needs (decay_filter.py); keep the returned hook."""
    from crossfed.generate.decay_filter import LeptonicDecayFilter

    hook = LeptonicDecayFilter(pythia)  # Pythia holds only the C++ side: the caller keeps this object alive
    pythia.setUserHooksPtr(hook)
    return hook


def initialise(pythia, settings: list[str]) -> None:
    with silenced_stdout():
        ok = pythia.init()
    if not ok:
        raise CrossfedError(f"Pythia could not initialise with the settings {settings} (inconsistent process setup)")


def check_settings(settings: list[str]) -> None:
    """Fail fast, before any worker starts, on a setting Pythia does not accept."""
    new_pythia(settings)


def _is_heavy_hadron(abs_id: np.ndarray, quark: int) -> np.ndarray:
    """Mesons (q q̄': digits 100s and 10s) and baryons (digit 1000s) containing the given quark."""
    return (abs_id > 100) & (((abs_id // 100) % 10 == quark) | ((abs_id // 1000) % 10 == quark))


def next_batch(pythia, n_events: int) -> tuple[object, int]:
    """Up to `n_events` events in one C++ call (Pythia's awkward batch interface), and how many failed.

    One call instead of a Python call per particle property is what makes reading the record cheap.
    A failed event is None in the batch ("none" mode) and is dropped here, as `pythia.next()` failing was.
    """
    import awkward as ak

    events = pythia.nextBatch(n_events, "none")
    failed = ak.to_numpy(ak.is_none(events))
    return (events[~failed] if failed.any() else events), failed.tolist()


class ChargeTable:
    """Particle charges by PDG id from Pythia's particle data, each id looked up once.

    A sorted table searched for each particle: a few hundred distinct ids against ~10^5 particles a batch,
    cheaper than sorting the particles (np.unique) every time.
    """

    def __init__(self, pythia):
        self._particle_data = pythia.particleData
        self._ids = np.zeros(0, np.int64)
        self._charges = np.zeros(0, np.float64)

    def __call__(self, pdg_ids: np.ndarray) -> np.ndarray:
        position = self._positions(pdg_ids)
        if position is None:
            new = np.setdiff1d(pdg_ids, self._ids)
            ids = np.concatenate([self._ids, new])
            charges = np.concatenate([self._charges, [self._particle_data.charge(int(pdg)) for pdg in new]])
            order = np.argsort(ids)
            self._ids, self._charges = ids[order], charges[order]
            position = self._positions(pdg_ids)
        return self._charges[position]

    def _positions(self, pdg_ids: np.ndarray) -> np.ndarray | None:
        """Where each id sits in the table, or None if some are not in it yet."""
        if not len(self._ids):
            return None if len(pdg_ids) else np.zeros(0, np.int64)
        position = np.minimum(np.searchsorted(self._ids, pdg_ids), len(self._ids) - 1)
        return position if np.array_equal(self._ids[position], pdg_ids) else None


def truth_batch(events, charges: ChargeTable) -> TruthBatch:
    """Read a batch of Pythia event records: final-state particles, heavy-flavour hadrons, visible hadronic taus."""
    import awkward as ak

    particles = events.prt
    counts = ak.to_numpy(ak.num(particles))
    event = np.repeat(np.arange(len(counts)), counts)
    flat = lambda field: ak.to_numpy(ak.flatten(field))  # noqa: E731
    pdg, status = flat(particles.id), flat(particles.status)
    momenta = np.stack([flat(particles.p.px), flat(particles.p.py), flat(particles.p.pz), flat(particles.p.e)], axis=1)
    abs_id = np.abs(pdg)
    final = status > 0
    heavy = ~final & (abs_id > 400)
    is_b = heavy & _is_heavy_hadron(abs_id, 5)
    is_c = heavy & ~is_b & _is_heavy_hadron(abs_id, 4)
    taus, tau_charges, tau_event = _visible_hadronic_taus(
        np.flatnonzero(~final & (abs_id == 15)), event, np.cumsum(counts) - counts, pdg, momenta,
        flat(particles.daughter1), flat(particles.daughter2))
    return TruthBatch(
        n_events=len(counts), particles=momenta[final], pdg_id=pdg[final].astype(np.int32),
        charge=charges(pdg[final]), event=event[final],
        b_hadrons=momenta[is_b], b_event=event[is_b], c_hadrons=momenta[is_c], c_event=event[is_c],
        taus=taus, tau_charges=tau_charges, tau_event=tau_event,
    )


def _daughters(first: int, second: int) -> list[int]:
    """Pythia's Particle::daughterList() for the usual cases: none, one, a range, or two separate ones."""
    if first <= 0:
        return []
    if second == first or second == 0:
        return [first]
    return list(range(first, second + 1)) if second > first else [first, second]


def _visible_hadronic_taus(tau_rows, event, event_start, pdg, momenta, daughter1, daughter2):
    """Visible momenta (tau minus its neutrinos) of decaying taus with no e/μ daughter; their charges and events.

    A few taus per event at most, so a plain loop; daughter indices are per event, rows are per batch.
    """
    visible, charges, events = [], [], []
    for row in tau_rows.tolist():
        start = event_start[event[row]]
        daughters = [start + d for d in _daughters(int(daughter1[row]), int(daughter2[row]))]
        daughter_ids = set(np.abs(pdg[daughters]).tolist())
        if not daughters or 15 in daughter_ids or daughter_ids & {11, 13}:
            continue  # an intermediate copy, or a leptonic decay
        neutrinos = [d for d in daughters if abs(pdg[d]) in (12, 14, 16)]
        visible.append(momenta[row] - momenta[neutrinos].sum(0))
        charges.append(-1 if pdg[row] > 0 else 1)
        events.append(event[row])
    return (np.array(visible, np.float64).reshape(-1, 4), np.array(charges, np.int32), np.array(events, np.int64))
