"""Hyperparameter sweeps of whole federations with Ray Tune, logged to MLflow.

A sweep file names a base run configuration, a search space over dotted config keys
(``federation.strategy.server_lr: {loguniform: [1e-3, 1]}``), the metric to optimise and the search
algorithm. Each trial is one complete federation (`run_federation`) that reports after every round,
so ASHA can stop a poor federation early. Every trial reserves its clients' workers through a
placement-group factory, so concurrent trials never oversubscribe the cluster.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
import signal
import threading
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PositiveInt, ValidationError

from crossfed.atomic import write_text_atomically
from crossfed.config import (
    RunConfig, apply_overrides, config_from_dict, describe_validation_error, load_config, read_yaml,
)
from crossfed.config.base import Section
from crossfed.errors import CrossfedError, did_you_mean, innermost_cause
from crossfed.federation.rounds import FINAL_MODEL_ARTIFACT

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")


class AshaConfig(Section):
    enabled: bool = True
    grace_period: PositiveInt = Field(1, description="rounds every trial runs before it may be stopped")
    reduction_factor: float = Field(2.0, gt=1.0)


class SweepSpec(Section):
    name: str | None = Field(None, description="defaults to the sweep file's stem")
    base: str = Field(description="run configuration every trial starts from (path relative to the sweep file)")
    metric: str = Field("global/val_loss", description="a global metric every round reports")
    mode: Literal["min", "max"] = "min"
    algorithm: Literal["random", "grid", "optuna"] = "random"
    num_samples: PositiveInt | None = Field(
        None, description="trials (random, optuna; default 8); repetitions of the whole grid (grid; default 1)"
    )
    max_concurrent: PositiveInt | None = Field(None, description="None: as many as the cluster's resources allow")
    asha: AshaConfig = AshaConfig()
    overrides: dict[str, Any] = Field(default_factory=dict, description="fixed settings applied to every trial")
    space: dict[str, Any] = Field(min_length=1)


class Sweep:
    """A loaded, validated sweep: spec, the fully resolved base config, and the search space."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        raw = read_yaml(self.path)
        if not isinstance(raw, dict):
            raise CrossfedError(f"{self.path}: a sweep file must be a mapping")
        try:
            self.spec = SweepSpec.model_validate(raw)
        except ValidationError as err:
            raise CrossfedError(describe_validation_error(err, str(self.path))) from None
        self.name = self.spec.name or self.path.stem
        base_path = self.path.parent / self.spec.base
        base = load_config(base_path, self.spec.overrides or None)
        # The resolved base (absolute data paths) so that a written-out best config runs from anywhere.
        self.base_raw = base.model_dump(mode="json", by_alias=True)
        self.base = base
        self._validate_space()

    # -- validation, before any trial starts ---------------------------------------------------
    def _validate_space(self) -> None:
        for key, dimension in self.spec.space.items():
            check_config_key(key, self.base, source=f"{self.path}: space")
            for value in candidate_values(key, dimension, source=str(self.path)):
                try:
                    config_from_dict(apply_overrides(self.base_raw, {key: value}), source=f"{self.path}: space.{key}")
                except CrossfedError as err:
                    raise CrossfedError(f"{self.path}: space.{key} = {value!r} is not a valid setting: {err}") from None
        from crossfed.federation.rounds import round_metric_names

        reported = round_metric_names(self.base)
        if self.spec.metric not in reported:
            raise CrossfedError(
                f"{self.path}: metric {self.spec.metric!r} is not reported by any trial"
                f"{did_you_mean(self.spec.metric, reported)}; "
                f"every round reports: {', '.join(reported)}"
            )
        if self.spec.algorithm == "optuna":
            try:
                import optuna  # noqa: F401 - only whether it is installed
            except ImportError:
                raise CrossfedError(f"{self.path}: algorithm 'optuna' needs `pip install optuna`") from None
            if any(_kind(d) == "grid" for d in self.spec.space.values()):
                raise CrossfedError(f"{self.path}: 'grid' dimensions need algorithm 'grid' or 'random', not 'optuna'")

    # -- Ray Tune objects ----------------------------------------------------------------------
    def param_space(self) -> dict[str, Any]:
        from ray import tune

        grid = self.spec.algorithm == "grid"
        space = {}
        for key, dimension in self.spec.space.items():
            kind = _kind(dimension)
            args = _args(dimension) if kind else None
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

    def trial_resources(self):
        """One bundle per worker of every client, pinned like the clients themselves are."""
        from ray import tune

        from crossfed.federation.placement import EXPERIMENT_LABEL

        bundles, selectors = [{}], []
        for experiment in self.base.experiments.values():
            cluster = experiment.cluster
            for _ in range(cluster.workers):
                bundles.append({"CPU": cluster.cpus_per_worker, "GPU": cluster.gpus_per_worker})
                selectors.append({EXPERIMENT_LABEL: cluster.node_group} if cluster.node_group else {})
        if any(selectors):
            return tune.PlacementGroupFactory(bundles, strategy="PACK", bundle_label_selector=selectors)
        return tune.PlacementGroupFactory(bundles, strategy="PACK")

    def storage_dir(self) -> Path:
        return Path(self.base.output_dir).resolve() / "sweeps"


