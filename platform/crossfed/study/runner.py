"""`crossfed study CONFIG`: does learning from several experiments together, without pooling their data,
make each experiment's models better? Answered with repeats, uncertainties and equal budgets.

1. Samples: each experiment's unlabelled pool and labelled processes, generated or given (`samples`).
2. Checks that need the events (ladder against each task's training split, pool sizes) - before anything
   is logged or trained.
3. Pre-training, every setup of `plan.setups` once: federated, local and centralized runs of the
   federation engine (`run_federation`), a few at a time, each a child of the study's MLflow run.
4. Fine-tuning as Ray tasks at each experiment's site: every pre-trained model (and scratch) on every
   task, ladder point and fine-tuning seed, scored on one shared test set per task.
5. The report is rebuilt from MLflow (`report.collect`), so what is printed is what `crossfed report`
   shows later; its summary, tables and plots go onto the parent run.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import yaml

from crossfed.errors import CrossfedError
from crossfed.study import jobs, plan
from crossfed.study import report as rep
from crossfed.study.config import StudyConfig
from crossfed.study.samples import ExperimentData, prepare_samples
from crossfed.tracking import run_tags
from crossfed.tracking import tracking_uri as tracking_uri_rule


def run_study(study: StudyConfig, *, workdir: Path, tracking_uri: str | None = None, console=None,
              progress: bool = True) -> rep.StudyReport:
    """Run the whole study; returns its report (tables, files and plots under workdir/reports/<run id>/)."""
    from rich.console import Console

    console = console or Console()
    workdir = Path(workdir).resolve()
    uri = tracking_uri or tracking_uri_rule(study.tracking)
    # The tensor cache beside the samples unless the config names one; absolute, so that every Ray worker,
    # whatever its working directory, finds the entries the others wrote.
    cache = workdir / "cache" if "cache_dir" not in study.data.model_fields_set else Path(study.data.cache_dir)
    study.data.cache_dir = str(cache.resolve())
    setups = plan.setups(study)
    console.print(_plan_summary(study, setups))
    started = time.perf_counter()
    with _ray(study):  # one Ray for generation and training: starting one per sample file is slow and fragile
        console.print("[bold]samples[/]")
        data = prepare_samples(study, workdir / "samples", console=console, progress=progress)
        preflight(study, data)  # before anything is logged: a bad ladder must not leave a failed run behind
        console.print(f"  samples ready ({time.perf_counter() - started:.0f} s)")
        report = _run_logged(study, data, setups, uri, workdir, console)
    console.print(f"study finished in {time.perf_counter() - started:.0f} s")
    return report


def _run_logged(study: StudyConfig, data: dict[str, ExperimentData], setups: list[plan.Setup], uri: str,
                workdir: Path, console) -> rep.StudyReport:
    """Pre-training, fine-tuning and the report, under the study's parent MLflow run (FAILED if any fails)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment_id = _experiment_id(client, study.tracking.experiment, uri)
    parent_id = client.create_run(experiment_id, run_name=study.name, tags={
        **run_tags(rep.question(study, setups)), rep.KIND: "study", "crossfed.study": study.name,
        "crossfed.experiments": ",".join(study.experiments), "crossfed.tasks": ",".join(study.tasks)}).info.run_id
    try:
        client.log_text(parent_id, study_yaml(study), rep.CONFIG_ARTIFACT)
        rep.log_study_params(client, parent_id, study)
        models, sources = pretrain_all(study, data, setups, client, parent_id, uri, workdir, console)
        finetune_all(study, data, setups, models, sources, client, parent_id, experiment_id, uri, console)
        report = rep.collect(client, client.get_run(parent_id))
        rep.write_outputs(report, workdir / "reports" / parent_id)
        rep.log_summary(client, report)
    except BaseException:
        client.set_terminated(parent_id, "FAILED")
        raise
    client.set_terminated(parent_id, "FINISHED")
    return report


def study_yaml(study: StudyConfig) -> str:
    """The study as it ran (every default spelled out), readable by `load_study`."""
    raw = study.model_dump(mode="json", by_alias=True, exclude={"training": {"steps"}})
    return yaml.safe_dump(raw, sort_keys=False)


def _plan_summary(study: StudyConfig, setups: list[plan.Setup]) -> str:
    pretrainings = [s for s in setups if s.method != "scratch"]
    jobs_ = sum(len(study.experiments) if s.method == "scratch" else len(s.events) for s in setups)
    runs = jobs_ * len(study.tasks) * len(study.finetune.labelled_events) * study.repeats.finetune_seeds
    scenarios = ", ".join(s.name for s in plan.scenarios(study))
    return (f"[bold]study {study.name}[/]: scenarios {scenarios}; {len(pretrainings)} pre-trainings "
            f"({study.repeats.pretrain_seeds} seeds), {runs} fine-tunings on {len(study.tasks)} task(s)")


# --- checks on the events themselves -------------------------------------------------------------------------

