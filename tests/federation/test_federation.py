"""The federation engine on a real multi-node local Ray: pinning, fail-fast placement, a 2-experiment
federation with DeepSpeed ZeRO-2 ranks logged to a real MLflow store, privacy of events, a worker
death, and resume == uninterrupted.

One Ray cluster (head with 0 CPUs, a node labelled cms, a node labelled atlas) serves the module:
starting Ray and DeepSpeed ranks is what costs time here.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

import crossfed
from crossfed.config import config_from_dict
from crossfed.errors import CrossfedError
from crossfed.federation import checkpoint
from crossfed.federation.placement import EXPERIMENT_LABEL
from crossfed.storage import Storage

SCHEMAS = {"cms": "cms_nanoaod", "atlas": "atlas_opendata"}


def make_config(samples, tmp_path, *, pinned=True, workers=1, rounds=2, **federation):
    return config_from_dict({
        "seed": 3,
        "output_dir": str(tmp_path / "runs"),
        "experiments": {
            name: {
                "schema": schema,
                "pretrain": {"files": [str(samples[name]["ttbar"])]},
                "cluster": {"node_group": name if pinned else None, "workers": workers},
            }
            for name, schema in SCHEMAS.items()
        },
        "data": {"cache_dir": str(tmp_path / "cache")},
        "model": {"preset": "tiny"},
        "training": {"batch_size": 32, "eval_batches": 2, "zero_stage": 2, "device": "cpu"},
        "federation": {"rounds": rounds, "local_steps": 2, **federation},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "federation-test"},
    })


def running_driver():
    import ray

    names = [name for name in ray.util.list_named_actors() if name.startswith("crossfed-driver-")]
    assert len(names) == 1, names
    return ray.get_actor(names[0])


def kill_and_wait(actor) -> None:
    """ray.kill is asynchronous: return once the actor is really gone."""
    import ray

    ray.kill(actor, no_restart=True)
    with pytest.raises(ray.exceptions.RayActorError):
        for _ in range(100):
            ray.get(actor.__ray_ready__.remote(), timeout=30)
            time.sleep(0.1)


def model_parameter_shapes(config) -> dict[str, tuple]:
    from crossfed.model import build_model

    model = build_model(config.model, list(config.experiments), list(config.training.tasks))
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def test_start_up_imports_mlflow_in_the_background_and_writes_nothing(tmp_path):
    """While Ray starts, MLflow and its SQL store are imported in a thread (issue 18: ~3 s off start-up);
    nothing is opened or written, so bad input found meanwhile still leaves no store (test below)."""
    import subprocess
    import sys

    script = ("import sys\n"
              "from crossfed.federation.rounds import import_tracking_in_background\n"
              "assert 'mlflow' not in sys.modules, 'imported before start-up'\n"
              "thread = import_tracking_in_background()\n"
              "assert thread.daemon, 'an exit would wait for it'\n"
              "thread.join()\n"
              "assert 'mlflow.store.tracking.sqlalchemy_store' in sys.modules\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_group_that_cannot_host_its_client_fails_fast(cluster, samples, tmp_path):
    from crossfed.federation import run_federation

    config = make_config(samples, tmp_path)
    config.experiments["atlas"].cluster.gpus_per_worker = 1.0
    import ray

    groups_before = len(ray.util.placement_group_table())
    with pytest.raises(CrossfedError) as err:
        run_federation(config)
    # refused before anything started: no placement group reserved (one that no node can host would wait
    # for ever), no MLflow run, no run storage
    assert len(ray.util.placement_group_table()) == groups_before
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
    message = str(err.value)
    assert "node group 'atlas'" in message and f"{EXPERIMENT_LABEL}=atlas" in message
    assert "no node has 1 CPU and 1 GPU free" in message and "nodes:" in message

    config = make_config(samples, tmp_path)
    config.experiments["cms"].cluster.node_group = "lhcb"
    with pytest.raises(CrossfedError, match="node group 'lhcb'.*no node carries this label"):
        run_federation(config)


def test_two_experiment_federation_pins_logs_survives_a_worker_death_and_keeps_events_private(
    cluster, samples, tmp_path
):
    import mlflow
    import ray

    from crossfed.federation import run_federation
    from crossfed.federation.result import load_state

    config = make_config(samples, tmp_path, workers=2, rounds=3, min_clients=1,
                         privacy={"enabled": True, "clip_norm": 1.0, "noise_multiplier": 0.01,
                                  "per_client_metrics": True})  # DP without it: test_privacy_run.py
    shapes = model_parameter_shapes(config)
    event_counts = set()
    seen = {}

    def on_round(round_number: int, record: dict) -> None:
        driver = running_driver()
        clients = ray.get(driver.client_handles.remote())
        # Pinning: every rank of a client runs on its own group's node, also after a restart.
        for name, client in clients.items():
            assert set(ray.get(client.worker_node_ids.remote())) == {cluster[name]}, (round_number, name)
        # Privacy: only shared parameters and scalars reached the driver.
        received = ray.get(driver.received.remote())
        for name, payload in received.items():
            assert set(payload) == {"client", "state", "num_examples", "metrics", "compute_s", "footprint"}
            event_counts.add(payload["num_examples"])
            for key, value in payload["state"].items():
                assert not key.startswith("adapters."), key  # adapters are private by default
                assert key.split(".")[0] in ("backbone", "heads"), key
                assert value.dtype == np.float32 and value.shape == shapes[key], key
                assert payload["num_examples"] not in value.shape, key  # nothing per event
            for value in [*payload["metrics"].values(), *payload["footprint"].values()]:
                assert isinstance(value, float)
        seen[round_number] = (record, sorted(received))
        if round_number == 1:  # a rank of atlas dies: round 2 goes on without atlas, atlas restarts
            kill_and_wait(ray.get(clients["atlas"].worker_actors.remote())[1])

    result = run_federation(config, on_round=on_round, run_name="fed-test")

    # no shared tensor has the number of events in any dimension
    for key, value in load_state(result.global_state_path).items():
        assert not set(value.shape) & event_counts, key
    assert sorted(load_state(result.global_state_path)) == sorted(k for k in shapes if not k.startswith("adapters."))
    assert seen[1][1] == ["atlas", "cms"] and seen[1][0]["clients/updated"] == 2
    assert seen[2][1] == ["cms"] and seen[2][0]["clients/dropped"] == 1  # the dead rank's client was dropped
    assert seen[3][1] == ["atlas", "cms"] and seen[3][0]["clients/updated"] == 2  # and came back

    # checkpoints: the last checkpoint.keep = 2 committed rounds, the driver's and each client's
    run_dir = tmp_path / "runs" / result.run_id
    assert result.run_dir == str(run_dir)
    assert checkpoint.committed_rounds(Storage(result.run_dir)) == [3, 2]
    for name in SCHEMAS:
        assert sorted(p.name for p in (run_dir / "clients" / name).glob("round_*")) == ["round_00002", "round_00003"]

    # each client exports its full model at its own site: the global shared parameters plus its own adapter
    global_state = load_state(result.global_state_path)
    for name in SCHEMAS:
        exported = load_state(result.client_models[name])
        assert Path(result.client_models[name]).parent == run_dir / "clients" / name
        adapters = {k.split(".")[1] for k in exported if k.startswith("adapters.")}
        assert adapters == {name}, "a client holds only its own adapter"
        for key, value in global_state.items():
            np.testing.assert_array_equal(exported[key], value, err_msg=key)

    # MLflow: one parent run with the config, the per-round metrics, tags, the model artifact and version
    client = mlflow.MlflowClient(config.tracking.uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["federation.rounds"] == "3" and run.data.params["training.zero_stage"] == "2"
    assert run.data.tags["crossfed.mode"] == "federated"
    assert run.data.tags["crossfed.data.cms.pretrain"] and "crossfed.version.deepspeed" in run.data.tags
    loss_history = client.get_metric_history(result.run_id, "global/val_loss")
    assert [m.step for m in loss_history] == [1, 2, 3]
    assert all(np.isfinite(m.value) for m in loss_history)
    metrics = run.data.metrics
    for key in ("client/cms/train_loss", "client/atlas/val_loss", "bytes/sent", "bytes/received",
                "time/local_compute_s", "time/transfer_s", "time/aggregation_s", "time/round_s"):
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [1, 2, 3], key
    # one value per run is a parameter, not a one-step series; every metric is a per-round series
    assert float(run.data.params["client.cms.device_hours"]) > 0 and float(run.data.params["client.atlas.wall_s"]) > 0
    # a client's footprint is its two ranks' own measurements summed: more device-hours than one rank's
    cpus = config.experiments["cms"].cluster.cpus_per_worker
    for hours, wall in zip(client.get_metric_history(result.run_id, "client/cms/round_device_hours"),
                           client.get_metric_history(result.run_id, "client/cms/round_wall_s"), strict=True):
        assert wall.value * cpus / 3600 < hours.value <= 2 * wall.value * cpus / 3600, (hours, wall)
    # energy where no hardware counter measured it (no readable RAPL, no GPU): nothing logged, never a 0
    from crossfed.federation.footprint import RankMeter

    if RankMeter(1.0, 0.0, []).tracker is None:
        assert not [key for key in [*metrics, *run.data.params] if "energy" in key]
    for key in metrics:  # the round metrics; system metrics (system/<client>/...) are samples in time
        if not key.startswith("system/"):
            assert {m.step for m in client.get_metric_history(result.run_id, key)} <= {1, 2, 3}, key
    for name in SCHEMAS:  # each client's node samples: numbered from 0, taken while the run ran
        samples = client.get_metric_history(result.run_id, f"system/{name}/cpu_utilization_percentage")
        assert samples and sorted(m.step for m in samples) == list(range(len(samples))), name
        assert all(run.info.start_time <= m.timestamp <= run.info.end_time for m in samples), name
    # the round time is the whole round: at least its slowest client's training plus the aggregation
    for round_s, compute_s in zip(client.get_metric_history(result.run_id, "time/round_s"),
                                  client.get_metric_history(result.run_id, "time/local_compute_s")):
        assert round_s.value >= compute_s.value > 0
    # the run says what it is and which crossfed made it
    assert "Federated pre-training" in run.data.tags["mlflow.note.content"]
    assert run.data.tags["crossfed.version"] == crossfed.__version__
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", run.data.tags["crossfed.git_commit"])  # tests run from a checkout
    assert run.data.tags["mlflow.source.git.commit"] == run.data.tags["crossfed.git_commit"].removesuffix("-dirty")
    shared_bytes = sum(np.prod(s) * 4 for k, s in shapes.items() if not k.startswith("adapters."))
    assert [m.value for m in client.get_metric_history(result.run_id, "bytes/sent")] == [2 * shared_bytes] * 3
    assert [m.value for m in client.get_metric_history(result.run_id, "bytes/received")] == [
        2 * shared_bytes, shared_bytes, 2 * shared_bytes]
    epsilons = [m.value for m in client.get_metric_history(result.run_id, "privacy/epsilon")]
    assert len(epsilons) == 3 and 0 < epsilons[0] < epsilons[1] < epsilons[2]
    assert "model/artifacts/state.npz" in [a.path for a in client.list_artifacts(result.run_id, "model/artifacts")]
    # each experiment's model is named where it is, at its client's site (private adapters are not uploaded)
    info = json.loads(Path(client.download_artifacts(result.run_id, "model/artifacts/crossfed.json")).read_text())
    assert info["site_models"] == result.client_models and info["model"]["preset"] == "tiny"
    # registered under the config's name, tagged with how it was trained, described by its model card
    versions = client.search_model_versions(f"name='{config.name}'")
    assert [v.run_id for v in versions] == [result.run_id]
    assert versions[0].tags == {"method": "federated", "experiments": "cms,atlas", "strategy": "fedavg", "rounds": "3"}
    card = versions[0].description
    assert result.run_id in card and "strategy fedavg, 3 rounds" in card
    assert f"differentially private: ε = {epsilons[-1]:.3g}" in card and "Events processed in training: atlas " in card
    assert f"cms.pretrain (fingerprint {run.data.tags['crossfed.data.cms.pretrain']}, " in card
    assert "device-hours" in card and "device-hours not measured" not in card
    # the data as the run's MLflow inputs, with the fingerprints the tags hold
    inputs = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert {k: d.digest for k, d in inputs.items()} == {
        f"{name}.pretrain": run.data.tags[f"crossfed.data.{name}.pretrain"] for name in SCHEMAS}
    assert json.loads(inputs["cms.pretrain"].profile)["events_in_files"] > 0
    check_the_models_load_with_mlflow(config, result, versions[0].version)


def check_the_models_load_with_mlflow(config, result, version):
    """The registered global model loads with mlflow.pyfunc from the store; it holds no private adapter, so
    it refuses to embed cms's events and names cms's model at its site. That site model embeds them as the
    in-process network with the same parameters does."""
    import mlflow
    import torch

    from crossfed.data.reader import read_events
    from crossfed.federation.result import load_state
    from crossfed.model import build_model

    events, _ = read_events(config.experiments["cms"].pretrain.files, "cms_nanoaod", max_events=40,
                            max_objects=config.data.max_objects)
    arrays = {"features": events.features, "types": events.types, "mask": events.mask}
    mlflow.set_tracking_uri(config.tracking.uri)
    global_model = mlflow.pyfunc.load_model(f"models:/{config.name}/{version}")
    assert global_model.metadata.get_input_schema().input_names() == ["features", "types", "mask"]
    with pytest.raises(Exception, match=f"no input adapter for cms.*{re.escape(result.client_models['cms'])}"):
        global_model.predict(arrays, params={"experiment": "cms"})
    embeddings = mlflow.pyfunc.load_model(result.client_models["cms"]).predict(arrays, params={"experiment": "cms"})

    network = build_model(config.model, ["cms"], list(config.training.tasks))
    network.load_state_dict({k: torch.as_tensor(v) for k, v in load_state(result.client_models["cms"]).items()})
    network.eval()
    with torch.no_grad():
        features, types, mask = (torch.as_tensor(events.features), torch.as_tensor(events.types.astype(np.int64)),
                                 torch.as_tensor(events.mask))
        expected = network.pool(network.encode(features, types, mask, "cms"), mask).numpy()
    assert embeddings.shape == (len(events), network.dim)
    np.testing.assert_allclose(embeddings, expected, rtol=1e-5, atol=1e-6)


class DriverDied(Exception):
    pass


def test_retried_round_and_resume_after_driver_death_both_equal_a_clean_run(cluster, samples, tmp_path):
    """Training is deterministic per client, round and rank, and both recoveries restore exact state:

    - reference: a rank of atlas dies after round 1; with min_clients=2 round 2 is retried, every client
      restarting from its round-1 checkpoint;
    - interrupted: the driver dies after round 1; `resume` continues from the last completed round.
    Each equals a fault-free run if its recovery is exact, so they must agree bit for bit (fedavgm: the
    server momentum must be restored too).
    """
    import ray

    from crossfed.federation import run_federation
    from crossfed.federation.result import load_state

    config = make_config(samples, tmp_path, pinned=False, rounds=2, min_clients=2, strategy={"name": "fedavgm"})

    def kill_a_rank_after_round_one(round_number: int, record: dict) -> None:
        if round_number == 1:
            clients = ray.get(running_driver().client_handles.remote())
            kill_and_wait(ray.get(clients["atlas"].worker_actors.remote())[0])

    reference = run_federation(config, run_name="retried", on_round=kill_a_rank_after_round_one)
    assert [r["round/attempt"] for r in reference.history] == [0, 1]
    assert [r["clients/updated"] for r in reference.history] == [2, 2]

    def die_after_round_one(round_number: int, record: dict) -> None:
        raise DriverDied(f"driver gone after round {round_number}")

    with pytest.raises(DriverDied):
        run_federation(config, run_name="interrupted", on_round=die_after_round_one)
    resumed = run_federation(config, resume="interrupted")

    assert [r["round"] for r in resumed.history] == [1, 2]
    expected, actual = load_state(reference.global_state_path), load_state(resumed.global_state_path)
    assert sorted(expected) == sorted(actual)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
    assert resumed.history[-1]["global/val_loss"] == reference.history[-1]["global/val_loss"]


def test_committing_every_second_round_resumes_from_the_last_commit_to_the_same_model_logging_each_round_once(
    cluster, samples, tmp_path
):
    """checkpoint.every: 2 commits rounds 2 and 4 only. A driver that dies after round 3 (trained, not
    committed) leaves MLflow with rounds 1-2; the resume runs round 3 again from the round-2 commit and ends
    with the uninterrupted run's model, each round logged once. The uninterrupted run and the resume write
    their commits in the background (`checkpoint.background`): the same model, bit for bit. They log no
    system metrics (`tracking.system_metrics: false`; `tracking.*` may change on resume)."""
    import mlflow

    from crossfed.federation import run_federation
    from crossfed.federation.result import load_state

    base = make_config(samples, tmp_path, pinned=False, rounds=4)
    config = config_from_dict({**base.model_dump(mode="json", by_alias=True), "checkpoint": {"every": 2, "keep": 3}})
    dumped = config.model_dump(mode="json", by_alias=True)
    in_background = config_from_dict({**dumped, "checkpoint": {"every": 2, "keep": 3, "background": True},
                                      "tracking": {**dumped["tracking"], "system_metrics": False}})
    reference = run_federation(in_background, run_name="uninterrupted")
    logged = mlflow.MlflowClient(config.tracking.uri).get_run(reference.run_id).data.metrics
    assert "clients/sampled" in logged and not [key for key in logged if key.startswith("system/")]

    def die_after_round_three(round_number: int, record: dict) -> None:
        if round_number == 3:
            raise DriverDied("driver gone after round 3")

    with pytest.raises(DriverDied):
        run_federation(config, run_name="interrupted", on_round=die_after_round_three)
    client = mlflow.MlflowClient(config.tracking.uri)
    (interrupted,) = client.search_runs([client.get_experiment_by_name("federation-test").experiment_id],
                                        "attributes.run_name = 'interrupted'")
    run_id = interrupted.info.run_id
    assert [m.step for m in client.get_metric_history(run_id, "clients/sampled")] == [1, 2]  # committed only
    storage = Storage(str(tmp_path / "runs" / run_id))
    assert checkpoint.committed_rounds(storage) == [2, 0]
    assert sorted(p.name for p in (tmp_path / "runs" / run_id / "clients" / "cms").glob("round_*")) == [
        "round_00000", "round_00002"]

    resumed = run_federation(in_background, resume="interrupted")
    assert [r["round"] for r in resumed.history] == [1, 2, 3, 4]
    for key in ("clients/sampled", "global/val_loss"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2, 3, 4], key
    assert checkpoint.committed_rounds(storage) == [4, 2, 0]
    expected, actual = load_state(reference.global_state_path), load_state(resumed.global_state_path)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def test_a_straggler_past_the_round_timeout_is_dropped_and_the_round_goes_on(cluster, samples, tmp_path):
    import ray

    from crossfed.federation import run_federation

    config = make_config(samples, tmp_path, rounds=3, min_clients=1, round_timeout_s=8.0)

    def on_round(round_number: int, record: dict) -> None:
        if round_number == 1:
            # Every atlas rank is kept busy for 20 s (sleeping, so cms is not slowed) ahead of round 2's
            # training: atlas becomes a straggler.
            atlas = ray.get(running_driver().client_handles.remote())["atlas"]
            for worker in ray.get(atlas.worker_actors.remote()):
                worker.__ray_call__.remote(lambda _actor: time.sleep(20))

    started = time.monotonic()
    result = run_federation(config, on_round=on_round, run_name="straggler-test")
    rounds = {record["round"]: record for record in result.history}
    assert len(rounds) == 3
    assert rounds[2]["clients/updated"] == 1 and rounds[2]["clients/dropped"] == 1
    assert "client/cms/train_loss" in rounds[2] and "client/atlas/train_loss" not in rounds[2]
    assert time.monotonic() - started < 300
