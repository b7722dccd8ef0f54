"""Running a sweep on Ray Tune: the trials, resuming an interrupted sweep, and telling an interruption.

Owns: the Tune objects made from a `Sweep` (search space, per-trial resources, scheduler, search
algorithm, concurrency), the trial body (one whole federation that reports every round with a tiny
checkpoint naming its MLflow run), the sweep's parent MLflow run and its state file, `--resume`, and
Ctrl-C. What a finished sweep leaves behind (ranking, best.yaml, registration) is `outcome.py`'s.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
from pathlib import Path
from typing import Any

from crossfed.config import RunConfig, apply_overrides, config_from_dict
from crossfed.errors import CrossfedError
from crossfed.sweep.outcome import SweepResult, finish, trial_runs
from crossfed.sweep.spec import Sweep, distribution, distribution_args


class SweepInterrupted(CrossfedError):
    exit_code = 130


def run_sweep(path: str | Path, *, resume: bool = False, address: str | None = None,
              trial_tracebacks: bool = False) -> SweepResult:
    """Run (or with `resume`, continue) the sweep. A failed trial is a row with its one-line reason and
    error file; `trial_tracebacks` also lets Tune log its whole traceback as it happens."""
    from crossfed.ray_session import connect_ray

    sweep = Sweep(path)
    experiment_dir = storage_dir(sweep) / sweep.name
    state_file = experiment_dir / "crossfed-sweep.json"
    if resume and not state_file.exists():
        raise CrossfedError(f"{sweep.path}: nothing to resume: no sweep state in {experiment_dir}")
    if not resume and state_file.exists():
        raise CrossfedError(
            f"{sweep.path}: a sweep named {sweep.name!r} already exists in {experiment_dir}; "
            f"continue it with --resume, or remove that folder"
        )
    pin_to_working_directory(sweep)
    with connect_ray(address, log_to_driver=False):
        if not trial_tracebacks:
            logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
        parent_run_id = json.loads(state_file.read_text())["parent_run_id"] if resume else _start(sweep, state_file)
        tuner = _tuner(sweep, parent_run_id, resume)
        handler_before = signal.getsignal(signal.SIGINT)
        results = tuner.fit()
        # Tune's loop ends when every trial has ended or on Ctrl-C. Its SIGINT handler puts the previous
        # handler back when it fires, which is the one sure sign of an interruption (a trial's result flags
        # are not: one that ended just as Tune stopped may lack done=True).
        if _tune_was_interrupted(handler_before):
            unfinished = sum(1 for r in results if r.error is None and not (r.metrics or {}).get("done"))
            raise SweepInterrupted(
                f"sweep {sweep.name!r} interrupted with {unfinished} trial(s) unfinished; "
                f"continue it with: crossfed sweep --resume {sweep.path}"
            )
        return finish(sweep, results, parent_run_id, experiment_dir)


def pin_to_working_directory(sweep: Sweep) -> None:
    """Tune runs each trial in a folder of its own: the settings a config takes relative to the working
    directory (`output_dir`, `data.cache_dir`, the MLflow store, by default `mlflow.db`) are made
    absolute in the trials' base config, so that every trial writes where the sweep itself does. Without
    this a trial logged to an MLflow store of its own, where the sweep's parent run is not."""
    from crossfed.tracking import tracking_uri

    raw = sweep.base_raw
    raw["output_dir"] = str(Path(raw["output_dir"]).resolve())
    raw["data"]["cache_dir"] = str(Path(raw["data"]["cache_dir"]).resolve())
    raw["tracking"]["uri"] = tracking_uri(sweep.base.tracking)


def storage_dir(sweep: Sweep) -> Path:
    """Where Tune keeps the sweep's trials (one folder per sweep) and ASHA its rung scores: a local folder
    below output_dir. (The trials' federations checkpoint to the run storage, which CROSSFED_STORAGE may
    point at a URI.)"""
    from crossfed.storage import is_uri

    if is_uri(sweep.base.output_dir):
        raise CrossfedError(
            f"{sweep.path}: output_dir {sweep.base.output_dir}: a sweep keeps Ray Tune's state in a local folder; "
            f"give output_dir a folder, and the URI to CROSSFED_STORAGE for the trials' checkpoints")
    return Path(sweep.base.output_dir).resolve() / "sweeps"