def preflight(study: StudyConfig, data: dict[str, ExperimentData]) -> None:
    """Each task's splits can hold the largest ladder point and both classes; each pool is large enough."""
    from crossfed.data import load_dataset
    from crossfed.train.finetune import split_indices_checked

    tasks = {name: (t.signal, t.background) for name, t in study.tasks.items()}
    largest = max(study.finetune.labelled_events)
    scenarios = plan.scenarios(study)
    for experiment, experiment_data in data.items():
        config = jobs.finetune_config(study, data, experiment, "local")
        per_task, _ = jobs.labelled_task_events(config, experiment, experiment_data, tasks)
        for task, events in per_task.items():
            train, _, _ = split_indices_checked(events, config, f"{experiment} ({task})")
            smaller = min(int((events.labels[train] == label).sum()) for label in (0, 1))
            if smaller < largest - largest // 2:
                raise CrossfedError(
                    f"finetune.labelled_events: {largest} labelled events need {largest - largest // 2} per class; "
                    f"the training split of {experiment}'s {task} events holds {smaller} of one class")
        needed = max(s.events_of(experiment) for s in scenarios)
        pool = len(load_dataset(experiment_data.pretrain, experiment_data.schema, study.data))
        if pool < needed:
            raise CrossfedError(f"experiments.{experiment}.pretrain: {pool} events, the scenarios need {needed}")


# --- Ray, MLflow ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _ray(study: StudyConfig):
    """RAY_ADDRESS's cluster, or an embedded Ray that dies with this call. Locally at least as many logical
    CPUs as `compute.concurrent_runs` federations need (several small runs share the cores). The workers'
    output goes to the command's log file (`crossfed.logs`); used as a library, nowhere."""
    from crossfed import logs
    from crossfed.ray_session import connect_ray

    workers = sum(e.cluster.workers * e.cluster.cpus_per_worker for e in study.experiments.values())
    cpus = max(os.cpu_count() or 1, int(study.compute.concurrent_runs * workers + 0.999))
    with connect_ray(num_cpus=cpus, log_to_driver=logs.is_set_up()):
        yield


def _experiment_id(client, name: str, uri: str) -> str:
    """The MLflow experiment's id; a new one in a SQLite store keeps its artifacts beside the database file
    (MLflow would put them under ./mlruns of whatever directory the study was started from)."""
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


# --- pre-training ----------------------------------------------------------------------------------------------

def pretrain_all(study: StudyConfig, data: dict[str, ExperimentData], setups: list[plan.Setup], client,
                 parent_id: str, uri: str, workdir: Path, console) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Every pre-training setup, `compute.concurrent_runs` at a time. Returns {setup key: {experiment: the
    exported model file its fine-tuning starts from}} and {setup key: its pre-training's run id}."""
    todo = [s for s in setups if s.method != "scratch"]
    console.print(f"[bold]pre-training[/] {len(todo)} runs, {study.compute.concurrent_runs} at a time")
    models: dict[str, dict[str, str]] = {}
    sources: dict[str, str] = {}

    def one(setup: plan.Setup) -> None:
        started = time.perf_counter()
        sources[setup.key()], models[setup.key()] = pretrain(study, data, setup, client, parent_id, uri, workdir)
        console.print(f"  [{len(models)}/{len(todo)}] {setup.key()}  ({time.perf_counter() - started:.0f} s)",
                      highlight=False)

    with ThreadPoolExecutor(study.compute.concurrent_runs, thread_name_prefix="pretrain") as pool:
        futures = [pool.submit(one, setup) for setup in todo]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in done if f.exception() is not None), None)
        if failed is not None:
            for future in futures:
                future.cancel()  # the runs already going finish; no new one starts
            raise failed.exception()
    return models, sources


def pretrain(study: StudyConfig, data: dict[str, ExperimentData], setup: plan.Setup, client, parent_id: str,
             uri: str, workdir: Path) -> tuple[str, dict[str, str]]:
    """One setup through the federation engine; tags it and logs its budget on its run. Returns its run id
    and {experiment: the exported model file that experiment's fine-tuning starts from}."""
    from mlflow.entities import Metric

    from crossfed.federation import run_federation

    config = jobs.pretrain_config(study, data, setup, str(workdir / "runs"), uri)
    local = setup.experiments[0] if setup.method == "local" else None
    result = run_federation(config, mode=setup.method, experiment=local, parent_run_id=parent_id,
                            run_name=f"pretrain/{setup.key()}", register_model=False)
    for key, value in {rep.KIND: "pretrain", **setup.tags()}.items():
        client.set_tag(result.run_id, key, value)
    now = int(time.time() * 1000)
    budget = budget_from_history(result.history, client.get_run(result.run_id).data.params)
    client.log_batch(result.run_id, metrics=[Metric(k, v, now, 0) for k, v in budget.items()])
    if setup.method == "centralized":
        return result.run_id, dict.fromkeys(setup.experiments, result.client_models["centralized"])
    return result.run_id, {e: result.client_models[e] for e in setup.experiments}


