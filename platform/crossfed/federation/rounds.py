"""`run_federation`: one engine for the federation and its baselines, logged and checkpointed alike.

- federated: one client per experiment, each on its node group; shared groups from `federation.shared`.
- local: one client on one experiment (`experiment=`), `training.steps` steps split over the rounds.
- centralized: one client holding every experiment's events (the pooled baseline), same steps.
Baselines share every parameter group (nothing is private from oneself) and skip strategy and DP.

What a run leaves behind, whatever happens to it:
- bad input (a config the plan refuses, a node group that cannot host its client, a data file that is
  no ROOT file or lacks a branch) is found before the MLflow run or the run folder exist: nothing is left;
- a failure after that ends the MLflow run FAILED with the error as its description (mlflow.note.content);
- SIGINT or SIGTERM abandons the round in progress, ends the run KILLED and raises `FederationInterrupted`
  naming the last committed round (never half-way through a write to the store: `interrupts`); `--resume`
  continues from there. A run left RUNNING by a process that is gone (killed with SIGKILL, a lost node) is
  taken over by `--resume`; one whose process still runs is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable

from crossfed.config import ClusterConfig, RunConfig
from crossfed.errors import CrossfedError, innermost_cause, one_line_reason
from crossfed.federation import MODES
from crossfed.federation.driver import ClientSpec, RoundPlan, driver_actor_class
from crossfed.federation.interrupts import interrupted_by_signals, waiting_on_ray
from crossfed.federation.result import FederationResult, load_state
from crossfed.federation.system_metrics import SystemMetricsLog
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


class FederationInterrupted(CrossfedError):
    """SIGINT or SIGTERM stopped the run after `completed_round`; its MLflow run is KILLED, and resumable."""

    exit_code = 130

    def __init__(self, run_id: str, completed_round: int):
        self.run_id, self.completed_round = run_id, completed_round
        super().__init__(f"interrupted after round {completed_round}: continue with --resume {run_id}")


PROCESS_TAG = "crossfed.process"  # which process runs the federation: {"host", "pid", "started"}


def this_process(driver: str = "") -> dict:
    """This process, and `driver`, the name of the driver actor it runs the federation with."""
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time(),
            "driver": driver}


def process_alive(owner: dict, run_id: str) -> bool:
    """Whether the process `owner` (a run's PROCESS_TAG) still runs: on this host by its pid and start
    time (a reused pid is another process); elsewhere by its driver actor in this Ray cluster (the tag names
    it; in a run tagged before it did, the actor named after the run id)."""
    import psutil
    import ray

    if owner.get("host") == socket.gethostname():
        with contextlib.suppress(psutil.Error):
            return abs(psutil.Process(int(owner["pid"])).create_time() - float(owner["started"])) < 1e-3
        return False
    with contextlib.suppress(ValueError):
        ray.get_actor(owner.get("driver") or driver_name(run_id))
        return True
    return False


def driver_name(run_key: str) -> str:
    """The driver actor's name, so an operator (or a test) finds a running federation with ray.get_actor:
    `run_key` is fresh for every process that runs a federation (the driver starts before the MLflow run,
    so that the clients' workers start meanwhile), and the run's PROCESS_TAG names the actor."""
    return f"crossfed-driver-{run_key}"


# Keys a resumed run may change: how long it goes on and how it is run, never what it computes.
RESUMABLE_KEYS = ("name", "output_dir", "federation.rounds", "federation.round_timeout_s",
                  "federation.max_round_retries", "checkpoint.", "tracking.", "data.cache_dir")


@contextlib.contextmanager
def tracking_run(config: RunConfig, mode: str, resume_id: str | None, datasets: dict[str, dict],
                 parent_run_id: str | None, run_name: str | None, driver: str = ""):
    """A new MLflow parent run, or the resumed run (checked by `resumable_run`) re-opened: its params and
    tags are already there. `datasets`: the data's records (`data.records.dataset_records`), made at each
    client's site: logged as the run's inputs and as fingerprint tags. `driver`: the name of the driver
    actor that runs it (in PROCESS_TAG).

    A run to resume that MLflow still shows RUNNING is taken over when the process that ran it is gone,
    and refused while it runs. Either way the run is marked as this process's.
    """
    import mlflow

    from crossfed import tracking

    data_tags = tracking.fingerprint_tags(datasets)
    if resume_id is None:
        with tracking.start_run(config, run_name or tracking.run_name(config, mode), mode=mode,
                                parent_run_id=parent_run_id, nested_tags=data_tags,
                                description=describe_pretraining(config, mode)) as run:
            mlflow.set_tag(PROCESS_TAG, json.dumps(this_process(driver)))
            tracking.log_datasets(datasets)
            yield run
        return
    mlflow.set_tracking_uri(tracking.tracking_uri(config.tracking))
    found = mlflow.get_run(resume_id)
    if found.info.status == "RUNNING":
        owner = json.loads(found.data.tags.get(PROCESS_TAG, "{}"))
        if owner and process_alive(owner, resume_id):
            raise CrossfedError(f"run {resume_id} is still running (process {owner['pid']} on {owner['host']}); "
                                "stop it before resuming, or wait for it")
        log.warning("run %s was left RUNNING by process %s on %s, which is gone: taking it over", resume_id,
                    owner.get("pid", "?"), owner.get("host", "?"))
    with mlflow.start_run(run_id=resume_id) as run:
        mlflow.set_tags({PROCESS_TAG: json.dumps(this_process(driver)), **data_tags})
        tracking.log_datasets(datasets)  # MLflow keeps one input per dataset and context
        yield run


def resumable_run(config: RunConfig, mode: str, resume: str) -> str:
    """The id of the run `resume` names, after checking that it was run in this mode with this config
    (`RESUMABLE_KEYS` excepted). Needs only MLflow, so a refused resume starts no Ray."""
    import mlflow

    from crossfed import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri(config.tracking))
    found = tracking.find_run(resume)
    run_id = found.info.run_id
    logged_mode = found.data.tags.get("crossfed.mode")
    if logged_mode and logged_mode != mode:
        raise CrossfedError(f"run {run_id} was a {logged_mode} run; resume it with --mode {logged_mode}")
    check_resume_config(config, found)
    return run_id


def check_resume_config(config: RunConfig, run) -> None:
    """Refuse to continue an MLflow `run` with a config that computes something else than the one it
    logged (its params, the flattened config): one line naming every differing key, with both values."""
    from crossfed.tracking import flatten

    now = flatten(config.model_dump(mode="json", by_alias=True))
    # Only the config's own keys: a run also logs parameters of its results (`client.<name>.device_hours`).
    sections = {key.split(".", 1)[0] for key in now}
    before = {key: value for key, value in run.data.params.items() if key.split(".", 1)[0] in sections}
    differing = [key for key in sorted(before.keys() | now.keys())
                 if before.get(key) != now.get(key) and not key.startswith(RESUMABLE_KEYS)]
    if differing:
        shown = ", ".join(f"{key} (logged {before.get(key, '-')}, now {now.get(key, '-')})" for key in differing[:8])
        more = f" and {len(differing) - 8} more" if len(differing) > 8 else ""
        raise CrossfedError(
            f"cannot resume run {run.info.run_id} with a different config: {shown}{more}; only "
            f"{', '.join(k.rstrip('.') + ('.*' if k.endswith('.') else '') for k in RESUMABLE_KEYS)} may change")


def describe_pretraining(config: RunConfig, mode: str) -> str:
    """The run's description: what is trained how (the MLflow UI shows it on the run's page)."""
    fed = config.federation
    how = {"federated": f"federated pre-training ({fed.strategy.name}, sharing {', '.join(fed.shared)})",
           "local": "local pre-training (one experiment alone, the baseline)",
           "centralized": "centralized pre-training (every experiment's events pooled, the baseline)"}[mode]
    return (f"{how[0].upper()}{how[1:]} of a {config.model.preset} model on {', '.join(config.experiments)} "
            f"for up to {fed.rounds} rounds, config {config.name!r}. The final model is logged under `model/`: "
            "fine-tune it with `crossfed finetune CONFIG -e EXPERIMENT -c RUN_ID`.")


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
    import_tracking_in_background()
    with connect_ray(address), interrupted_by_signals():
        # Before anything is logged or written: nothing is half-written on bad input.
        if placement_group is None:
            _check_node_groups(plan)  # the driver checks again, with what is free then
        # The clients' workers start (the slow part: torch, DeepSpeed, engines, events) while each client
        # checks its data and the MLflow run is made; they write nothing until the run exists.
        run_key = uuid.uuid4().hex[:16]  # not the run id: a resumed run's old driver may still be named so
        driver, launched = _launch_driver(config, plan, run_key, placement_group)
        try:
            _get(launched)  # a node group that cannot host its client: before anything is logged too
            datasets = check_data_at_its_site(driver)
            return _run_tracked(config, plan, mode, resume_id, datasets, on_round, (driver, driver_name(run_key)),
                                parent_run_id, run_name, register_model)
        finally:
            _stop_driver(driver)


def import_tracking_in_background() -> threading.Thread:
    """Import MLflow and its SQL store (about 3 s of CPU, half of it SQLAlchemy's) in a thread while Ray
    starts, which mostly waits on its own processes. Imports only: no store is opened and no file written
    before the data is checked. A failed import is left for the main thread to meet and report."""
    def import_them():
        with contextlib.suppress(Exception):
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - imports mlflow too

    thread = threading.Thread(target=import_them, name="crossfed-import-mlflow", daemon=True)
    thread.start()
    return thread


def _run_tracked(config, plan, mode, resume_id, datasets, on_round, named_driver, parent_run_id, run_name,
                 register_model) -> FederationResult:
    import mlflow

    driver, name = named_driver
    with tracking_run(config, mode, resume_id, datasets, parent_run_id, run_name, name) as run:
        run_id = run.info.run_id
        progress = {"round": None}  # the last round known to be committed, for the interruption message
        try:
            return _run_started(config, plan, run_id, resume_id is not None, on_round, driver, register_model,
                                progress)
        except KeyboardInterrupt:
            completed = progress["round"] if progress["round"] is not None else _last_logged_round(run_id)
            stopped = FederationInterrupted(run_id, completed)
            mlflow.set_tag("mlflow.note.content", str(stopped))
            mlflow.end_run("KILLED")
            raise stopped from None
        except BaseException as err:
            mlflow.set_tag("mlflow.note.content", f"failed: {one_line_reason(err)}")
            raise


def _run_started(config, plan, run_id, resume: bool, on_round, driver, register_model,
                 progress) -> FederationResult:
    import mlflow

    location = f"{storage_root(config.output_dir)}/{run_id}"
    mlflow.set_tag("crossfed.storage", location)
    rounds_logged = _last_logged_round(run_id) if resume else 0
    try:
        _start_driver(driver, location, resume, rounds_logged)
        system = SystemMetricsLog(run_id)
        history = _run_rounds(driver, plan, on_round, run_id, progress, system)
        final = _get(driver.finish.remote())
        system.log(_get(driver.system_samples.remote(final=True)))
    except KeyboardInterrupt:
        _ask_committed_round(driver, progress)
        raise
    finally:
        _stop_driver(driver)
    # One value per run: parameters, not one-step series; a run resumed after it finished keeps its first
    # (a parameter cannot change).
    logged = mlflow.MlflowClient().get_run(run_id).data.params
    footprints = {f"client.{client}.{k}": f"{v:.6g}" for client, footprint in final["footprints"].items()
                  for k, v in footprint.items()}
    mlflow.log_params({key: value for key, value in footprints.items() if key not in logged})
    _log_final_model(config, plan, run_id, final, register_model)
    return FederationResult(run_id, location, final["global_state_path"], history, final["client_models"])


def _ask_committed_round(driver, progress: dict) -> None:
    """The driver's last committed round (it may have committed one more than this process has seen)."""
    import ray

    with contextlib.suppress(Exception):
        progress["round"], _ = ray.get(driver.state.remote(), timeout=10)


def _check_node_groups(plan: RoundPlan) -> None:
    from crossfed.federation.placement import check_feasible

    free = None
    for spec in plan.clients:
        free = check_feasible(spec.cluster, spec.name, free)


def check_data_at_its_site(driver) -> dict[str, str]:
    """`crossfed validate`'s data checks (schema, selection, every file a readable ROOT file, the first
    one's branches), each client's run in its own actor, on its node group, while its workers start: data
    is read where it lives, and a bad file is found before any run or folder is made. All problems, one
    line each; exit code 2. Returns the data's records (`data.records.dataset_records`: fingerprints, event
    counts), made there too: the process that starts the run never opens the data."""
    clients = _get(driver.client_handles.remote())
    found = _get([client.check_data.remote() for client in clients.values()])
    problems = [problem for client_problems, _ in found for problem in client_problems]
    if problems:
        raise CrossfedError(problems[0] if len(problems) == 1 else
                            f"{len(problems)} problems with the data\n  " + "\n  ".join(problems))
    return {key: record for _, records in found for key, record in records.items()}


def _get(ref):
    import ray

    try:
        with waiting_on_ray():
            return ray.get(ref)
    except ray.exceptions.RayError as err:
        raise unwrap_ray_error(err) from None


def _launch_driver(config: RunConfig, plan: RoundPlan, run_key: str, placement_group):
    """(the driver actor, the ObjectRef of its `launch`): the clients and their workers starting, before the
    run exists. It runs on this process's node, which needs no access to any experiment's data: only the
    clients (and the checks at their sites) read it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    driver = driver_actor_class().options(scheduling_strategy=here, name=driver_name(run_key)).remote(
        config, plan, None, run_key)
    return driver, driver.launch.remote(placement_group)


def _start_driver(driver, location: str, resume: bool, rounds_logged: int) -> None:
    """Give the launched driver its run: it waits for the clients' workers, then loads or makes the global
    model; its notes (damaged rounds skipped) are logged. Each client then samples its node's system
    metrics (`crossfed.federation.system_metrics`)."""
    for note in _get(driver.start.remote(resume, None, rounds_logged, location)):
        log.warning("%s", note)
    _log_client_nodes(driver)
    _get(driver.monitor_system.remote())


def _log_client_nodes(driver) -> None:
    """Tags saying which Ray node each client and its ranks started on: where an experiment's data was read
    is part of the run's record."""
    import mlflow

    for name, nodes in _get(driver.client_nodes.remote()).items():
        mlflow.set_tags({f"crossfed.client.{name}.node": nodes["node"],
                         f"crossfed.client.{name}.worker_nodes": ",".join(nodes["worker_nodes"])})


def _stop_driver(driver) -> None:
    """Shut the driver's clients down, then kill it (again: harmless; a driver still waiting for its clients'
    workers to start waits for them first, see `FederationDriver.shutdown`)."""
    import ray

    with contextlib.suppress(Exception):
        ray.get(driver.shutdown.remote(), timeout=180)
    ray.kill(driver, no_restart=True)


def _run_rounds(driver, plan: RoundPlan, on_round, run_id: str, progress: dict,
                system: SystemMetricsLog) -> list[dict]:
    """Run the rounds left; a round's metrics reach MLflow once it is committed (`checkpoint.every`; a
    commit written in the background lands during the next round), so that a run resumed from its last
    commit never logs a round twice. The clients' system samples are logged after each round: they are
    samples in time, not the round's."""
    completed, history = _get(driver.state.remote())
    progress["round"] = completed
    _log_unlogged_rounds(run_id, history)
    uncommitted = []

    def log_committed(committed: int) -> None:
        progress["round"] = committed
        while uncommitted and uncommitted[0]["round"] <= committed:
            _log_round(uncommitted.pop(0))

    for _ in range(completed, len(plan.steps_per_round)):
        started = time.perf_counter()
        record = _get(driver.run_round.remote())
        if "time/round_s" in record:  # the whole round as this process waited for it: retries, checkpoints
            record["time/round_s"] = time.perf_counter() - started
        uncommitted.append(record)
        history.append(record)
        log_committed(_get(driver.last_commit.remote()))
        system.log(_get(driver.system_samples.remote()))
        if on_round is not None:
            on_round(record["round"], record)
    log_committed(_get(driver.wait_for_commit.remote()))
    return history


def _log_round(record: dict) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in record.items() if k != "round"}, step=record["round"])