def _start(sweep: Sweep, state_file: Path) -> str:
    """The sweep's parent MLflow run (holding the sweep file), remembered for --resume; its id."""
    import mlflow

    from crossfed import tracking
    from crossfed.atomic import write_text_atomically

    with tracking.start_run(sweep.base, run_name=f"sweep-{sweep.name}", mode="sweep") as parent:
        mlflow.log_text(sweep.path.read_text(), "sweep.yaml")
        mlflow.set_tags({"crossfed.sweep.metric": sweep.spec.metric, "crossfed.sweep.mode": sweep.spec.mode})
    write_text_atomically(state_file, json.dumps({"parent_run_id": parent.info.run_id,
                                                  "sweep": str(sweep.path.resolve())}))
    return parent.info.run_id


def _tuner(sweep: Sweep, parent_run_id: str, resume: bool):
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(_trial, base_raw=sweep.base_raw, source=str(sweep.path), parent_run_id=parent_run_id),
        trial_resources(sweep),
    )
    storage = storage_dir(sweep)
    if resume:
        return tune.Tuner.restore(str(storage / sweep.name), trainable, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=param_space(sweep),
        tune_config=tune.TuneConfig(
            metric=sweep.spec.metric,
            mode=sweep.spec.mode,
            num_samples=sweep.spec.num_samples or (1 if sweep.spec.algorithm == "grid" else 8),
            scheduler=_scheduler(sweep),
            search_alg=_search_algorithm(sweep),
            max_concurrent_trials=sweep.spec.max_concurrent or concurrent_trials(sweep),
        ),
        run_config=tune.RunConfig(name=sweep.name, storage_path=str(storage), verbose=0),
    )


