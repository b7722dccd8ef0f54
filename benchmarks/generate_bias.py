"""The bias check of forced decays at scale: fast vs plain selected events, and what the shortcut leaves out.

    python benchmarks/generate_bias.py --events 2500 --truth-events 5000

1. For ttbar, tth and hplus, and for the pre-training mixture (ttbar + single_top, weighted by each
   sample's sigma x efficiency; W/Z+jets are generated the same either way), `--events` selected events
   with forced decays and as many without; KS and Anderson-Darling on leading lepton pT, jet and
   b-jet multiplicities, MET and H_T (generate/bias.py: a p-value <= 0.001 flags a difference), with
   the smallest CDF difference the KS test would flag at these sizes, and the pull of sigma x efficiency
   (the mixture weight) between the two.
2. The mixture weights as a recipe measures them: sigma x efficiency from pilot runs of a fixed number
   of generated events (`--pilot-events` plain, a third of it forced), and their pull.
3. Truth level, plain generation: the fraction of selected events whose channel the forced decays drop
   (all W -> quarks, or a lone W -> tau nu with a hadronic tau): the size of the bias the shortcut can
   have at most, with its 95% upper limit.

`--parts` runs some of the three (e.g. --parts pilots,truth).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def samples(processes: dict[str, int], detector: str, workers: int | None, folder: Path) -> dict:
    """(process, forced) -> (observables, metadata) of a fast and a plain sample of each process."""
    from crossfed.generate import bias, generate

    out = {}
    for i, (process, n) in enumerate(processes.items()):
        for forced in (True, False):
            path = folder / f"{process}-{forced}.root"
            meta = generate(process, detector, n, 7000 + 2 * i + forced, path, workers=workers, progress=True,
                            forced_decays=forced)
            out[(process, forced)] = (bias.observables(path, detector), meta)
    return out


def pilot_pull(process: str, detector: str, n_plain: int, workers: int | None) -> str:
    """sigma x efficiency from a plain pilot of n_plain generated events and a forced one of n_plain / 3."""
    from crossfed.generate import measure

    rates = {}
    for forced, n in ((False, n_plain), (True, n_plain // 3)):
        m = measure(process, detector, n, 8000 + forced, workers=workers, progress=False, forced_decays=forced)
        efficiency, sigma = m["efficiency"], m["cross_section_pb"]
        relative = np.hypot(m["cross_section_error_pb"] / sigma, np.sqrt(efficiency * (1 - efficiency) / n) / efficiency)
        rates[forced] = (sigma * efficiency, sigma * efficiency * relative, m["n_accepted"])
    (a, da, ka), (b, db, kb) = rates[True], rates[False]
    return (f"  {process:10s}: forced {a:.4g} +- {da:.2g} pb ({ka} accepted), plain {b:.4g} +- {db:.2g} pb "
            f"({kb} accepted); ratio {a / b:.3f}, pull {(a - b) / np.hypot(da, db):+.2f}")


def dropped_channels(process: str, detector: str, n_generated: int, seed: int) -> dict:
    """Plain events: how many pass the preselection, and how many of those are in a channel forced decays drop."""
    import awkward as ak

    from crossfed.generate.core import BATCH_EVENTS, _select
    from crossfed.generate.detector import DETECTORS
    from crossfed.generate.processes import pythia_settings
    from crossfed.generate.pythia import ChargeTable, initialise, new_pythia, next_batch, silenced_stdout, truth_batch

    settings = pythia_settings(process)
    pythia = new_pythia(settings, seed=seed)
    initialise(pythia, settings)
    charges, rng, generated, selected, dropped = ChargeTable(pythia), np.random.default_rng(seed), 0, 0, 0
    with silenced_stdout():
        while generated < n_generated:
            batch, _ = next_batch(pythia, min(BATCH_EVENTS, n_generated - generated))
            kept, n_batch = _select(truth_batch(batch, charges), DETECTORS[detector], rng, preselect=True)
            fields = batch.prt[["id", "mother1", "daughter1", "daughter2"]]
            for position, _ in kept:
                selected += 1
                dropped += _dropped_channel(ak.to_list(fields[position]))
            generated += n_batch
    return dict(process=process, generated=generated, selected=selected, dropped=dropped)


def _dropped_channel(particles: list[dict]) -> bool:
    """The event has W's, none decays to e/mu, and not two to tau; a lone W -> tau nu has a hadronic tau."""
    ids = [abs(p["id"]) for p in particles]
    w_leptons = [i for i, p in enumerate(particles) if ids[i] in (11, 13, 15) and ids[p["mother1"]] == 24]
    if 24 not in ids or any(ids[i] != 15 for i in w_leptons) or len(w_leptons) >= 2:
        return False
    if not w_leptons:
        return True  # all W's to quarks
    tau = w_leptons[0]
    while True:  # follow the tau's copies to the one that decays
        first, last = particles[tau]["daughter1"], particles[tau]["daughter2"]
        daughters = list(range(first, max(first, last) + 1)) if first > 0 else []
        copies = [d for d in daughters if ids[d] == 15]
        if not copies:
            return not any(ids[d] in (11, 13) for d in daughters)
        tau = copies[0]


