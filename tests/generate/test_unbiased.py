"""Forced decays do not bias the selected events: fast vs plain samples, two-sample tests (generate/bias.py).

Per sample comparison: KS and Anderson-Darling on leading lepton pT, jet and b-jet multiplicities, MET
and H_T; a p-value at or below 0.001 fails it (about 1% family-wise false alarms for 10 tests). With
SAMPLE_EVENTS selected events per sample the KS test flags any CDF difference above ~0.14 (printed by
`ks_critical_distance`); benchmarks/generate_bias.py runs the same check with 10x the events. A
control sample with a generator cut the selection does NOT imply (top pT > 100 GeV) must fail it,
which shows the check catches a real bias. The pre-training mixture is checked as a whole too: its
weights (sigma x efficiency) must agree within their errors and the mixed events must match.
"""

import numpy as np
import pytest

from crossfed.generate import bias, connect_ray, generate
from crossfed.generate.recipe import mixture_counts

SAMPLE_EVENTS = 400
# The mixture's processes whose generation forced decays change (W/Z+jets are generated the same either way).
MIXTURE = {"ttbar": SAMPLE_EVENTS, "single_top": 80}
LABELLED = ("ttbar", "tth", "hplus")


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """samples[(process, forced)] -> (observables, metadata), CMS, independent seeds per sample."""
    folder = tmp_path_factory.mktemp("bias")
    requests = {(p, forced): SAMPLE_EVENTS for p in LABELLED for forced in (True, False)}
    requests |= {("single_top", forced): MIXTURE["single_top"] for forced in (True, False)}
    out = {}
    with connect_ray(num_cpus=2):
        for i, ((process, forced), n) in enumerate(sorted(requests.items())):
            path = folder / f"{process}-{'fast' if forced else 'plain'}.root"
            meta = generate(process, "cms", n, 900 + i, path, workers=2, progress=False, forced_decays=forced)
            out[(process, forced)] = (bias.observables(path, "cms"), meta)
        path = folder / "ttbar-cut.root"
        generate("ttbar", "cms", 300, 990, path, workers=2, progress=False,
                 pythia_settings=["PhaseSpace:pTHatMin = 100"])
        out["control"] = (bias.observables(path, "cms"), None)
    return out


@pytest.mark.parametrize("process", LABELLED)
def test_labelled_samples_are_unbiased(samples, process):
    (fast, fast_meta), (plain, plain_meta) = samples[(process, True)], samples[(process, False)]
    assert fast_meta["forced_decays"] and plain_meta["forced_decays"] is None
    assert fast_meta["efficiency"] > 1.8 * plain_meta["efficiency"]  # what the shortcut buys
    rows = bias.compare(fast, plain)
    print(f"\n{process}: KS flags CDF differences > {bias.ks_critical_distance(SAMPLE_EVENTS, SAMPLE_EVENTS):.3f}\n"
          + bias.format_table(rows))
    assert all(r["passed"] for r in rows), bias.format_table(rows)
    assert abs(bias.cross_section_pull(fast_meta, plain_meta)) < 3  # sigma x BR x efficiency = sigma x efficiency


def test_mixture_weights_and_events_are_unbiased(samples):
    mixed = {}
    for forced in (True, False):
        meta = {p: samples[(p, forced)][1] for p in MIXTURE}
        counts = mixture_counts({p: m["cross_section_pb"] * m["efficiency"] for p, m in meta.items()}, SAMPLE_EVENTS)
        assert all(counts[p] <= n for p, n in MIXTURE.items())
        mixed[forced] = {name: np.concatenate(
            [samples[(p, forced)][0][name][:counts[p]] for p in MIXTURE]) for name in bias.OBSERVABLES}
    for process in MIXTURE:
        assert abs(bias.cross_section_pull(samples[(process, True)][1], samples[(process, False)][1])) < 3, process
    rows = bias.compare(mixed[True], mixed[False])
    print("\nmixture:\n" + bias.format_table(rows))
    assert all(r["passed"] for r in rows), bias.format_table(rows)


def test_the_check_catches_a_real_bias(samples):
    """A top-pT cut is not implied by the selection: the same check must flag it."""
    rows = bias.compare(samples["control"][0], samples[("ttbar", False)][0])
    print("\ncontrol (pTHat > 100 GeV):\n" + bias.format_table(rows))
    assert len([r for r in rows if not r["passed"]]) >= 2
