"""`run_federation`: one engine for the federation and its baselines, logged and checkpointed alike.

- federated: one client per experiment, each on its node group; shared groups from `federation.shared`.
- local: one client on one experiment (`experiment=`), `training.steps` steps split over the rounds.
- centralized: one client holding every experiment's events (the pooled baseline), same steps.
Baselines share every parameter group (nothing is private from oneself) and skip strategy and DP.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable

from crossfed.config import ClusterConfig, RunConfig
from crossfed.errors import CrossfedError, innermost_cause
from crossfed.federation import MODES
from crossfed.federation.driver import ClientSpec, RoundPlan, driver_actor_class
from crossfed.federation.result import FederationResult, load_state
from crossfed.ray_session import connect_ray

log = logging.getLogger(__name__)
ALL_GROUPS = ["adapter", "backbone", "heads"]


def plan_rounds(config: RunConfig, mode: str, experiment: str | None) -> RoundPlan:
    fed = config.federation
    if mode not in MODES:
        raise CrossfedError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "local" and experiment not in config.experiments:
        raise CrossfedError(
            f"local mode needs --experiment, one of {', '.join(config.experiments)} (got {experiment!r})"
        )
    for name, exp in config.experiments.items():
        if exp.pretrain is None and (mode != "local" or name == experiment):
            raise CrossfedError(f"experiments.{name}.pretrain: no pre-training dataset configured")
    if mode == "federated":
        clients = [ClientSpec(name, [name], exp.cluster) for name, exp in config.experiments.items()]
        if fed.privacy.enabled:
            from crossfed.federation.privacy import check_planned_budget

            check_planned_budget(fed.privacy, len(clients), fed.clients_per_round, fed.rounds)
        return RoundPlan(clients, list(fed.shared), [fed.local_steps] * fed.rounds, federated=True)
    # Baselines: training.steps in total, spread over the rounds so that they log per-round curves too.
    rounds = min(fed.rounds, config.training.steps)
    steps = [config.training.steps // rounds + (1 if r < config.training.steps % rounds else 0) for r in range(rounds)]
    if mode == "local":
        clients = [ClientSpec(experiment, [experiment], config.experiments[experiment].cluster)]
    else:
        # Pooled data is assumed readable anywhere: the first experiment's worker shape, no node group.
        first = next(iter(config.experiments.values())).cluster
        clients = [ClientSpec("centralized", list(config.experiments), ClusterConfig(
            node_group=None, workers=first.workers, cpus_per_worker=first.cpus_per_worker,
            gpus_per_worker=first.gpus_per_worker))]
    return RoundPlan(clients, ALL_GROUPS, steps, federated=False)


@contextlib.contextmanager
def tracking_run(config: RunConfig, mode: str, resume: str | None, parent_run_id: str | None, run_name: str | None):
    """A new MLflow parent run, or the resumed run re-opened (its params and tags are already there)."""
    import mlflow

    from crossfed import tracking

    if resume is None:
        with tracking.start_run(config, run_name or f"{config.name}-{mode}", mode=mode,
                                parent_run_id=parent_run_id) as run:
            yield run
        return
    mlflow.set_tracking_uri(tracking.tracking_uri(config.tracking))
    found = tracking.find_run(resume)
    logged_mode = found.data.tags.get("crossfed.mode")
    if logged_mode and logged_mode != mode:
        raise CrossfedError(f"run {found.info.run_id} was a {logged_mode} run; resume it with --mode {logged_mode}")
    with mlflow.start_run(run_id=found.info.run_id) as run:
        yield run


def unwrap_ray_error(err: Exception) -> Exception:
    """A CrossfedError raised inside an actor, as the plain one-line CrossfedError it was."""
    cause = innermost_cause(err)
    return CrossfedError(str(cause)) if isinstance(cause, CrossfedError) else err


def run_federation(
    config: RunConfig,
    *,
    mode: str = "federated",
    experiment: str | None = None,
    resume: str | None = None,
    on_round: Callable[[int, dict], None] | None = None,
    placement_group=None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    register_model: bool = True,
    address: str | None = None,
) -> FederationResult:
    """Pre-train by federation (or a baseline) on Ray; log to MLflow; checkpoint under output_dir/<run id>/.

    `resume`: a run id or name whose last completed round to continue from. `on_round(round_number,
    record)` is called after every completed round with its scalar record. `placement_group`: run the
    clients' workers in this group's bundles (in client order; a Tune trial's own bundle 0 is skipped)
    instead of one group per client. `register_model=False` logs the final model without registering a
    version (a sweep registers only its best trial's). Ray: see `connect_ray`; `address` is a cluster to
    join when no Ray is initialised (default RAY_ADDRESS, else an embedded local Ray for this call). The
    plan is checked before any Ray starts: a wrong mode or experiment costs no start-up.
    """
    plan = plan_rounds(config, mode, experiment)
    with connect_ray(address):
        if placement_group is None:
            _check_node_groups(plan)  # before anything is logged or written; the driver checks again
        return _run_tracked(config, plan, mode, resume, on_round, placement_group, parent_run_id, run_name,
                            register_model)


def _run_tracked(config, plan, mode, resume, on_round, placement_group, parent_run_id, run_name,
                 register_model) -> FederationResult:
    import mlflow

    with tracking_run(config, mode, resume, parent_run_id, run_name) as run:
        run_id = run.info.run_id
        run_dir = Path(config.output_dir).resolve() / run_id
        if resume is not None and not (run_dir / "latest").is_file():
            raise CrossfedError(f"cannot resume run {run_id}: no completed round under {run_dir}")
        run_dir.mkdir(parents=True, exist_ok=True)
        driver = _start_driver(config, plan, run_dir, resume is not None, placement_group)
        try:
            history = _run_rounds(driver, plan, on_round)
            final = _get(driver.finish.remote())
        finally:
            _stop_driver(driver)
        for client, footprint in final["footprints"].items():
            mlflow.log_metrics({f"client/{client}/{k}": v for k, v in footprint.items()})
        _log_final_model(config, run_id, final["global_state_path"], register_model)
        return FederationResult(run_id, str(run_dir), final["global_state_path"], history, final["client_models"])


def _check_node_groups(plan: RoundPlan) -> None:
    from crossfed.federation.placement import check_feasible

    free = None
    for spec in plan.clients:
        free = check_feasible(spec.cluster, spec.name, free)


def _get(ref):
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:
        raise unwrap_ray_error(err) from None


def _start_driver(config: RunConfig, plan: RoundPlan, run_dir: Path, resume: bool, placement_group):
    """The driver actor, on this process's node so its checkpoints land where this process can read them."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    # Named, so an operator (or a test) can find a running federation: ray.get_actor("crossfed-driver-<run id>").
    driver = driver_actor_class().options(scheduling_strategy=here, name=f"crossfed-driver-{run_dir.name}").remote(
        config, plan, str(run_dir))
    try:
        _get(driver.start.remote(resume, placement_group))
    except BaseException:
        _stop_driver(driver)
        raise
    return driver


def _stop_driver(driver) -> None:
    import ray

    with contextlib.suppress(Exception):
        ray.get(driver.shutdown.remote(), timeout=60)
    ray.kill(driver, no_restart=True)


def _run_rounds(driver, plan: RoundPlan, on_round) -> list[dict]:
    import mlflow

    completed, history = _get(driver.state.remote())
    for _ in range(completed, len(plan.steps_per_round)):
        record = _get(driver.run_round.remote())
        mlflow.log_metrics({k: float(v) for k, v in record.items() if k != "round"}, step=record["round"])
        history.append(record)
        if on_round is not None:
            on_round(record["round"], record)
    return history


FINAL_MODEL_ARTIFACT = "model"


def _log_final_model(config: RunConfig, run_id: str, global_state_path: str, register: bool) -> None:
    import mlflow

    from crossfed import tracking

    tracking.log_state_dict(load_state(global_state_path), FINAL_MODEL_ARTIFACT)
    if register:
        version = tracking.register_model(run_id, FINAL_MODEL_ARTIFACT, config.tracking.registered_model)
        mlflow.set_tag("crossfed.model_version", version)


def validation_metric_keys(config: RunConfig) -> list[str]:
    """What each client's evaluation reports: `loss` and every task's metrics as `<task>/<metric>`."""
    from crossfed.tasks import get_task

    return ["loss"] + [f"{task}/{metric}" for task in config.training.tasks for metric in get_task(task).metrics]


def round_metric_names(config: RunConfig) -> list[str]:
    """The global metrics every round of a federation reports, whatever the clients: what a sweep may
    optimise. Under DP only the noised validation metrics (with `metric_noise_multiplier`) and ε, unless
    `per_client_metrics`."""
    validation = [f"global/val_{key}" for key in validation_metric_keys(config)]
    privacy = config.federation.privacy
    if privacy.enabled and not privacy.per_client_metrics:
        return (validation if privacy.metric_noise_multiplier is not None else []) + ["privacy/epsilon"]
    names = validation + ["bytes/sent", "bytes/received", "time/local_compute_s", "time/transfer_s",
                          "time/aggregation_s"]
    return names + (["privacy/epsilon"] if privacy.enabled else [])
