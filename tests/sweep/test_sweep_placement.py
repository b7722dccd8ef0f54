"""A sweep on a multi-node cluster: every trial's clients stay on their node groups inside the trial's
placement group (each trial's run records its clients' and ranks' nodes), and a trial that scored best but
failed is passed over for the best completed one.

Two labelled nodes (cms, atlas) of 2 CPUs each host two trials at once, one worker per client. The sweep
compares private against shared adapters (`tuning/sharing.yaml`'s question) on `bytes/sent`, which is
known in advance: sharing only the backbone sends fewer bytes, so that trial scores best, and the test
kills its driver once Tune holds its first report. Its reported value stays the best; it has no model.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import mlflow
import yaml


def write_sweep(tmp_path, samples):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({
        "seed": 1, "output_dir": str(tmp_path / "runs"),
        "experiments": {name: {"schema": schema, "pretrain": {"files": [str(samples[name]["ttbar"])]},
                               "cluster": {"node_group": name, "workers": 1}}
                        for name, schema in (("cms", "cms_nanoaod"), ("atlas", "atlas_opendata"))},
        "data": {"cache_dir": str(tmp_path / "cache")}, "model": {"preset": "tiny"},
        "training": {"batch_size": 32, "eval_batches": 2, "device": "cpu"},
        "federation": {"rounds": 2, "local_steps": 2},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "placement"},
    }))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "base": "base.yaml", "metric": "bytes/sent", "mode": "min", "algorithm": "grid", "max_concurrent": 2,
        "space": {"federation.shared": {"grid": [["backbone"], ["backbone", "heads", "adapter"]]}},
        "asha": {"enabled": False},
    }))
    return path


def kill_the_best_trial(trials: Path, stop: threading.Event) -> None:
    """Kill the driver of the backbone-only trial once Tune holds its round-1 report (the report's
    checkpoint folder exists)."""
    import ray

    while not stop.is_set():
        if list(trials.glob("*federation_shared=backbone_2*/checkpoint_000000")):
            for entry in ray.util.list_named_actors(all_namespaces=True):
                if not entry["name"].startswith("crossfed-driver-"):
                    continue
                try:
                    driver = ray.get_actor(entry["name"], namespace=entry["namespace"])
                    shared = ray.get(driver.__ray_call__.remote(lambda d: tuple(d.config.federation.shared)),
                                     timeout=30)
                    if shared == ("backbone",):
                        ray.kill(driver)
                        return
                except (ray.exceptions.RayError, ValueError):
                    continue  # a trial ending as it is looked at
        time.sleep(0.2)


def test_sweep_keeps_clients_on_their_groups_and_registers_the_best_completed_trial(cluster, samples, tmp_path):
    from crossfed.config import load_config
    from crossfed.sweep import run_sweep

    path = write_sweep(tmp_path, samples)
    stop = threading.Event()
    trials = tmp_path / "runs" / "sweeps" / "sweep"
    killer = threading.Thread(target=kill_the_best_trial, args=(trials, stop), daemon=True)
    killer.start()
    try:
        result = run_sweep(path)
    finally:
        stop.set()
        killer.join(timeout=60)

    # Every trial's run records where its clients and their ranks ran (as the actors themselves said).
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    trial_runs = client.search_runs([client.get_run(result.parent_run_id).info.experiment_id],
                                    f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert sorted(run.info.run_name for run in trial_runs) == sorted(row["trial"] for row in result.rows)
    for run in trial_runs:
        for name, node in cluster.items():
            assert run.data.tags[f"crossfed.client.{name}.node"] == node, (run.info.run_name, name)
            assert run.data.tags[f"crossfed.client.{name}.worker_nodes"] == node, (run.info.run_name, name)
    by_sharing = {tuple(row["params"]["federation.shared"]): row for row in result.rows}
    failed, completed = by_sharing[("backbone",)], by_sharing[("backbone", "heads", "adapter")]
    assert failed["error"] and failed["value"] < completed["value"]  # it did score best, then failed
    assert completed["error"] is None and completed["rounds"] == 2
    assert result.rows[0] is completed
    assert load_config(result.best_config_path).federation.shared == ["backbone", "heads", "adapter"]

    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["crossfed.sweep.best_trial"] == completed["trial"]
    (version,) = client.search_model_versions("name = 'crossfed'")  # the config's (default) name
    trial_run = client.get_run(version.run_id)
    assert trial_run.info.run_name == completed["trial"] and trial_run.info.status == "FINISHED"
