"""The bias check of a generation shortcut: do its selected events look like those of plain generation?

Two samples (files of either format) are compared on the observables a shortcut could distort, each by
two two-sample tests: Kolmogorov-Smirnov (most sensitive to a shift of the bulk) and k-sample
Anderson-Darling (to the tails; its midrank form copes with the ties of multiplicities). A comparison
fails when any p-value is at or below P_VALUE_THRESHOLD: 0.001 per test, so with 5 observables x 2
tests a family-wise false-alarm rate of about 1% (Bonferroni) for a sample without bias.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

OBSERVABLES = ("lepton_pt", "n_jets", "n_bjets", "met", "ht")
P_VALUE_THRESHOLD = 0.001


def observables(path: str | Path, detector: str) -> dict[str, np.ndarray]:
    """Per event (GeV): leading lepton pT, jet and b-tagged jet multiplicities, MET, H_T (scalar sum of jet pT)."""
    import awkward as ak
    import uproot

    from crossfed.generate.detector import DETECTORS
    from crossfed.generate.writer import MEV_PER_GEV, TREE_NAMES

    events = uproot.open(path)[TREE_NAMES[detector]].arrays()
    working_point = DETECTORS[detector].btag_working_point
    if detector == "cms":
        lepton_pt = ak.concatenate([events.Muon_pt, events.Electron_pt], axis=1)
        jet_pt, btag, met, scale = events.Jet_pt, events.Jet_btagDeepFlavB, events.MET_pt, 1.0
    else:
        lepton_pt, jet_pt, btag, met, scale = events.lep_pt, events.jet_pt, events.jet_MV2c10, events.met_et, MEV_PER_GEV
    numpy = lambda x: ak.to_numpy(x).astype(np.float64)  # noqa: E731
    return dict(
        lepton_pt=numpy(ak.fill_none(ak.max(lepton_pt, axis=1), 0.0)) / scale,
        n_jets=numpy(ak.num(jet_pt)),
        n_bjets=numpy(ak.sum(btag > working_point, axis=1)),
        met=numpy(met) / scale,
        ht=numpy(ak.sum(jet_pt, axis=1)) / scale,
    )


def compare(fast: dict[str, np.ndarray], plain: dict[str, np.ndarray]) -> list[dict]:
    """KS and Anderson-Darling statistics and p-values per observable; `passed` when no p-value is at or
    below the threshold."""
    from scipy import stats

    rows = []
    for name in OBSERVABLES:
        a, b = fast[name], plain[name]
        ks = stats.ks_2samp(a, b)
        with warnings.catch_warnings():  # scipy notes when it caps the p-value to [0.001, 0.25]
            warnings.simplefilter("ignore")
            ad = stats.anderson_ksamp([a, b], midrank=True)
        rows.append(dict(observable=name, n_fast=len(a), n_plain=len(b), ks_statistic=float(ks.statistic),
                         ks_p=float(ks.pvalue), ad_statistic=float(ad.statistic), ad_p=float(ad.pvalue),
                         passed=bool(ks.pvalue > P_VALUE_THRESHOLD and ad.pvalue > P_VALUE_THRESHOLD)))
    return rows


def ks_critical_distance(n: int, m: int, alpha: float = P_VALUE_THRESHOLD) -> float:
    """The smallest difference of the two CDFs the KS test flags at `alpha` (large-sample formula):
    what "no bias" means for samples of these sizes."""
    return float(np.sqrt(-np.log(alpha / 2) / 2) * np.sqrt((n + m) / (n * m)))


def cross_section_pull(fast: dict, plain: dict) -> float:
    """(sigma x efficiency fast - plain) / its error, from two files' (or pilots') metadata: the mixture
    weight must not move."""
    def rate(m: dict) -> tuple[float, float]:
        n, efficiency = m["n_generated"], m["efficiency"]
        value = m["cross_section_pb"] * efficiency
        relative = np.hypot(m["cross_section_error_pb"] / m["cross_section_pb"],
                            np.sqrt(efficiency * (1 - efficiency) / n) / efficiency)
        return value, value * relative

    (a, da), (b, db) = rate(fast), rate(plain)
    return float((a - b) / np.hypot(da, db))


def format_table(rows: list[dict]) -> str:
    lines = [f"{'observable':10s} {'n fast':>7s} {'n plain':>7s} {'KS D':>7s} {'KS p':>8s} {'AD':>7s} {'AD p':>7s}"]
    for r in rows:
        lines.append(f"{r['observable']:10s} {r['n_fast']:7d} {r['n_plain']:7d} {r['ks_statistic']:7.4f} "
                     f"{r['ks_p']:8.4f} {r['ad_statistic']:7.3f} {r['ad_p']:7.4f}{'' if r['passed'] else '  <- differs'}")
    return "\n".join(lines)