def budget_from_history(history: list[dict], run_params: dict[str, str]) -> dict[str, float]:
    """What a pre-training processed, from its clients' round records: events per experiment, optimizer
    steps (all clients), device-hours (training and evaluation, from the clients' footprints, which the run
    logs once as the parameters `client.<name>.device_hours`)."""
    events: dict[str, float] = {}
    steps: dict[str, float] = {}
    for record in history:
        for key, value in record.items():
            parts = key.split("/")
            if len(parts) == 4 and parts[0] == "client" and parts[2] == "train_events_processed":
                events[parts[3]] = events.get(parts[3], 0.0) + value
            elif len(parts) == 3 and parts[0] == "client" and parts[2] == "train_global_step":
                steps[parts[1]] = max(steps.get(parts[1], 0.0), value)
    hours = sum(float(v) for k, v in run_params.items() if k.startswith("client.") and k.endswith(".device_hours"))
    return {**{f"{rep.BUDGET_EVENTS}/{e}": v for e, v in events.items()}, rep.BUDGET_STEPS: sum(steps.values()),
            rep.BUDGET_HOURS: hours}


# --- fine-tuning -----------------------------------------------------------------------------------------------

def finetune_all(study: StudyConfig, data: dict[str, ExperimentData], setups: list[plan.Setup],
                 models: dict[str, dict[str, str]], sources: dict[str, str], client, parent_id: str,
                 experiment_id: str, uri: str, console) -> None:
    """One Ray task per (setup, experiment), on the experiment's node group; each job opens its own run and
    one per fine-tuning under it (`jobs.finetune_job`), the results are logged into it as they arrive.
    Scratch (whole network trained, the longest jobs) goes first."""
    import ray

    from crossfed.federation.placement import label_selector
    from crossfed.federation.result import load_state
    from crossfed.federation.rounds import unwrap_ray_error

    remote = ray.remote(jobs.finetune_job)
    tasks = {name: (t.signal, t.background) for name, t in study.tasks.items()}
    common_tags = run_tags("")
    pending = {}
    for setup in sorted(setups, key=lambda s: s.method != "scratch"):
        for experiment in (study.experiments if setup.method == "scratch" else setup.experiments):
            scratch = setup.method == "scratch"
            state = None if scratch else load_state(models[setup.key()][experiment])
            seeds = [study.finetune_seed(setup.seed, f) for f in range(study.repeats.finetune_seeds)]
            log = jobs.RunLog(uri, experiment_id, parent_id, f"finetune/{setup.key()}/{experiment}", study.name,
                              "none" if scratch else sources[setup.key()],
                              None if scratch else models[setup.key()][experiment], {**common_tags, **setup.tags()})
            options = {"num_cpus": study.compute.finetune_cpus, "num_gpus": study.compute.finetune_gpus}
            selector = label_selector(data[experiment].cluster)
            if selector:
                options["label_selector"] = selector
            ref = remote.options(**options).remote(jobs.finetune_config(study, data, experiment, setup.method),
                                                   experiment, state, data[experiment], tasks,
                                                   list(study.finetune.labelled_events), seeds, log)
            pending[ref] = (setup, experiment, time.perf_counter())
    total = len(pending)
    console.print(f"[bold]fine-tuning[/] {total} jobs ({len(tasks)} task(s) × {len(study.finetune.labelled_events)} "
                  f"ladder points × {study.repeats.finetune_seeds} seeds each), {study.finetune.mode} encoder")
    while pending:
        (ready,), _ = ray.wait(list(pending), num_returns=1)
        setup, experiment, submitted = pending.pop(ready)
        try:
            run_id, results = ray.get(ready)
        except ray.exceptions.RayError as err:
            for ref in pending:
                ray.cancel(ref)
            raise unwrap_ray_error(err) from None
        record = rep.FinetuneRecord(setup, experiment, results, run_id)
        log_finetune(client, record)
        largest = max(study.finetune.labelled_events)
        aucs = ", ".join(f"{task} {results[(task, largest)]['auc'].mean():.3f}" for task in tasks)
        console.print(f"  [{total - len(pending)}/{total}] {setup.key()} on {experiment}: AUC at {largest:,} "
                      f"labelled {aucs}  ({time.perf_counter() - submitted:.0f} s since submitted)", highlight=False)


def log_finetune(client, record: rep.FinetuneRecord) -> None:
    """A finished job's results: the per-(task, ladder point) mean AUCs as final metrics, the arrays the report
    reads as finetune.npz; then the job's run (opened by the job) ends."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(record.run_id, metrics=[
        Metric(f"auc/{task}/{n}", float(values["auc"].mean()), now, 0) for (task, n), values in record.results.items()])
    with tempfile.TemporaryDirectory() as folder:
        client.log_artifact(record.run_id, str(record.save(Path(folder) / rep.FINETUNE_ARTIFACT)))
    client.set_terminated(record.run_id, "FINISHED")
