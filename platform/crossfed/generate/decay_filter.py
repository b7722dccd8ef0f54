"""Forced decays: spend Pythia's time only on top events that can pass the preselection's lepton requirement.

The preselection wants an isolated electron or muon. In top events it comes from a W decay (W -> e nu,
W -> mu nu, or W -> tau nu with tau -> e/mu nu nu) in all but a few per mille of the selected events
(measured at truth level: < 0.24 % for ttbar, 0.35 to 0.56 % for single top, ttH and H+-; see
benchmarks/generate_bias.py). So, right after the resonance decays and before the costly shower,
multiparton interactions and hadronisation:

- at least one W -> e nu or mu nu: kept;
- no such W, exactly one W -> tau nu: kept with probability P(tau -> e/mu) and then that event's taus
  are decayed to e/mu only (the other (1 - P) of these events have a hadronic tau and no lepton);
- no such W, two W -> tau nu: kept, taus decay freely;
- all W's to quarks: dropped (redrawn).

A dropped decay chain is redrawn by Pythia on the same hard process (UserHooks::doVetoResonanceDecays),
and the chance to keep a chain does not depend on the hard process, so kept events follow exactly the
plain distribution restricted to those channels. What is left out is the events whose only lepton comes
from a hadron decay (b -> l nu c ...), which the isolation rejects almost always: the few per mille above,
which the two-sample bias check (benchmarks/generate_bias.py, tests/generate/test_unbiased.py) cannot
see at thousands of events.

The cross-section of what is generated is Pythia's sigma times the fraction of decay chains kept
(counted here), written to the file's metadata as sigma x BR; with the preselection efficiency it gives
the same sigma x efficiency, the mixture weight, as plain generation.
"""

from __future__ import annotations

import pythia8mc

W = 24
TAU = 15
PROMPT_LEPTONS = (11, 13)  # the preselection's electrons and muons
# Documented in every filtered file's metadata.
DESCRIPTION = ("at least one W -> e/mu nu; else one W -> tau nu kept with P(tau -> e/mu) and its tau forced to "
               "e/mu; else two W -> tau nu; all-hadronic W decays dropped")


def tau_to_light_lepton_fraction(particle_data) -> float:
    """P(tau -> e or mu + neutrinos) from Pythia's own decay table."""
    tau = particle_data.particleDataEntryPtr(TAU)
    channels = [tau.channel(i) for i in range(tau.sizeChannels())]
    total = sum(c.bRatio() for c in channels)
    leptonic = sum(c.bRatio() for c in channels
                   if {abs(c.product(j)) for j in range(c.multiplicity())} & set(PROMPT_LEPTONS))
    return leptonic / total


class LeptonicDecayFilter(pythia8mc.UserHooks):
    """Pythia user hook applying the rule above; counts the decay chains tried and kept."""

    def __init__(self, pythia):
        pythia8mc.UserHooks.__init__(self)
        self._particle_data = pythia.particleData
        self._random = pythia.rndm  # the event's own random stream: the same choice for any worker layout
        self.tau_to_lepton = tau_to_light_lepton_fraction(pythia.particleData)
        self.tried = 0
        self.kept = 0
        self._taus_forced = False

    def canVetoResonanceDecays(self) -> bool:
        return True

    def doVetoResonanceDecays(self, process) -> bool:
        self.tried += 1
        n_w, n_prompt, n_tau = 0, 0, 0
        ids = [process[i].idAbs() for i in range(process.size())]
        for i, pdg in enumerate(ids):
            if pdg == W:
                n_w += 1
            elif pdg in PROMPT_LEPTONS or pdg == TAU:
                if ids[process[i].mother1()] == W:
                    n_prompt += pdg != TAU
                    n_tau += pdg == TAU
        force_taus = False
        if n_prompt or n_w == 0:
            keep = True  # (no W at all: nothing this filter knows about, leave the event alone)
        elif n_tau == 1:
            keep = force_taus = self._random.flat() < self.tau_to_lepton
        else:
            keep = n_tau >= 2
        if keep:
            self.kept += 1
            self._force_taus(force_taus)
        return not keep

    def _force_taus(self, on: bool) -> None:
        """Taus decay at hadron level, after this hook: switch their table for this event only."""
        if on == self._taus_forced:
            return
        self._particle_data.readString(f"{TAU}:onMode = {'off' if on else 'on'}")
        if on:
            self._particle_data.readString(f"{TAU}:onIfAny = {' '.join(map(str, PROMPT_LEPTONS))}")
        self._taus_forced = on
