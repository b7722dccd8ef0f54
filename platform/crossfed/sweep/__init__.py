"""Hyperparameter sweeps of whole federations with Ray Tune, logged to MLflow.

A sweep file names a base run configuration, a search space over dotted config keys
(``federation.strategy.server_lr: {loguniform: [1e-3, 1]}``), the metric to optimise and the search
algorithm. Each trial is one complete federation (`run_federation`) that reports after every round,
so ASHA can stop a poor federation early. Every trial reserves its clients' workers through a
placement-group factory, so concurrent trials never oversubscribe the cluster.

One concern a file:
- `spec.py`     the sweep file, and all validation before any trial starts (`Sweep`);
- `runner.py`   the Tune runner: trials, resume and interruption (`run_sweep`);
- `outcome.py`  the ranked trials, `best.yaml` and the registered best model (`SweepResult`);
- `asha.py`     ASHA over federation rounds that survives an interrupted sweep (`RoundASHA`).
Ray is imported only when a sweep runs: `crossfed sweep --check` uses `Sweep` alone.
"""

from crossfed.sweep.outcome import SweepResult, trial_runs
from crossfed.sweep.runner import SweepInterrupted, run_sweep
from crossfed.sweep.spec import Sweep, SweepSpec

__all__ = ["Sweep", "SweepInterrupted", "SweepResult", "SweepSpec", "run_sweep", "trial_runs"]
