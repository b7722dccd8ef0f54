"""What a finished sweep leaves behind: the trials ranked, `best.yaml`, and the best model registered.

Owns: one row per trial (its parameters, metric value, rounds, whether it left a model, and for a failed
trial the one-line reason and its error file), the ranking (the best is the best of the trials that
completed with a finite metric and a model), the best configuration written out as a runnable config, the
outcome on the sweep's parent MLflow run (best value, best trial, final run statuses), and the model
registry version of the best trial's model. Also `trial_runs`, how a trial's MLflow run is found.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from crossfed.atomic import write_text_atomically
from crossfed.config import RunConfig, apply_overrides, config_from_dict
from crossfed.errors import CrossfedError, one_line_reason
from crossfed.sweep.spec import Sweep


class SweepResult:
    def __init__(self, rows: list[dict[str, Any]], best_config_path: Path | None, parent_run_id: str):
        self.rows = rows  # best first
        self.best_config_path = best_config_path
        self.parent_run_id = parent_run_id


def finish(sweep: Sweep, results, parent_run_id: str, experiment_dir: Path) -> SweepResult:
    """Rank Tune's trial results, write `best.yaml` beside Tune's folder, log the outcome to MLflow."""
    runs = trial_runs(sweep.base, parent_run_id)
    rows = [trial_row(sweep, result) for result in results]
    for row in rows:
        row["model"] = has_model(sweep.base, runs.get(row["trial"]))
    rows = ranked(sweep, rows)
    best = rows[0]
    best_config = config_from_dict(apply_overrides(sweep.base_raw, best["params"]), source="best trial")
    best_path = experiment_dir / "best.yaml"
    write_text_atomically(
        best_path,
        f"# Best configuration of sweep {sweep.name!r} ({sweep.spec.metric} = {best['value']:.6g})\n"
        + best_config.to_yaml(),
    )
    _log_outcome(sweep, parent_run_id, rows, best, best_path)
    return SweepResult(rows, best_path, parent_run_id)


def trial_row(sweep: Sweep, result) -> dict[str, Any]:
    """One Tune trial result as a table row."""
    metrics = result.metrics or {}
    return {
        "trial": metrics.get("trial_id") or _trial_id_from_path(result.path),
        "params": dict(result.config or {}),
        "value": metrics.get(sweep.spec.metric),
        "rounds": metrics.get("round", 0),
        "error": one_line_reason(result.error) if result.error else None,
        "error_file": str(Path(result.path) / "error.txt") if result.error and result.path else None,
    }


def completed(row: dict) -> bool:
    """A trial that can be the best: it ran to its end without error, with a finite metric and a model.
    A trial that failed after reporting, or one ASHA stopped early, has a value but no final model."""
    value = row["value"]
    return (row["error"] is None and row.get("model", False)
            and isinstance(value, (int, float)) and math.isfinite(value))


def ranked(sweep: Sweep, rows: list[dict]) -> list[dict]:
    """The completed trials best first by the sweep's metric and mode, then the others (by their last
    value, those without one last). A sweep where no trial completed has no outcome: an error naming the
    first trial error."""
    if not any(completed(r) for r in rows):
        raise CrossfedError(
            f"{sweep.path}: no trial completed with a finite {sweep.spec.metric!r} and a model; first error: "
            f"{next((r['error'] for r in rows if r['error']), 'none')}"
        )
    sign = -1.0 if sweep.spec.mode == "max" else 1.0

    def key(row):
        value = row["value"]
        scored = isinstance(value, (int, float)) and math.isfinite(value)
        return (not completed(row), not scored, sign * value if scored else 0.0)

    return sorted(rows, key=key)


def has_model(config: RunConfig, run) -> bool:
    """Whether a trial's MLflow run (None: it has none) logged its final model."""
    import mlflow

    from crossfed import tracking
    from crossfed.federation.rounds import FINAL_MODEL_ARTIFACT

    if run is None:
        return False
    client = mlflow.MlflowClient(tracking.tracking_uri(config.tracking))
    return bool(client.list_artifacts(run.info.run_id, FINAL_MODEL_ARTIFACT))


def _trial_id_from_path(path: str | None) -> str:
    """A trial that failed before its first report has no metrics; Tune names its folder
    `_trial_<trial id>_<index>_<params>_<time>`, and its MLflow run is named by that trial id."""
    name = Path(path).name if path else "?"
    found = re.match(r"_?trial_([0-9a-f]+_\d+)_", name)
    return found.group(1) if found else name


def _log_outcome(sweep: Sweep, parent_run_id: str, rows: list[dict], best: dict, best_path: Path) -> None:
    """On the sweep's parent run: the best value and config; the best trial's model is registered, with the
    alias `champion` (`models:/NAME@champion` is the best sweep's newest)."""
    import mlflow

    from crossfed import tracking
    from crossfed.federation.rounds import FINAL_MODEL_ARTIFACT

    client = mlflow.MlflowClient(tracking.tracking_uri(sweep.base.tracking))
    client.log_metric(parent_run_id, f"best_{sweep.spec.metric}", float(best["value"]))
    client.set_tag(parent_run_id, "crossfed.sweep.best_trial", best["trial"])
    client.log_artifact(parent_run_id, str(best_path))
    runs = trial_runs(sweep.base, parent_run_id)
    failed = {row["trial"] for row in rows if row["error"]}
    for name, run in runs.items():
        # Tune stops a trial by ending its function mid-round, which MLflow records as FAILED (or leaves
        # RUNNING): a trial the scheduler stopped early is KILLED, one that raised stays FAILED.
        if run.info.status != "FINISHED" and name not in failed:
            client.set_terminated(run.info.run_id, "KILLED")
            client.set_tag(run.info.run_id, "crossfed.sweep.stopped_early", "true")
        elif run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "FAILED")
    client.set_terminated(parent_run_id, "FINISHED")
    trial_run = runs.get(best["trial"])
    if trial_run is not None:
        version = tracking.register_model(trial_run.info.run_id, FINAL_MODEL_ARTIFACT,
                                          tracking.registered_model_name(sweep.base), alias="champion")
        client.set_tag(parent_run_id, "crossfed.sweep.best_model_version", version)


def trial_runs(config: RunConfig, parent_run_id: str) -> dict:
    """The sweep's child runs by trial name; of a trial run twice (an interrupted sweep), the newest."""
    import mlflow

    from crossfed import tracking

    client = mlflow.MlflowClient(tracking.tracking_uri(config.tracking))
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'", order_by=["attributes.start_time ASC"]
    )
    return {run.info.run_name: run for run in runs}