def main() -> None:
    import ray

    from crossfed.generate import bias, connect_ray
    from crossfed.generate.recipe import mixture_counts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2500, help="selected events per labelled sample")
    parser.add_argument("--pilot-events", type=int, default=15000, help="generated plain events per pilot, part 2")
    parser.add_argument("--truth-events", type=int, default=5000, help="generated plain events per process, part 3")
    parser.add_argument("--detector", default="cms")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--parts", default="samples,pilots,truth")
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    labelled, mixture = ("ttbar", "tth", "hplus"), ("ttbar", "single_top")
    with connect_ray(), tempfile.TemporaryDirectory() as scratch:
        truth = [ray.remote(dropped_channels).options(num_cpus=1).remote(p, args.detector, args.truth_events, 31 + i)
                 for i, p in enumerate((*labelled, "single_top"))] if "truth" in parts else []
        if "samples" in parts:
            made = samples({p: args.events for p in labelled} | {"single_top": args.events // 4},
                           args.detector, args.workers, Path(scratch))
            print(f"\nforced decays vs plain, {args.detector}; KS flags CDF differences above "
                  f"{bias.ks_critical_distance(args.events, args.events):.3f} at p <= {bias.P_VALUE_THRESHOLD}")
            for process in labelled:
                (fast, fast_meta), (plain, plain_meta) = made[(process, True)], made[(process, False)]
                print(f"\n{process}: efficiency {fast_meta['efficiency']:.3f} (forced) vs {plain_meta['efficiency']:.3f}; "
                      f"sigma x efficiency pull {bias.cross_section_pull(fast_meta, plain_meta):+.2f}")
                print(bias.format_table(bias.compare(fast, plain)))
            mixed = {}
            for forced in (True, False):
                rates = {p: made[(p, forced)][1]["cross_section_pb"] * made[(p, forced)][1]["efficiency"] for p in mixture}
                counts = mixture_counts(rates, args.events)
                n = {p: min(c, len(made[(p, forced)][0]["ht"])) for p, c in counts.items()}
                print(f"\nmixture ({'forced' if forced else 'plain'}): weights "
                      + ", ".join(f"{p} {r:.2f} pb" for p, r in rates.items()) + f"; events {n}")
                mixed[forced] = {o: np.concatenate([made[(p, forced)][0][o][:n[p]] for p in n]) for o in bias.OBSERVABLES}
            print(f"single_top sigma x efficiency pull "
                  f"{bias.cross_section_pull(made[('single_top', True)][1], made[('single_top', False)][1]):+.2f}")
            print(bias.format_table(bias.compare(mixed[True], mixed[False])))
        if "pilots" in parts:
            print("\nmixture weights sigma x efficiency from pilot runs (fixed generated counts):")
            for process in mixture:
                print(pilot_pull(process, args.detector, args.pilot_events, args.workers))
        if truth:
            print("\nplain selected events in a channel forced decays drop (truth level):")
        for result in ray.get(truth):
            k, n = result["dropped"], result["selected"]
            print(f"  {result['process']:10s}: {k} of {n} selected ({100 * k / n:.2f}%; 95% upper limit "
                  f"{100 * _upper_limit(k, n):.2f}%) from {result['generated']} generated")


def _upper_limit(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper limit on a binomial fraction."""
    from scipy import stats

    return 1.0 if k >= n else float(stats.beta.ppf(confidence, k + 1, n - k))


if __name__ == "__main__":
    main()
