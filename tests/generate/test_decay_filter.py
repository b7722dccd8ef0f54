"""The forced-decay hook on real Pythia tt̄ events: which W-decay channels it keeps, and how often."""

from collections import Counter

import awkward as ak
import numpy as np

from crossfed.generate.processes import pythia_settings
from crossfed.generate.pythia import attach_decay_filter, initialise, new_pythia, next_batch, silenced_stdout


def _channels(process) -> tuple[int, int]:
    """(W's decaying to e or mu, W's decaying to tau) of a Pythia process record."""
    ids = [process[i].idAbs() for i in range(process.size())]
    from_w = [ids[i] for i in range(process.size()) if ids[process[i].mother1()] == 24]
    return sum(pdg in (11, 13) for pdg in from_w), sum(pdg == 15 for pdg in from_w)


def test_kept_channels_follow_the_branching_ratios():
    """Process level only (fast): no all-hadronic event, and each kept channel in its expected share."""
    settings = pythia_settings("ttbar") + ["PartonLevel:all = off", "HadronLevel:all = off"]
    pythia = new_pythia(settings, seed=2)
    hook = attach_decay_filter(pythia)
    initialise(pythia, settings)
    counts = Counter()
    with silenced_stdout():
        for _ in range(3000):
            assert pythia.next()
            counts[_channels(pythia.process)] += 1
    # Pythia's W: 0.1081 to each lepton flavour, 0.6757 to quarks; P(tau -> e/mu) = 0.3504.
    b_light, b_tau, b_quarks, r = 0.2162, 0.1081, 0.6757, hook.tau_to_lepton
    expected = {"light": 1 - (1 - b_light) ** 2, "lone tau": 2 * b_tau * b_quarks * r, "two taus": b_tau**2}
    kept = sum(expected.values())
    observed = {"light": sum(n for (light, _), n in counts.items() if light),
                "lone tau": counts[(0, 1)], "two taus": counts[(0, 2)]}
    assert counts[(0, 0)] == 0 and sum(observed.values()) == 3000
    for channel, probability in expected.items():
        share = probability / kept
        assert abs(observed[channel] / 3000 - share) < 4 * np.sqrt(share * (1 - share) / 3000), (channel, observed)
    assert abs(hook.kept / hook.tried - kept) < 4 * np.sqrt(kept * (1 - kept) / hook.tried)
    assert abs(r - 0.3504) < 1e-3


def test_a_lone_w_tau_decays_to_a_light_lepton():
    """Full events: in events whose only leptonic W is a W -> tau nu, every decaying tau gives an e or mu."""
    settings = pythia_settings("ttbar")
    pythia = new_pythia(settings, seed=3)
    hook = attach_decay_filter(pythia)  # kept: Pythia holds only its C++ side
    initialise(pythia, settings)
    with silenced_stdout():
        batch, _ = next_batch(pythia, 60)
    assert hook.kept >= 60  # one kept decay chain per event (more if Pythia retried one)
    lone_tau_events = 0
    for event in ak.to_list(batch.prt[["id", "mother1", "daughter1", "daughter2"]]):
        ids = [abs(p["id"]) for p in event]
        from_w = [i for i, p in enumerate(event) if ids[i] in (11, 13, 15) and ids[p["mother1"]] == 24]
        if [ids[i] for i in from_w] != [15]:
            continue
        lone_tau_events += 1
        for p in event:
            if abs(p["id"]) == 15 and p["daughter1"] > 0:
                daughters = {ids[d] for d in range(p["daughter1"], max(p["daughter1"], p["daughter2"]) + 1)}
                assert 15 in daughters or daughters & {11, 13}, daughters  # a copy, or a leptonic decay
    assert lone_tau_events > 0
