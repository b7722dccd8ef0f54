"""`crossfed demo`: does learning from several experiments together, without pooling their data, make
each experiment's models better? Answered end to end on one machine.

1. Sample data for a CMS-like and an ATLAS-like experiment (Pythia 8; reused when it already exists).
2. Self-supervised pre-training four ways: federated across both experiments, each experiment alone
   (local), all events pooled (centralized), and none at all (from scratch).
3. Fine-tuning of every pre-trained model on ttH vs tt with a ladder of labelled-event counts,
   evaluated on held-out events.
4. Everything is logged under one MLflow parent run; the table and plots are then rebuilt from MLflow
   by `crossfed.report`, exactly as `crossfed report RUN` does later.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from crossfed import report as rep
from crossfed.atomic import write_atomically
from crossfed.config import RunConfig, config_from_dict
from crossfed.errors import CrossfedError

# SM processes of the unlabelled pre-training mixture (weighted by sigma x preselection efficiency).
# W/Z+jets are left out below the large scale: the b-tag preselection accepts so few of them that their
# share alone would take most of a laptop's 15 minutes to generate.
LAPTOP_MIXTURE = ("ttbar", "single_top")
FULL_MIXTURE = ("ttbar", "wjets", "zjets", "single_top")

# The demo's two experiments: name -> built-in schema of the files the generator writes for it.
DEMO_EXPERIMENTS = {"cms": "cms_nanoaod", "atlas": "atlas_opendata"}


@dataclass(frozen=True)
class Scale:
    """How big a demo study is. Event counts are per experiment; labelled counts per class."""

    pretrain_events: int  # unlabelled SM mixture for self-supervised pre-training
    labelled_events: int  # ttH (signal) and tt (background) each, for fine-tuning and testing
    rounds: int  # federation rounds; local/centralized train rounds x local_steps steps, the same budget
    local_steps: int
    batch_size: int
    ladder: tuple[int, ...]  # labelled events used to fine-tune (must fit in the training split)
    finetune_steps: int
    finetune_batch_size: int
    preset: str = "tiny"
    mixture: tuple[str, ...] = LAPTOP_MIXTURE
    pilot_events: int = 300  # generated per SM process to measure its share of the mixture


SCALES = {
    # Test-sized: seconds of training, numbers are noise.
    "ci": Scale(pretrain_events=200, labelled_events=150, rounds=2, local_steps=2, batch_size=64,
                ladder=(40, 100), finetune_steps=4, finetune_batch_size=64),
    "small": Scale(pretrain_events=800, labelled_events=400, rounds=3, local_steps=10, batch_size=128,
                   ladder=(50, 300), finetune_steps=30, finetune_batch_size=128),
    # Sized for 15 minutes on 2 cores, generation included. Measured: 500 CPU-s for the 6400 Pythia events,
    # 140 s for pre-training and fine-tuning (18 min wall on 2 cores shared with load ~10: about 7 min alone).
    "default": Scale(pretrain_events=1600, labelled_events=800, rounds=5, local_steps=20, batch_size=256,
                     ladder=(100, 300, 800), finetune_steps=60, finetune_batch_size=128),
    # The KEK recipe's model and batch size: a workstation or cluster study.
    "large": Scale(pretrain_events=100_000, labelled_events=50_000, rounds=20, local_steps=100, batch_size=512,
                   ladder=(100, 1000, 10_000, 40_000), finetune_steps=1000, finetune_batch_size=256,
                   preset="kishimoto-11m", mixture=FULL_MIXTURE, pilot_events=2000),
}


# --- 1. sample data -----------------------------------------------------------------------------------

def sample_recipe(scale: Scale, seed: int = 0) -> dict:
    """The dataset recipe (`crossfed.generate.recipe`) of a scale's sample data, files under ".": per detector
    collision_data.root (pre-training), tth.root (signal) and ttbar.root (background)."""
    return {
        "name": "demo-samples",
        "output_dir": ".",
        "seed": seed,
        "detectors": list(DEMO_EXPERIMENTS),
        "collision_data": {"events": scale.pretrain_events, "processes": list(scale.mixture),
                           "pilot_events": scale.pilot_events},
        "labelled": {"tth_vs_ttbar": {"signal": "tth", "background": "ttbar", "events": scale.labelled_events}},
    }


def make_samples(scale: Scale, data_root: Path, seed: int = 0, progress: bool = True,
                 console=None) -> dict[str, dict[str, list[str]]]:
    """Generate (or reuse) both experiments' ROOT files, keyed by the recipe so a rerun skips generation.
    Returns {"cms": {"pretrain": [...], "signal": [...], "background": [...]}, "atlas": {...}}."""
    import yaml

    from crossfed.generate.recipe import make_recipe

    recipe = yaml.safe_dump(sample_recipe(scale, seed), sort_keys=True)
    target = Path(data_root) / f"samples-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    files = {experiment: {"pretrain": [str(target / experiment / "collision_data.root")],
                          "signal": [str(target / experiment / "tth.root")],
                          "background": [str(target / experiment / "ttbar.root")]}
             for experiment in DEMO_EXPERIMENTS}
    if target.is_dir():  # only ever renamed into place complete
        if console:
            console.print(f"reusing the sample data in {target}")
        return files
    if console:
        total = 2 * (scale.pretrain_events + 2 * scale.labelled_events)
        console.print(f"[bold]generating[/] {total} events with Pythia 8 into {target}")

    def generate(staging: Path) -> None:
        staging.mkdir()
        (staging / "recipe.yaml").write_text(recipe)
        make_recipe(staging / "recipe.yaml", progress=progress)

    write_atomically(target, generate)  # nothing half-written is left, even by Ctrl-C
    return files


# --- the run configuration -----------------------------------------------------------------------------

def demo_config(scale: Scale, files: dict[str, dict[str, list[str]]], workdir: Path, tracking_uri: str,
                seed: int = 0) -> RunConfig:
    """The run configuration of a demo at this scale on these files (what `--config` replaces)."""
    experiments = {
        name: {
            "schema": schema,
            "pretrain": {"files": files[name]["pretrain"]},
            "finetune": {"signal": {"files": files[name]["signal"]}, "background": {"files": files[name]["background"]}},
        }
        for name, schema in DEMO_EXPERIMENTS.items()
    }
    raw = {
        "name": "demo",
        "seed": seed,
        "output_dir": str(workdir / "runs"),
        "experiments": experiments,
        # 30% held out for testing: a few hundred test events keep the AUC's noise at the percent level.
        "data": {"cache_dir": str(workdir / "cache"), "validation_fraction": 0.1, "test_fraction": 0.3},
        "model": {"preset": scale.preset},
        "training": {"batch_size": scale.batch_size, "steps": scale.rounds * scale.local_steps, "device": "cpu"},
        "federation": {"rounds": scale.rounds, "local_steps": scale.local_steps, "min_clients": len(experiments)},
        "finetune": {"labelled_events": list(scale.ladder), "max_steps": scale.finetune_steps,
                     "batch_size": scale.finetune_batch_size},
        "tracking": {"uri": tracking_uri, "experiment": "crossfed-demo"},
    }
    return config_from_dict(raw, source="the demo's run configuration")


# --- 2. pre-training ------------------------------------------------------------------------------------

def pretrain_all(config: RunConfig, client, parent_id: str, console) -> tuple[dict, dict, dict]:
    """Pre-train the four ways. Returns ({method: {experiment: model state or None}},
    {history name: [(round, global validation loss)]} - for the loss-per-round plot -,
    {"method/experiment": (pre-training run id, that experiment's model file)} - for `finetune -c`)."""
    from crossfed.federation import run_federation
    from crossfed.federation.result import load_state

    experiments = list(config.experiments)
    histories: dict[str, list[tuple[int, float]]] = {}
    models: dict[str, tuple[str, str]] = {}

    def pretrain(method: str, experiment: str | None = None):  # -> FederationResult
        name = f"{method}/{experiment}" if experiment else method
        started = time.perf_counter()
        result = run_federation(config, mode=method, experiment=experiment, parent_run_id=parent_id,
                                run_name=f"pretrain/{name}")
        tags = {rep.KIND: "pretrain", rep.METHOD: method} | ({rep.EXPERIMENT: experiment} if experiment else {})
        for key, value in tags.items():  # so the report finds the run by method and experiment
            client.set_tag(result.run_id, key, value)
        histories[name] = [(int(r["round"]), float(r[rep.ROUND_LOSS])) for r in result.history if rep.ROUND_LOSS in r]
        loss = histories[name][-1][1] if histories[name] else float("nan")
        console.print(f"  {name:18s} validation loss {loss:.3f}  ({time.perf_counter() - started:.0f} s)")
        return result

    def model_states(method: str, result, client_of: dict[str, str]) -> dict[str, dict]:
        # Each client's exported model: the global shared parameters plus its private adapter, which the
        # backbone was trained with (fine-tuning takes the backbone and the experiment's adapter from it).
        models.update({f"{method}/{e}": (result.run_id, result.client_models[client_of[e]]) for e in client_of})
        return {e: load_state(result.client_models[client_of[e]]) for e in client_of}

    console.print("[bold]pre-training[/] (self-supervised: which object was replaced?)")
    states = {"federated": model_states("federated", pretrain("federated"), {e: e for e in experiments})}
    states["local"] = {e: model_states("local", pretrain("local", e), {e: e})[e] for e in experiments}
    states["centralized"] = model_states("centralized", pretrain("centralized"),
                                         dict.fromkeys(experiments, "centralized"))
    states["scratch"] = dict.fromkeys(experiments)
    return states, histories, models


# --- 3. fine-tuning -------------------------------------------------------------------------------------

def finetune_all(config: RunConfig, states: dict[str, dict], parent_id: str, console,
                 data_tags: dict[str, str]) -> list[rep.FinetuneResult]:
    """Fine-tune every (experiment, method, labelled events); log one child run each (with `data_tags`)."""
    from crossfed.train.finetune import finetune

    console.print("[bold]fine-tuning[/] ttH vs tt, evaluated on held-out events")
    results = []
    for experiment in config.experiments:
        for method, per_experiment in states.items():
            for n in config.finetune.labelled_events:
                started = time.perf_counter()
                result = _result(experiment, method, n, finetune(config, experiment, n, per_experiment[experiment]))
                result.run_id = _log_finetune(config, parent_id, result, data_tags)
                results.append(result)
                console.print(f"  {experiment:6s} {method:12s} {n:>6d} labelled: AUC {result.auc:.3f}"
                              f"  ({time.perf_counter() - started:.0f} s)")
    return results


def _result(experiment: str, method: str, n: int, metrics) -> rep.FinetuneResult:
    """The table row of one fine-tuning from its `FinetuneMetrics` (scalars plus .fpr/.tpr)."""
    def value(name: str) -> float:
        number = float(metrics[name])
        if number != number:  # NaN: a diverged fine-tuning must not enter the table silently
            raise CrossfedError(f"fine-tuning {experiment}/{method}/{n} labelled events returned {name} = NaN")
        return number

    return rep.FinetuneResult(
        experiment=experiment, method=method, labelled_events=n, auc=value("auc"),
        rejection_03=value("rejection_at_0.3"), rejection_05=value("rejection_at_0.5"), accuracy=value("accuracy"),
        roc={"fpr": [float(x) for x in metrics.fpr], "tpr": [float(x) for x in metrics.tpr]},
    )


def _log_finetune(config: RunConfig, parent_id: str, result: rep.FinetuneResult, data_tags: dict[str, str]) -> str:
    import mlflow

    from crossfed import tracking

    tags = {rep.KIND: "finetune", rep.EXPERIMENT: result.experiment, rep.METHOD: result.method,
            rep.LABELLED: str(result.labelled_events), **data_tags}
    with tracking.start_run(config, f"finetune/{result.experiment}/{result.method}/{result.labelled_events}",
                            mode="finetune", parent_run_id=parent_id, nested_tags=tags) as run:
        mlflow.log_metrics({rep.AUC: result.auc, rep.REJECTION_03: result.rejection_03,
                            rep.REJECTION_05: result.rejection_05, rep.ACCURACY: result.accuracy})
        mlflow.log_dict(result.roc, rep.ROC_ARTIFACT)
    return run.info.run_id


# --- the whole demo ---------------------------------------------------------------------------------------

def check_data(config: RunConfig) -> None:
    """Every dataset the demo reads exists (a clear error naming the key, not a failure minutes later)."""
    from crossfed.tracking import dataset_files

    for name, experiment in config.experiments.items():
        if experiment.pretrain is None or experiment.finetune is None:
            raise CrossfedError(f"experiments.{name}: the demo needs both pretrain and finetune datasets")
        for key, dataset in (("pretrain", experiment.pretrain), ("finetune.signal", experiment.finetune.signal),
                             ("finetune.background", experiment.finetune.background)):
            try:
                dataset_files(dataset, f"experiments.{name}.{key}")
            except CrossfedError as err:
                raise CrossfedError(f"{err} (generate it, e.g. crossfed generate --recipe jobs/datasets/demo.yaml)") from None


def _experiment_id(client, name: str, uri: str) -> str:
    """The MLflow experiment's id; a new one in a SQLite store keeps its artifacts beside the database file
    (MLflow would put them under ./mlruns of whatever directory the demo was started from)."""
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def run_demo(config: RunConfig, *, plots_dir: Path, scale_name: str = "custom", console=None) -> rep.Report:
    """Pre-train, fine-tune and evaluate; log under one MLflow parent run. Returns the report built from the
    results in memory (`crossfed report` rebuilds the same from MLflow); plots go to plots_dir/<run id>/."""
    import mlflow
    from mlflow import MlflowClient
    from rich.console import Console

    from crossfed import tracking
    from crossfed.ray_session import connect_ray

    console = console or Console()
    check_data(config)  # before anything is logged: a missing file must not leave a failed run behind
    uri = config.tracking.uri or rep.default_tracking_uri()
    config = config.model_copy(deep=True)
    config.tracking.uri = uri  # the parent, pre-training and fine-tuning runs all in this one store
    client = MlflowClient(uri)
    experiment_id = _experiment_id(client, config.tracking.experiment, uri)
    methods = list(rep.METHOD_ORDER)
    # The demo fine-tunes in this process, so it reads every experiment's data here anyway (on one machine);
    # pre-training runs get theirs from the data checks at their clients' sites, like every federation.
    data_tags = tracking.dataset_fingerprints(config)
    tags = {rep.KIND: "demo", rep.EXPERIMENTS: ",".join(config.experiments), rep.METHODS: ",".join(methods),
            rep.LADDER: ",".join(str(n) for n in config.finetune.labelled_events), "crossfed.scale": scale_name,
            **data_tags}
    # The parent run ends FAILED if anything below raises (Ctrl-C included), FINISHED once the plots are logged.
    with tracking.start_run(config, config.name, mode="demo", nested_tags=tags) as parent:
        parent_id = parent.info.run_id
        # An embedded Ray (no RAY_ADDRESS) gets at least 4 logical CPUs: the federation's two clients and
        # the driver fit even on a 2-core laptop.
        with connect_ray(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False):
            states, histories, models = pretrain_all(config, client, parent_id, console)
            results = finetune_all(config, states, parent_id, console, data_tags)
        report = rep.Report(parent_id, experiment_id, list(config.experiments), methods,
                            list(config.finetune.labelled_events), results, histories, models=models)
        out_dir = Path(plots_dir) / parent_id
        for path in rep.draw_plots(report, out_dir):
            mlflow.log_artifact(str(path), "plots")
        rep.write_table_json(report, out_dir / "results.json")
    return report


def demo_scale(name: str) -> Scale:
    if name not in SCALES:
        raise CrossfedError(f"--scale {name!r}: choose one of {', '.join(SCALES)}")
    return SCALES[name]

