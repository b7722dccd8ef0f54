"""Pythia 8 (the `pythia8mc` wheel): checking settings, running a generator, reading its event record."""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from crossfed.errors import CrossfedError
from crossfed.generate.detector import TruthEvent
from crossfed.generate.processes import QUIET_SETTINGS

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
        for setting in QUIET_SETTINGS:
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


def initialise(pythia, settings: list[str]) -> None:
    with silenced_stdout():
        ok = pythia.init()
    if not ok:
        raise CrossfedError(f"Pythia could not initialise with the settings {settings} (inconsistent process setup)")


def check_settings(settings: list[str]) -> None:
    """Fail fast, before any worker starts, on a setting Pythia does not accept."""
    new_pythia(settings)


def _is_heavy_hadron(abs_id: int, quark: int) -> bool:
    """Mesons (q q̄': digits 100s and 10s) and baryons (digit 1000s) containing the given quark."""
    return abs_id > 100 and ((abs_id // 100) % 10 == quark or (abs_id // 1000) % 10 == quark)


def truth_event(event) -> TruthEvent:
    """Read Pythia's event record: final-state particles, heavy-flavour hadrons and visible hadronic taus."""
    final, pdg_ids, charges, b_hadrons, c_hadrons, taus, tau_charges = [], [], [], [], [], [], []
    for i in range(event.size()):
        particle = event[i]
        pdg = particle.id()
        abs_id = abs(pdg)
        if not (particle.isFinal() or abs_id == 15 or abs_id > 400):
            continue  # partons, intermediate light hadrons: their momenta are not needed
        momentum = (particle.px(), particle.py(), particle.pz(), particle.e())
        if particle.isFinal():
            final.append(momentum)
            pdg_ids.append(pdg)
            charges.append(particle.charge())
        elif abs_id == 15:
            visible = _visible_hadronic_tau(event, particle, momentum)
            if visible is not None:
                taus.append(visible)
                tau_charges.append(-1 if pdg > 0 else 1)
        elif _is_heavy_hadron(abs_id, 5):
            b_hadrons.append(momentum)
        elif _is_heavy_hadron(abs_id, 4):
            c_hadrons.append(momentum)
    as_array = lambda rows: np.array(rows, dtype=np.float64).reshape(-1, 4)  # noqa: E731
    return TruthEvent(
        particles=as_array(final), pdg_id=np.array(pdg_ids, np.int32), charge=np.array(charges, np.float64),
        b_hadrons=as_array(b_hadrons), c_hadrons=as_array(c_hadrons),
        taus=as_array(taus), tau_charges=np.array(tau_charges, np.int32),
    )


def _visible_hadronic_tau(event, tau, momentum):
    """The visible momentum (tau minus its neutrinos) of a decaying tau with no e/μ daughter, else None."""
    daughters = [event[d] for d in tau.daughterList()]
    daughter_ids = {abs(d.id()) for d in daughters}
    if not daughters or 15 in daughter_ids or daughter_ids & {11, 13}:
        return None  # an intermediate copy, or a leptonic decay
    neutrinos = [d for d in daughters if abs(d.id()) in (12, 14, 16)]
    return tuple(m - sum(getattr(n, c)() for n in neutrinos) for m, c in zip(momentum, ("px", "py", "pz", "e")))