def _kind(dimension: Any) -> str | None:
    if isinstance(dimension, dict) and len(dimension) == 1 and next(iter(dimension)) in DISTRIBUTIONS:
        return next(iter(dimension))
    return None


def _args(dimension: dict) -> Any:
    return next(iter(dimension.values()))


def candidate_values(key: str, dimension: Any, source: str) -> list[Any]:
    """The values a dimension can take that are worth checking: every choice, or a range's ends."""
    kind = _kind(dimension)
    if isinstance(dimension, dict) and kind is None:
        raise CrossfedError(
            f"{source}: space.{key}: a dimension is a constant or one of "
            f"{', '.join('{' + d + ': ...}' for d in DISTRIBUTIONS)}; got keys {sorted(dimension)}"
        )
    if kind is None:
        return [dimension]
    args = _args(dimension)
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise CrossfedError(f"{source}: space.{key}: {kind} needs a non-empty list of values")
        return args
    if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args)):
        raise CrossfedError(f"{source}: space.{key}: {kind} needs [low, high]")
    low, high = args
    if not low < high:
        raise CrossfedError(f"{source}: space.{key}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise CrossfedError(f"{source}: space.{key}: loguniform needs a positive low end")
    if kind == "randint":
        return [int(low), int(high) - 1]
    return [low, high]


def check_config_key(dotted: str, config: RunConfig, source: str) -> None:
    """Raise if `dotted` does not name a setting of the run configuration."""
    model: Any = type(config)
    walked = []
    for part in dotted.split("."):
        where = ".".join(walked) or "the run configuration"
        if model is None:
            raise CrossfedError(f"{source}: unknown hyperparameter {dotted!r}: {where} is a value, not a section")
        if isinstance(model, tuple) and model[0] == "dict":
            names = list(config.experiments) if walked == ["experiments"] else None
            if names is not None and part not in names:
                raise CrossfedError(
                    f"{source}: unknown hyperparameter {dotted!r}: no experiment {part!r} in the base config "
                    f"(it has {', '.join(names)})"
                )
            model = model[1]
        else:
            fields = {(f.alias or n): f for n, f in model.model_fields.items()}
            if part not in fields:
                close = difflib.get_close_matches(part, fields, n=1)
                hint = f" (did you mean {'.'.join(walked + [close[0]])!r}?)" if close else ""
                raise CrossfedError(f"{source}: unknown hyperparameter {dotted!r}{hint}")
            model = _section_type(fields[part].annotation)
        walked.append(part)


def _section_type(annotation: Any) -> Any:
    """The section model behind an annotation, ('dict', value section) for a mapping, None for a plain value."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        sections = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _section_type(sections[0]) if len(sections) == 1 else None
    if origin is dict:
        return ("dict", _section_type(typing.get_args(annotation)[1]))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


# -- running ------------------------------------------------------------------------------------
def _trial(params: dict[str, Any], *, base_raw: dict, source: str, parent_run_id: str) -> None:
    """One Tune trial: a whole federation that reports every round.

    Each report carries a tiny Tune checkpoint naming the federation's MLflow run, so a trial
    interrupted with its sweep continues that same federation from its last completed round.
    """
    import tempfile

    import mlflow
    from ray import tune
    from ray.util import get_current_placement_group

    from crossfed.federation import run_federation

    config = config_from_dict(apply_overrides(base_raw, params), source=source)
    trial_id = tune.get_context().get_trial_id()
    if (checkpoint := tune.get_checkpoint()) is not None:
        with checkpoint.as_directory() as folder:
            resume = json.loads((Path(folder) / "federation.json").read_text())["run_id"]
    else:
        resume = _unreported_run(config, parent_run_id, trial_id)

    reported = []

    def report(round_index: int, metrics: dict[str, float]) -> None:
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "federation.json").write_text(json.dumps({"run_id": mlflow.active_run().info.run_id}))
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
        report(result.history[-1]["round"], result.history[-1])


def _unreported_run(config: RunConfig, parent_run_id: str, trial_id: str) -> str | None:
    """The trial's federation run from before an interruption that came before its first Tune report.

    A run with a completed round is continued. One without (stopped while its clients were starting)
    holds nothing worth keeping: it is deleted so that the trial still has exactly one MLflow run.
    """
    import mlflow

    from crossfed import tracking

    earlier = trial_runs(config, parent_run_id).get(trial_id)
    if earlier is None:
        return None
    if (Path(config.output_dir).resolve() / earlier.info.run_id / "latest").is_file():
        return earlier.info.run_id
    mlflow.MlflowClient(tracking.tracking_uri(config.tracking)).delete_run(earlier.info.run_id)
    return None


def run_sweep(path: str | Path, *, resume: bool = False, address: str | None = None,
              trial_tracebacks: bool = False) -> SweepResult:
    """Run (or with `resume`, continue) the sweep. A failed trial is a row with its one-line reason and
    error file; `trial_tracebacks` also lets Tune log its whole traceback as it happens."""
    import ray
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from crossfed import tracking
    from crossfed.asha import RoundASHA

    sweep = Sweep(path)
    storage = sweep.storage_dir()
    experiment_dir = storage / sweep.name
    state_file = experiment_dir / "crossfed-sweep.json"
    if resume and not state_file.exists():
        raise CrossfedError(f"{sweep.path}: nothing to resume: no sweep state in {experiment_dir}")
    if not resume and state_file.exists():
        raise CrossfedError(
            f"{sweep.path}: a sweep named {sweep.name!r} already exists in {experiment_dir}; "
            f"continue it with --resume, or remove that folder"
        )
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", log_to_driver=False)
    if not trial_tracebacks:
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)

    if resume:
        parent_run_id = json.loads(state_file.read_text())["parent_run_id"]
    else:
        with tracking.start_run(sweep.base, run_name=f"sweep-{sweep.name}", mode="sweep") as parent:
            parent_run_id = parent.info.run_id
            _log_sweep_spec(sweep)
        experiment_dir.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps({"parent_run_id": parent_run_id, "sweep": str(sweep.path.resolve())}))

    trainable = tune.with_resources(
        tune.with_parameters(_trial, base_raw=sweep.base_raw, source=str(sweep.path), parent_run_id=parent_run_id),
        sweep.trial_resources(),
    )
    if resume:
        tuner = tune.Tuner.restore(str(experiment_dir), trainable, resume_unfinished=True, resume_errored=True)
    else:
        scheduler = (
            RoundASHA(
                rounds=sweep.base.federation.rounds,
                grace_period=sweep.spec.asha.grace_period,
                reduction_factor=sweep.spec.asha.reduction_factor,
                # Beside Tune's folder, not in it: Tune copies its folder back over itself on restore.
                state_file=storage / f"{sweep.name}.asha.json",
            )
            if sweep.spec.asha.enabled
            else FIFOScheduler()
        )
        tuner = tune.Tuner(
            trainable,
            param_space=sweep.param_space(),
            tune_config=tune.TuneConfig(
                metric=sweep.spec.metric,
                mode=sweep.spec.mode,
                num_samples=sweep.spec.num_samples or (1 if sweep.spec.algorithm == "grid" else 8),
                scheduler=scheduler,
                search_alg=_search_algorithm(sweep),
                max_concurrent_trials=sweep.spec.max_concurrent or concurrent_trials(sweep),
            ),
            run_config=tune.RunConfig(name=sweep.name, storage_path=str(storage), verbose=0),
        )
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
    return _finish(sweep, results, parent_run_id, experiment_dir)


def _tune_was_interrupted(handler_before) -> bool:
    tune_catches_sigint = (threading.current_thread() is threading.main_thread()
                           and not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0")))
    return tune_catches_sigint and signal.getsignal(signal.SIGINT) is handler_before


class SweepInterrupted(CrossfedError):
    exit_code = 130


def _search_algorithm(sweep: Sweep):
    if sweep.spec.algorithm != "optuna":
        return None  # Tune's BasicVariantGenerator: random sampling, grid_search expanded
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch()


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


class SweepResult:
    def __init__(self, rows: list[dict[str, Any]], best_config_path: Path | None, parent_run_id: str):
        self.rows = rows
        self.best_config_path = best_config_path
        self.parent_run_id = parent_run_id


def _finish(sweep: Sweep, results, parent_run_id: str, experiment_dir: Path) -> SweepResult:
    rows = []
    for result in results:
        metrics = result.metrics or {}
        rows.append(
            {
                "trial": metrics.get("trial_id") or _trial_id_from_path(result.path),
                "params": dict(result.config or {}),
                "value": metrics.get(sweep.spec.metric),
                "rounds": metrics.get("round", 0),
                "error": _trial_error(result.error) if result.error else None,
                "error_file": str(Path(result.path) / "error.txt") if result.error and result.path else None,
            }
        )
    scored = [r for r in rows if isinstance(r["value"], (int, float)) and math.isfinite(r["value"])]
    if not scored:
        raise CrossfedError(
            f"{sweep.path}: no trial reported {sweep.spec.metric!r}; first error: "
            f"{next((r['error'] for r in rows if r['error']), 'none')}"
        )
    reverse = sweep.spec.mode == "max"
    rows.sort(key=lambda r: (r["value"] is None, -(r["value"] or 0) if reverse else (r["value"] or 0)))
    best = rows[0]
    best_config = config_from_dict(apply_overrides(sweep.base_raw, best["params"]), source="best trial")
    best_path = experiment_dir / "best.yaml"
    write_text_atomically(
        best_path,
        f"# Best configuration of sweep {sweep.name!r} ({sweep.spec.metric} = {best['value']:.6g})\n"
        + best_config.to_yaml(),
    )
    _log_sweep_outcome(sweep, parent_run_id, rows, best, best_path)
    return SweepResult(rows, best_path, parent_run_id)


def _log_sweep_spec(sweep: Sweep) -> None:
    import mlflow

    mlflow.log_text(sweep.path.read_text(), "sweep.yaml")
    mlflow.set_tags({"crossfed.sweep.metric": sweep.spec.metric, "crossfed.sweep.mode": sweep.spec.mode})


def _trial_error(error: BaseException) -> str:
    """The one-line reason a trial failed: a CrossfedError's message, else the innermost exception's."""
    cause = innermost_cause(error)
    if isinstance(cause, CrossfedError):
        return str(cause)
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"


def _trial_id_from_path(path: str | None) -> str:
    """A trial that failed before its first report has no metrics; Tune names its folder
    `_trial_<trial id>_<index>_<params>_<time>`, and its MLflow run is named by that trial id."""
    name = Path(path).name if path else "?"
    found = re.match(r"_?trial_([0-9a-f]+_\d+)_", name)
    return found.group(1) if found else name


def _log_sweep_outcome(sweep: Sweep, parent_run_id: str, rows: list[dict], best: dict, best_path: Path) -> None:
    """On the sweep's parent run: the best value and config; the best trial's model is registered."""
    import mlflow

    from crossfed import tracking

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
                                          sweep.base.tracking.registered_model)
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
