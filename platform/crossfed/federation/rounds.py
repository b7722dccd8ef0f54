"""`run_federation`: one engine for the federation and its baselines, logged and checkpointed alike.

- federated: one client per experiment, each on its node group; shared groups from `federation.shared`.
- local: one client on one experiment (`experiment=`), `training.steps` steps split over the rounds.
- centralized: one client holding every experiment's events (the pooled baseline), same steps.
Baselines share every parameter group (nothing is private from oneself) and skip strategy and DP.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable

from crossfed.config import ClusterConfig, RunConfig
from crossfed.errors import CrossfedError, innermost_cause
from crossfed.federation import MODES
from crossfed.federation.driver import ClientSpec, RoundPlan, driver_actor_class
from crossfed.federation.result import FederationResult, load_state
from crossfed.ray_session import connect_ray
from crossfed.storage import Storage, storage_root

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


# Keys a resumed run may change: how long it goes on and how it is run, never what it computes.
RESUMABLE_KEYS = ("name", "output_dir", "federation.rounds", "federation.round_timeout_s",
                  "federation.max_round_retries", "checkpoint.", "tracking.", "data.cache_dir")


@contextlib.contextmanager
def tracking_run(config: RunConfig, mode: str, resume_id: str | None, parent_run_id: str | None,
                 run_name: str | None):
    """A new MLflow parent run, or the resumed run (checked by `resumable_run`) re-opened: its params
    and tags are already there."""
    import mlflow

    from crossfed import tracking

    if resume_id is None:
        with tracking.start_run(config, run_name or f"{config.name}-{mode}", mode=mode,
                                parent_run_id=parent_run_id) as run:
            yield run
        return
    mlflow.set_tracking_uri(tracking.tracking_uri(config.tracking))
    with mlflow.start_run(run_id=resume_id) as run:
        yield run


def resumable_run(config: RunConfig, mode: str, resume: str) -> str:
    """The id of the run `resume` names, after checking that it was run in this mode with this config
    (`RESUMABLE_KEYS` excepted). Needs only MLflow, so a refused resume starts no Ray."""
    import mlflow

    from crossfed import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri(config.tracking))
    found = tracking.find_run(resume)
    logged_mode = found.data.tags.get("crossfed.mode")
    if logged_mode and logged_mode != mode:
        raise CrossfedError(f"run {found.info.run_id} was a {logged_mode} run; resume it with --mode {logged_mode}")
    check_resume_config(config, found)
    return found.info.run_id


def check_resume_config(config: RunConfig, run) -> None:
    """Refuse to continue an MLflow `run` with a config that computes something else than the one it
    logged (its params, the flattened config): one line naming every differing key, with both values."""
    from crossfed.tracking import flatten

    before = run.data.params
    now = flatten(config.model_dump(mode="json", by_alias=True))
    differing = [key for key in sorted(before.keys() | now.keys())
                 if before.get(key) != now.get(key) and not key.startswith(RESUMABLE_KEYS)]
    if differing:
        shown = ", ".join(f"{key} (logged {before.get(key, '-')}, now {now.get(key, '-')})" for key in differing[:8])
        more = f" and {len(differing) - 8} more" if len(differing) > 8 else ""
        raise CrossfedError(
            f"cannot resume run {run.info.run_id} with a different config: {shown}{more}; only "
            f"{', '.join(k.rstrip('.') + ('.*' if k.endswith('.') else '') for k in RESUMABLE_KEYS)} may change")


def logged_rounds(run_id: str) -> int:
    """The last round MLflow holds for a run (0: none)."""
    import mlflow

    history = mlflow.MlflowClient().get_metric_history(run_id, "clients/sampled")
    return max((m.step for m in history), default=0)


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
    """Pre-train by federation (or a baseline) on Ray; log to MLflow; checkpoint in the run storage under
    `<storage>/<run id>/` (`output_dir`, or CROSSFED_STORAGE: a local folder or a URI such as s3://…).

    `resume`: a run id or name to continue from its newest intact committed round (a run that never
    committed one restarts from its initial model); its config must equal the logged one but for
    `RESUMABLE_KEYS`. `on_round(round_number,
    record)` is called after every completed round with its scalar record. `placement_group`: run the
    clients' workers in this group's bundles (in client order; a Tune trial's own bundle 0 is skipped)
    instead of one group per client. `register_model=False` logs the final model without registering a
    version (a sweep registers only its best trial's). Ray: see `connect_ray`; `address` is a cluster to
    join when no Ray is initialised (default RAY_ADDRESS, else an embedded local Ray for this call). The
    plan and a resumed run's config are checked before any Ray starts: a user error costs no start-up.
    """
    plan = plan_rounds(config, mode, experiment)
    resume_id = resumable_run(config, mode, resume) if resume is not None else None
    Storage(storage_root(config.output_dir))  # an unknown scheme or a missing s3fs: one line, nothing logged
    with connect_ray(address):
        if placement_group is None:
            _check_node_groups(plan)  # before anything is logged or written; the driver checks again
        return _run_tracked(config, plan, mode, resume_id, on_round, placement_group, parent_run_id, run_name,
                            register_model)


def _run_tracked(config, plan, mode, resume_id, on_round, placement_group, parent_run_id, run_name,
                 register_model) -> FederationResult:
    import mlflow

    root = storage_root(config.output_dir)
    with tracking_run(config, mode, resume_id, parent_run_id, run_name) as run:
        run_id = run.info.run_id
        location = f"{root}/{run_id}"
        mlflow.set_tag("crossfed.storage", location)
        rounds_logged = logged_rounds(run_id) if resume_id is not None else 0
        driver, started = _start_driver(config, plan, location, resume_id is not None, placement_group,
                                        rounds_logged)
        try:
            for note in started["notes"]:
                log.warning("%s", note)
            mlflow.set_tags(started["fingerprints"])  # computed by each client at its site
            history = _run_rounds(driver, plan, on_round)
            final = _get(driver.finish.remote())
        finally:
            _stop_driver(driver)
        for client, footprint in final["footprints"].items():
            mlflow.log_metrics({f"client/{client}/{k}": v for k, v in footprint.items()})
        _log_final_model(config, run_id, final["global_state_path"], register_model)
        return FederationResult(run_id, location, final["global_state_path"], history, final["client_models"])


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


def _start_driver(config: RunConfig, plan: RoundPlan, location: str, resume: bool, placement_group,
                  rounds_logged: int):
    """The driver actor, started; and what its start reports (data fingerprints, notes). It runs on this
    process's node, which needs no access to any experiment's data: the clients read and fingerprint it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    # Named, so an operator (or a test) can find a running federation: ray.get_actor("crossfed-driver-<run id>").
    run_id = location.rstrip("/").rsplit("/", 1)[-1]
    driver = driver_actor_class().options(scheduling_strategy=here, name=f"crossfed-driver-{run_id}").remote(
        config, plan, location)
    try:
        started = _get(driver.start.remote(resume, placement_group, rounds_logged))
    except BaseException:
        _stop_driver(driver)
        raise
    return driver, started


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


def round_metric_names(config: RunConfig) -> list[str]:
    """The global metrics every round reports, whatever the clients: what a sweep may optimise."""
    from crossfed.tasks import get_task

    names = ["global/val_loss"]
    for task in config.training.tasks:
        names += [f"global/val_{task}/{metric}" for metric in get_task(task).metrics]
    return names + ["bytes/sent", "bytes/received", "time/local_compute_s", "time/transfer_s", "time/aggregation_s"]
