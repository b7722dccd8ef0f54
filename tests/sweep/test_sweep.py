"""Sweeps of whole federations with Ray Tune: validation before any trial, ASHA, MLflow, resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from crossfed.errors import CrossfedError
from crossfed.sweep import Sweep


def base_config(tmp_path: Path, samples) -> Path:
    config = {
        "name": "sweep-base",
        "output_dir": str(tmp_path / "runs"),
        "experiments": {
            name: {
                "schema": schema,
                "pretrain": {"files": [str(samples[name]["ttbar"])]},
                "cluster": {"workers": 1, "cpus_per_worker": 0.5},  # two trials at once on 2 CPUs
            }
            for name, schema in (("cms", "cms_nanoaod"), ("atlas", "atlas_opendata"))
        },
        "data": {"cache_dir": str(tmp_path / "cache"), "augment": {"boost": False}},
        "model": {"preset": "tiny"},
        "training": {"batch_size": 32, "device": "cpu", "eval_batches": 2},
        "federation": {"rounds": 3, "local_steps": 3, "min_clients": 2},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "sweeps"},
    }
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sweep_file(tmp_path: Path, **changes) -> Path:
    spec = {
        "base": "base.yaml",
        "metric": "global/val_loss",
        "mode": "min",
        "algorithm": "grid",
        "max_concurrent": 2,
        # Good learning rates first: ASHA compares later trials with them at round 1 and stops the bad ones.
        "space": {"training.lr": {"grid": [0.3, 0.2, 1e-7, 1e-8]}},
        "asha": {"grace_period": 1, "reduction_factor": 2},
    }
    spec.update(changes)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"space": {"federation.strategy.server_lrr": {"choice": [0.1]}}}, "did you mean 'federation.strategy.server_lr'"),
        ({"space": {"federation.rounds.x": 1}}, "is a value, not a section"),
        ({"space": {}}, "space"),
        ({"metric": "global/val_los"}, "is not reported by any trial (did you mean 'global/val_loss'?)"),
        ({"space": {"federation.strategy.name": {"choice": ["fedavg", "fedbest"]}}}, "'fedbest' is not a valid setting"),
        ({"space": {"training.lr": {"loguniform": [0, 1]}}}, "positive low end"),
        ({"space": {"experiments.lhcb.cluster.workers": {"choice": [1]}}}, "no experiment 'lhcb'"),
    ],
)
def test_bad_sweeps_are_refused_before_any_trial(tmp_path, samples, changes, message):
    base_config(tmp_path, samples)
    with pytest.raises(CrossfedError) as err:
        Sweep(sweep_file(tmp_path, **changes))
    assert message in str(err.value)


def test_cli_check_gives_one_line_and_exit_2(tmp_path, samples):
    base_config(tmp_path, samples)
    bad = sweep_file(tmp_path, space={"federation.stratgy.name": {"choice": ["fedavg"]}})
    result = subprocess.run([sys.executable, "-m", "crossfed", "sweep", str(bad), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown hyperparameter 'federation.stratgy.name'" in result.stderr
    assert "Traceback" not in result.stderr


def _finished_federations(runs: Path) -> int:
    return len(list(runs.glob("*/global_final.npz"))) if runs.exists() else 0


def test_interrupted_sweep_resumes_with_asha_and_mlflow(tmp_path, samples):
    base_config(tmp_path, samples)
    spec = sweep_file(tmp_path)
    env = dict(os.environ)
    command = [sys.executable, "-m", "crossfed", "sweep", str(spec)]
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    deadline = time.time() + 300
    while _finished_federations(tmp_path / "runs") < 1 and first.poll() is None and time.time() < deadline:
        time.sleep(1)
    assert first.poll() is None, f"the sweep ended before it could be interrupted:\n{first.stdout.read()}"
    first.send_signal(signal.SIGINT)
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 130, output
    assert "crossfed sweep --resume" in output
    finished_before = _finished_federations(tmp_path / "runs")
    assert finished_before < 4

    second = subprocess.run(command[:4] + ["--resume", str(spec)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "best configuration" in second.stdout

    best = tmp_path / "runs" / "sweeps" / "sweep" / "best.yaml"
    from crossfed.config import load_config

    assert load_config(best).training.lr in (0.3, 0.2)

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweeps")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("crossfed.mode") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1
    assert len(children) == 4, "an interrupted trial must continue its own federation run, not start a new one"
    rounds = sorted(len(client.get_metric_history(r.info.run_id, "global/val_loss")) for r in children)
    assert rounds[-1] == 3, rounds
    for run in children:  # ASHA's early stops show as KILLED in the MLflow UI, not as failures
        completed = len(client.get_metric_history(run.info.run_id, "global/val_loss"))
        assert run.info.status == ("FINISHED" if completed == 3 else "KILLED"), (completed, run.info.status)
        assert (run.data.tags.get("crossfed.sweep.stopped_early") == "true") == (completed < 3)
    assert rounds[0] < 3, f"ASHA stopped no trial early: rounds per trial {rounds}"
    best_version = client.get_run(parents[0].info.run_id).data.tags["crossfed.sweep.best_model_version"]
    versions = client.search_model_versions("name = 'sweep-base'")  # the base config's name
    assert len(versions) == 1, "only the best trial's model is registered"
    assert str(client.get_model_version_by_alias("sweep-base", "champion").version) == best_version
    assert "pre-trained on" in versions[0].description  # its model card


def test_a_failed_trial_is_one_line_and_the_sweep_goes_on(tmp_path, samples):
    base = base_config(tmp_path, samples)
    raw = yaml.safe_load(base.read_text())
    raw["federation"]["rounds"] = 1
    # Paths relative to the working directory, the MLflow store the default one there: every trial must
    # still write and log where the sweep does, though Tune runs each trial in a folder of its own.
    raw["output_dir"], raw["data"]["cache_dir"] = "runs", "cache"
    del raw["tracking"]["uri"]
    base.write_text(yaml.safe_dump(raw))
    spec = sweep_file(tmp_path, space={"training.lr": {"grid": [0.3, 1e12]}}, asha={"enabled": False})
    done = subprocess.run([sys.executable, "-m", "crossfed", "sweep", str(spec)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    (failure,) = [line for line in done.stdout.splitlines() if "failed:" in line]
    assert "training loss is nan" in failure and "lower training.lr" in failure
    assert Path(failure.rsplit("traceback: ", 1)[1].rstrip(")")).is_file()
    from crossfed.config import load_config

    assert load_config(tmp_path / "runs" / "sweeps" / "sweep" / "best.yaml").training.lr == 0.3
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
    statuses = sorted((r.data.params["training.lr"], r.info.status) for r in runs if r.data.tags.get("mlflow.parentRunId"))
    assert statuses == [("0.3", "FINISHED"), ("1000000000000.0", "FAILED")], statuses


def test_trial_interrupted_before_its_first_report_keeps_one_run(tmp_path, samples):
    """A trial stopped before Tune saw a report finds its own earlier run and continues it (from its newest
    committed round, or its initial model if it committed none), so that each trial keeps exactly one
    MLflow run."""
    from crossfed import tracking
    from crossfed.config import load_config
    from crossfed.sweep.runner import _unreported_run

    config = load_config(base_config(tmp_path, samples))
    with tracking.start_run(config, "sweep-x", mode="sweep") as parent:
        parent_id = parent.info.run_id
    with tracking.start_run(config, "trial_a", mode="federated", parent_run_id=parent_id) as run:
        started = run.info.run_id
    assert _unreported_run(config, parent_id, "trial_a") == started
    assert _unreported_run(config, parent_id, "trial_c") is None


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[2].joinpath("tuning").glob("*.yaml")), ids=str)
def test_shipped_sweeps_are_valid(path):
    from crossfed.sweep.runner import param_space

    sweep = Sweep(path)
    assert sweep.spec.space and param_space(sweep)


def test_the_best_trial_is_the_best_that_completed_with_a_finite_metric_and_a_model(tmp_path, samples):
    from crossfed.sweep.outcome import ranked

    base_config(tmp_path, samples)
    sweep = Sweep(sweep_file(tmp_path))  # global/val_loss, min

    def row(trial, value, error=None, model=True):
        return {"trial": trial, "value": value, "error": error, "model": model}

    rows = [row("failed_after_reporting", 0.1, error="ActorDiedError: ..."),
            row("stopped_early", 0.2, model=False), row("diverged", float("nan")), row("worse", 0.9),
            row("best_completed", 0.5), row("never_reported", None, error="CrossfedError: ...", model=False)]
    assert [r["trial"] for r in ranked(sweep, rows)] == [
        "best_completed", "worse", "failed_after_reporting", "stopped_early", "diverged", "never_reported"]
    with pytest.raises(CrossfedError, match="no trial completed with a finite 'global/val_loss' and a model; "
                                            "first error: ActorDiedError"):
        ranked(sweep, [r for r in rows if r["trial"] not in ("best_completed", "worse")])