def _logged_rounds(run_id: str) -> set[int]:
    """The rounds MLflow has a record of: every record holds `clients/sampled`, under DP `privacy/epsilon`."""
    import mlflow

    client = mlflow.MlflowClient()
    return {m.step for key in ("clients/sampled", "privacy/epsilon") for m in client.get_metric_history(run_id, key)}


def _last_logged_round(run_id: str) -> int:
    """The last round MLflow has metrics of (0: none): an interruption while a resumed run's clients
    were still starting is reported after that round."""
    return max(_logged_rounds(run_id), default=0)


def _log_unlogged_rounds(run_id: str, history: list[dict]) -> None:
    """A resumed run's committed rounds whose metrics never reached MLflow (the process was killed between
    the driver's commit and the logging): logged now, so that nothing completed is lost."""
    logged = _logged_rounds(run_id)
    for record in history:
        if record["round"] not in logged:
            _log_round(record)


FINAL_MODEL_ARTIFACT = "model"


def _log_final_model(config: RunConfig, plan: RoundPlan, run_id: str, final: dict, register: bool) -> None:
    """The run's MLflow model `model` (`crossfed.serving.mlflow_model`): the global state - the shared
    parameters only; private adapters stay at their sites - and, in its `crossfed.json`, each experiment's
    own model folder at its client's site (`site_models`, not uploaded). Registered as a version, with its
    model card, when `register`."""
    import mlflow

    from crossfed import tracking
    from crossfed.serving import mlflow_model

    experiments = [e for spec in plan.clients for e in spec.experiments]
    at_sites = {name: final["client_models"][spec.name] for spec in plan.clients for name in spec.experiments
                if spec.name in final["client_models"]}
    info = mlflow_model.model_info("foundation", config, experiments, site_models=at_sites)
    mlflow.set_tags({"crossfed.experiments": ",".join(experiments), "crossfed.rounds": str(len(plan.steps_per_round))})
    mlflow_model.log_model(load_state(final["global_state_path"]), info, FINAL_MODEL_ARTIFACT)
    if register:
        version = tracking.register_model(run_id, FINAL_MODEL_ARTIFACT, tracking.registered_model_name(config))
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
