"""The catalogue of named physics processes: each name maps to Pythia 8 settings (13 TeV pp).

Any other process is reachable with raw Pythia settings (`--pythia "Key = value"`). Hadronization
stays on. Vector bosons produced with a parton (W/Z + jet) are used for W/Z+jets, with a pT-hat cut,
because the preselection (≥1 lepton, ≥2 jets, ≥1 b-jet) almost never accepts bare Drell-Yan.
"""

from __future__ import annotations

from crossfed.errors import CrossfedError

BEAM_SETTINGS = ("Beams:idA = 2212", "Beams:idB = 2212", "Beams:eCM = 13000")

# Keep Pythia silent: its banner and event listings would break the CLI's one-line output.
QUIET_SETTINGS = (
    "Print:quiet = on",
    "Next:numberCount = 0",
    "Next:numberShowEvent = 0",
    "Next:numberShowInfo = 0",
    "Next:numberShowProcess = 0",
)

# Pythia's end-of-event self-check (momentum and charge conservation, history links) takes 3 to 9 % of its
# time and never changes an event that passes it (tests/generate/test_pythia_settings.py); the one failure
# that would matter to us, a non-finite momentum, is caught in core._select instead.
SPEED_SETTINGS = ("Check:event = off",)

LEPTONIC_W = ("24:onMode = off", "24:onIfAny = 11 13 15")
LEPTONIC_Z = ("23:onMode = off", "23:onIfAny = 11 13 15")

PROCESSES: dict[str, tuple[str, ...]] = {
    "ttbar": ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on"),
    "wjets": (
        "WeakBosonAndParton:qqbar2Wg = on",
        "WeakBosonAndParton:qg2Wq = on",
        "PhaseSpace:pTHatMin = 20",
        *LEPTONIC_W,
    ),
    "zjets": (
        "WeakBosonAndParton:qqbar2gmZg = on",
        "WeakBosonAndParton:qg2gmZq = on",
        "WeakZ0:gmZmode = 2",  # Z only, no photon interference: keeps the cross-section finite at low mass
        "PhaseSpace:pTHatMin = 20",
        *LEPTONIC_Z,
    ),
    "single_top": ("Top:qq2tq(t:W) = on", "Top:ffbar2tqbar(s:W) = on"),
    # ttH with H -> b b-bar forced (the KEK study's signal).
    "tth": (
        "HiggsSM:gg2Httbar = on",
        "HiggsSM:qqbar2Httbar = on",
        "25:m0 = 125",
        "25:onMode = off",
        "25:onIfMatch = 5 -5",
    ),
    # A heavy charged Higgs produced with a top (b g -> H± t), decaying H± -> t b (2HDM, as in the KEK study).
    "hplus": (
        "Higgs:useBSM = on",
        "HiggsBSM:bg2H+-t = on",
        "37:m0 = 500",
        "37:onMode = off",
        "37:onIfMatch = 5 6",
    ),
}


# Processes with top quarks, whose lepton comes from a top's W: generated with forced W decays
# (decay_filter.py) when the preselection is on. W/Z+jets force their boson's decay in the settings above.
TOP_PROCESSES = frozenset({"ttbar", "single_top", "tth", "hplus"})


def uses_decay_filter(process: str, extra: tuple[str, ...] | list[str], preselect: bool, forced_decays: bool) -> bool:
    """Forced decays apply to top processes under the preselection, unless the user set W or tau decays."""
    own_tables = any(s.partition(":")[0].strip().lstrip("-") in ("24", "15") for s in extra)
    return forced_decays and preselect and process in TOP_PROCESSES and not own_tables


def pythia_settings(process: str, extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """All settings for one named process (or "custom": only the extra ones), beams first."""
    if process != "custom" and process not in PROCESSES:
        known = ", ".join(sorted(PROCESSES))
        raise CrossfedError(f"unknown process {process!r}; known processes: {known} (or 'custom' with --pythia)")
    if process == "custom" and not extra:
        raise CrossfedError("process 'custom' needs at least one --pythia setting, e.g. --pythia 'Top:gg2ttbar = on'")
    return [*BEAM_SETTINGS, *PROCESSES.get(process, ()), *extra]
