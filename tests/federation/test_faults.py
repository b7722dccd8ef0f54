"""Faults in the middle of a round, as a cluster meets them: processes killed with SIGKILL by pid while
they train, and a run that fails after it has started.

One Ray cluster (head with 0 CPUs, a node labelled cms, a node labelled atlas), real DeepSpeed ranks,
a real MLflow store. The federation here shares its input adapter too (`federation.shared` with `adapter`,
the "common space" ablation), so the same run shows that a shared-adapter federation works.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from crossfed.errors import CrossfedError
from test_federation import SCHEMAS, make_config, running_driver


def pid_of(actor) -> int:
    import ray

    return ray.get(actor.__ray_call__.remote(lambda _self: os.getpid()), timeout=60)


def node_of(actor) -> str:
    import ray

    return ray.get(actor.__ray_call__.remote(lambda _self: ray.get_runtime_context().get_node_id()), timeout=60)


def kill_during_next_training(client, victim_pid: int, after_s: float = 6.0) -> threading.Timer:
    """SIGKILL `victim_pid` while `client`'s next local training is under way.

    Rank 1's next `train` call first sleeps: rank 0, training, then waits for it inside the first gradient
    collective. `after_s` into the round both ranks are inside `LocalTrainer.train` and the victim (rank 0,
    or the client actor itself) is killed there.
    """
    import ray

    def sleep_in_next_train(worker) -> None:
        trainer, train = worker.trainer, worker.trainer.train

        def sleepy_train(*args, **kwargs):
            trainer.train = train
            time.sleep(40)
            return train(*args, **kwargs)

        trainer.train = sleepy_train

    rank_1 = ray.get(client.worker_actors.remote())[1]
    ray.get(rank_1.__ray_call__.remote(sleep_in_next_train), timeout=60)
    killer = threading.Timer(after_s, os.kill, (victim_pid, signal.SIGKILL))
    killer.start()
    return killer


def test_a_rank_and_a_client_actor_killed_mid_training_cost_their_round_and_come_back(cluster, samples, tmp_path):
    import mlflow
    import ray

    from crossfed.federation import run_federation
    from crossfed.federation.result import load_state
    from crossfed.model import build_model

    config = make_config(samples, tmp_path, workers=2, rounds=4, min_clients=1, local_steps=3,
                         shared=["backbone", "heads", "adapter"])
    seen, killers = {}, []

    def on_round(round_number: int, record: dict) -> None:
        driver = running_driver()
        clients = ray.get(driver.client_handles.remote())
        received = sorted(ray.get(driver.received.remote()))
        seen[round_number] = (record, received)
        for name in received:  # every client that trained, and its ranks, ran on its own group's node
            assert node_of(clients[name]) == cluster[name], (round_number, name)
            assert set(ray.get(clients[name].worker_node_ids.remote())) == {cluster[name]}, (round_number, name)
        if round_number == 1:  # round 2: a DeepSpeed rank of atlas dies while it trains
            atlas_rank_0 = ray.get(clients["atlas"].worker_actors.remote())[0]
            killers.append(kill_during_next_training(clients["atlas"], pid_of(atlas_rank_0)))
        if round_number == 2:  # round 3: the cms client actor itself dies while its ranks train
            killers.append(kill_during_next_training(clients["cms"], pid_of(clients["cms"])))

    result = run_federation(config, on_round=on_round, run_name="faults")
    for killer in killers:
        killer.join()

    rounds = {number: record for number, (record, _) in seen.items()}
    assert [seen[r][1] for r in (1, 2, 3, 4)] == [["atlas", "cms"], ["cms"], ["atlas"], ["atlas", "cms"]]
    assert rounds[2]["clients/dropped"] == 1 and rounds[3]["clients/dropped"] == 1
    # the dead client was neither evaluated nor reported in its round, and rejoined the next one
    assert "client/cms/val_loss" not in rounds[3] and "client/atlas/val_loss" in rounds[3]
    assert rounds[4]["clients/rejoined"] == 1 and rounds[4]["clients/updated"] == 2
    assert all(np.isfinite(rounds[r]["global/val_loss"]) for r in rounds)

    # checkpoints: each client's newest is the last round; cms's round-3 checkpoint was never written
    from crossfed.federation import checkpoint
    from crossfed.storage import Storage

    run_dir = tmp_path / "runs" / result.run_id
    assert checkpoint.committed_rounds(Storage(str(run_dir)))[0] == 4
    for name in SCHEMAS:
        assert (run_dir / "clients" / name / "round_00004").is_dir()

    # the common adapter: shared like the backbone, one copy for both experiments, in every exported model
    model = build_model(config.model, list(SCHEMAS), list(config.training.tasks), common_adapter=True)
    global_state = load_state(result.global_state_path)
    adapter_keys = sorted(k for k in global_state if k.startswith("adapters."))
    assert adapter_keys and all(k.startswith("adapters.common.") for k in adapter_keys)
    assert sorted(global_state) == sorted(name for name, _ in model.named_parameters())
    for name in SCHEMAS:
        exported = load_state(result.client_models[name])
        for key, value in global_state.items():
            np.testing.assert_array_equal(exported[key], value, err_msg=key)

    client = mlflow.MlflowClient(config.tracking.uri)
    assert client.get_run(result.run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(result.run_id, "global/val_loss")] == [1, 2, 3, 4]


def test_a_run_that_fails_after_it_started_states_the_error_in_its_description(cluster, samples, tmp_path):
    import mlflow

    from crossfed.federation import run_federation

    config = make_config(samples, tmp_path, pinned=False, rounds=1)
    config.training.lr = 1e12  # diverges in the first round
    with pytest.raises(CrossfedError, match="training loss is nan") as err:
        run_federation(config, mode="local", experiment="cms", run_name="diverges")
    client = mlflow.MlflowClient(config.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("federation-test").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["mlflow.note.content"] == f"failed: {err.value}"


def test_a_signal_stops_the_wait_on_the_federation_at_once(cluster, python_signal_handlers):
    """The rounds' wait on Ray (`rounds._get`) is where SIGINT/SIGTERM are let through (`federation.interrupts`)."""
    import ray
    from crossfed.federation.interrupts import interrupted_by_signals
    from crossfed.federation.rounds import _get

    slow = ray.remote(num_cpus=0)(lambda: time.sleep(60)).remote()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt), interrupted_by_signals():  # Ray's wait raises its own, unnamed
        threading.Timer(1.0, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)).start()
        _get(slow)
    assert time.monotonic() - started < 30
    ray.cancel(slow, force=True)