def _tune_was_interrupted(handler_before) -> bool:
    tune_catches_sigint = (threading.current_thread() is threading.main_thread()
                           and not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0")))
    return tune_catches_sigint and signal.getsignal(signal.SIGINT) is handler_before


# -- Tune objects from the spec -------------------------------------------------------------------
def param_space(sweep: Sweep) -> dict[str, Any]:
    from ray import tune

    grid = sweep.spec.algorithm == "grid"
    space = {}
    for key, dimension in sweep.spec.space.items():
        kind = distribution(dimension)
        args = distribution_args(dimension) if kind else None
        if kind == "grid" or (grid and kind == "choice"):
            space[key] = tune.grid_search(list(args))
        elif kind == "choice":
            space[key] = tune.choice(list(args))
        elif kind == "uniform":
            space[key] = tune.uniform(*args)
        elif kind == "loguniform":
            space[key] = tune.loguniform(*args)
        elif kind == "randint":
            space[key] = tune.randint(*args)
        else:
            space[key] = dimension  # a constant
    return space


def trial_resources(sweep: Sweep):
    """One bundle per worker of every client, pinned like the clients themselves are."""
    from ray import tune

    from crossfed.federation.placement import EXPERIMENT_LABEL

    bundles, selectors = [{}], []
    for experiment in sweep.base.experiments.values():
        cluster = experiment.cluster
        for _ in range(cluster.workers):
            bundles.append({"CPU": cluster.cpus_per_worker, "GPU": cluster.gpus_per_worker})
            selectors.append({EXPERIMENT_LABEL: cluster.node_group} if cluster.node_group else {})
    if any(selectors):
        return tune.PlacementGroupFactory(bundles, strategy="PACK", bundle_label_selector=selectors)
    return tune.PlacementGroupFactory(bundles, strategy="PACK")


def concurrent_trials(sweep: Sweep) -> int:
    """How many trials the cluster can host at once, from its CPUs and GPUs and one trial's needs."""
    import ray

    total = ray.cluster_resources()
    need_cpu = sum(e.cluster.workers * e.cluster.cpus_per_worker for e in sweep.base.experiments.values())
    need_gpu = sum(e.cluster.workers * e.cluster.gpus_per_worker for e in sweep.base.experiments.values())
    fits = [math.floor(total.get("CPU", 0) / need_cpu)] if need_cpu else []
    if need_gpu:
        fits.append(math.floor(total.get("GPU", 0) / need_gpu))
    return max(1, min(fits)) if fits else 1


def _scheduler(sweep: Sweep):
    from ray.tune.schedulers import FIFOScheduler

    from crossfed.sweep.asha import RoundASHA

    if not sweep.spec.asha.enabled:
        return FIFOScheduler()
    return RoundASHA(
        rounds=sweep.base.federation.rounds,
        grace_period=sweep.spec.asha.grace_period,
        reduction_factor=sweep.spec.asha.reduction_factor,
        # Beside Tune's folder, not in it: Tune copies its folder back over itself on restore.
        state_file=storage_dir(sweep) / f"{sweep.name}.asha.pkl",
    )


def _search_algorithm(sweep: Sweep):
    if sweep.spec.algorithm != "optuna":
        return None  # Tune's BasicVariantGenerator: random sampling, grid_search expanded
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch()


# -- a trial --------------------------------------------------------------------------------------
def _trial(params: dict[str, Any], *, base_raw: dict, source: str, parent_run_id: str) -> None:
    """One Tune trial: a whole federation that reports every round whose global model was evaluated (every
    `federation.evaluate_every` rounds and the last: a report holds the sweep's metric, which Tune requires;
    ASHA's rungs, counted in rounds, take the first report at or after each rung).

    Each report carries a tiny Tune checkpoint naming the federation's MLflow run, so a trial
    interrupted with its sweep continues that same federation from its last completed round.
    """
    import tempfile

    import mlflow
    from ray import tune
    from ray.util import get_current_placement_group

    from crossfed.federation import run_federation
    from crossfed.federation.driver import periodic_round

    config = config_from_dict(apply_overrides(base_raw, params), source=source)
    trial_id = tune.get_context().get_trial_id()
    if (checkpoint := tune.get_checkpoint()) is not None:
        with checkpoint.as_directory() as folder:
            resume = json.loads((Path(folder) / "federation.json").read_text())["run_id"]
    else:
        resume = _unreported_run(config, parent_run_id, trial_id)

    reported = []
    fed = config.federation

    def report(round_index: int, metrics: dict[str, float], run_id: str | None = None) -> None:
        if not periodic_round(round_index, fed.evaluate_every, fed.rounds):
            return
        run_id = run_id or mlflow.active_run().info.run_id  # given once the federation's run has ended
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "federation.json").write_text(json.dumps({"run_id": run_id}))
            tune.report({**metrics, "round": round_index}, checkpoint=tune.Checkpoint.from_directory(folder))
        reported.append(round_index)

    result = run_federation(
        config,
        mode="federated",
        resume=resume,
        on_round=report,
        placement_group=get_current_placement_group(),
        parent_run_id=parent_run_id,
        run_name=trial_id,
        register_model=False,  # the sweep registers its best trial's model only
    )
    if not reported and result.history:
        # The federation had already run its last round when the sweep was interrupted, before Tune
        # recorded that round: report it again so that the trial ends on its final result.
        report(result.history[-1]["round"], result.history[-1], result.run_id)


def _unreported_run(config: RunConfig, parent_run_id: str, trial_id: str) -> str | None:
    """The trial's federation run from before an interruption that came before its first Tune report.

    It is continued: from its newest committed round, or, if it never committed one (stopped while its
    clients were starting), from its initial model, so the trial keeps exactly one MLflow run.
    """
    earlier = trial_runs(config, parent_run_id).get(trial_id)
    return earlier.info.run_id if earlier is not None else None
