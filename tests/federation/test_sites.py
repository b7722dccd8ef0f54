"""The federation as a real cluster runs it: nodes that share no folder, storage on S3, data at its site.

A 2-node `ray.cluster_utils.Cluster` plus a head: each node starts in its own working folder with its own
temporary folder, and an experiment's events exist only in its node's folder (`events/<name>.root`,
relative paths), so a client placed on the wrong node, or a driver that opened the data, would fail.
Run storage is a bucket on a real S3 endpoint (moto's server on 127.0.0.1, through s3fs). Every client
has 2 DeepSpeed ranks. The driver process is killed with SIGKILL at a random point and the run resumed:
it must end with exactly the model of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from crossfed.config import config_from_dict
from crossfed.federation import checkpoint
from crossfed.federation.placement import EXPERIMENT_LABEL
from crossfed.storage import Storage

SITES = {"cms": "cms_nanoaod", "atlas": "atlas_opendata"}
ROUNDS = 2
# The killed run's driver process: a separate Python joining the cluster, as `crossfed pretrain --address` is.
DRIVER_SCRIPT = """
import json, sys
from crossfed.config import config_from_dict
from crossfed.federation import run_federation
run_federation(config_from_dict(json.loads(sys.argv[1])), mode=sys.argv[2], experiment=sys.argv[3] or None,
               run_name="killed", address=sys.argv[4])
"""


@pytest.fixture(scope="module")
def sites(tmp_path_factory, samples, s3_endpoint):
    """{"root", "head", "address", "cms"/"atlas": node folder}; the cluster runs while the module does."""
    import ray
    from ray.cluster_utils import Cluster

    root = tmp_path_factory.mktemp("sites")
    folders = {name: root / name for name in ["head", *SITES]}
    for name, folder in folders.items():
        (folder / "tmp").mkdir(parents=True)
        if name in SITES:
            (folder / "events").mkdir()
            shutil.copy(samples[name]["ttbar"], folder / "events" / f"{name}.root")
    if ray.is_initialized():
        ray.shutdown()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
    before = Path.cwd()
    try:
        # A node's processes start in the folder its raylet was started from, with its own TMPDIR.
        os.chdir(folders["head"])
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "include_dashboard": False, "env_vars": {"TMPDIR": str(folders["head"] / "tmp")}})
        for name in SITES:
            os.chdir(folders[name])
            cluster.add_node(num_cpus=2, labels={EXPERIMENT_LABEL: name},
                             env_vars={"TMPDIR": str(folders[name] / "tmp")})
        os.chdir(folders["head"])  # this process is the driver's: no events here
        ray.init(address=cluster.address, logging_level="WARNING")
        yield {"root": root, "address": cluster.address, **folders}
    finally:
        ray.shutdown()
        os.chdir(before)
        cluster.shutdown()


def site_config(sites, storage: str, *, zero_stage: int, experiments=tuple(SITES)):
    return {
        "seed": 11,
        "output_dir": storage,
        "experiments": {
            name: {
                "schema": SITES[name],
                "pretrain": {"files": [f"events/{name}.root"]},  # relative: the site's own folder
                "cluster": {"node_group": name, "workers": 2},
            }
            for name in experiments
        },
        "model": {"preset": "tiny"},
        "training": {"batch_size": 32, "eval_batches": 2, "zero_stage": zero_stage, "device": "cpu",
                     "optimizer": "adamw", "lr": 0.01},
        "federation": {"rounds": ROUNDS, "local_steps": 2, "strategy": {"name": "fedavgm"}, "min_clients": 2},
        "tracking": {"uri": f"sqlite:///{sites['head'] / 'mlflow.db'}", "experiment": "sites"},
    }


def kill_at_random_point(sites, raw: dict, mode: str, experiment: str | None, rounds: list[int],
                         round_s: float) -> str:
    """Run the federation in its own driver process and SIGKILL it at a random moment of a round drawn from
    `rounds`: once the round before it is committed, after a random part of `round_s` (how long a round of
    the uninterrupted run took). The killed run's id."""
    seed = int(os.environ.get("CROSSFED_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    target, delay = rng.choice(rounds), rng.uniform(0.0, 0.5) * round_s
    where = f"kill in round {target}, {delay:.2f} s after round {target - 1} committed (CROSSFED_KILL_SEED={seed})"
    storage = Storage(raw["output_dir"])
    driver = subprocess.Popen([sys.executable, "-c", DRIVER_SCRIPT, json.dumps(raw), mode, experiment or "",
                               sites["address"]], cwd=sites["head"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and driver.poll() is None:
        runs = storage.listdir()
        if runs and max(checkpoint.committed_rounds(storage.child(runs[0])), default=-1) >= target - 1:
            time.sleep(delay)
            break
        time.sleep(0.1)
    assert driver.poll() is None, f"{where}: the driver process ended first: {driver.communicate()[1][-2000:]}"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    (run_id,) = storage.listdir()
    committed = checkpoint.committed_rounds(storage.child(run_id))
    assert max(committed) == target - 1, f"{where}: committed {committed}"  # killed inside round `target`
    wait_for_free_cpus()  # Ray ends the killed job's actors in the background
    return run_id


def wait_for_free_cpus(timeout_s: float = 120.0) -> None:
    import ray

    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0):
        assert time.monotonic() < deadline, "the killed run's workers still hold CPUs"
        time.sleep(0.5)


def assert_same_models(resumed, uninterrupted) -> None:
    from crossfed.federation.result import load_state

    pairs = [(resumed.global_state_path, uninterrupted.global_state_path)]
    pairs += [(resumed.client_models[name], uninterrupted.client_models[name]) for name in uninterrupted.client_models]
    for actual_path, expected_path in pairs:
        actual, expected = load_state(actual_path), load_state(expected_path)
        assert sorted(actual) == sorted(expected)
        for key in expected:  # bit for bit: every RNG, data cursor, optimizer and server state is restored
            np.testing.assert_array_equal(actual[key], expected[key], err_msg=f"{actual_path}: {key}")


@pytest.fixture(scope="module")
def zero2_run(sites, s3_endpoint):
    """(raw config, result) of an uninterrupted federation: ZeRO-2, 2 clients × 2 ranks, S3 storage."""
    import boto3

    from crossfed.federation import run_federation

    boto3.client("s3").create_bucket(Bucket="zero2")
    raw = site_config(sites, "s3://zero2/uninterrupted", zero_stage=2)
    return raw, run_federation(config_from_dict(raw), run_name="uninterrupted")


def test_a_federation_killed_mid_round_resumes_to_the_uninterrupted_model_with_data_and_storage_at_sites(
        sites, zero2_run):
    """ZeRO-2, 2 clients × 2 ranks; S3 storage; the driver process killed with SIGKILL in a random round."""
    import mlflow

    from crossfed.data.records import fingerprint
    from crossfed.federation import run_federation

    raw, uninterrupted = zero2_run
    assert uninterrupted.global_state_path == f"s3://zero2/uninterrupted/{uninterrupted.run_id}/global_final.npz"

    killed = {**raw, "output_dir": "s3://zero2/killed"}
    run_id = kill_at_random_point(sites, killed, "federated", None, rounds=list(range(1, ROUNDS + 1)),
                                  round_s=min(r["time/round_s"] for r in uninterrupted.history))
    resumed = run_federation(config_from_dict(killed), resume=run_id)
    assert resumed.run_id == run_id and [r["round"] for r in resumed.history] == list(range(1, ROUNDS + 1))
    assert_same_models(resumed, uninterrupted)
    assert resumed.history[-1]["global/val_loss"] == uninterrupted.history[-1]["global/val_loss"]

    # The data stayed at its site: the fingerprints logged are its sites' (the driver's folder has no
    # events), the ones of the files each site holds.
    client = mlflow.MlflowClient(raw["tracking"]["uri"])
    for run in (uninterrupted.run_id, resumed.run_id):
        tags = client.get_run(run).data.tags
        for name in SITES:
            expected = fingerprint([str(sites[name] / "events" / f"{name}.root")])
            assert tags[f"crossfed.data.{name}.pretrain"] == expected
    assert not (sites["head"] / "events").exists()
    # Nothing of the runs landed on a local disk: checkpoints, markers and models are all in the bucket.
    assert not [p for p in sites["root"].rglob("*") if p.name in ("COMMITTED", "MANIFEST", "global.npz")]
    for folder in [sites["head"], *(sites[name] for name in SITES)]:
        assert not (folder / "runs").exists()


def test_a_zero3_run_killed_before_its_first_commit_resumes_from_the_initial_model(sites, s3_bucket):
    """ZeRO-3, one client with 2 ranks (local mode on cms); killed in round 1: only round 0 is committed."""
    from crossfed.federation import run_federation

    raw = site_config(sites, f"s3://{s3_bucket}/uninterrupted", zero_stage=3, experiments=("cms",))
    raw["federation"]["min_clients"] = 1
    raw["training"]["steps"] = 4
    uninterrupted = run_federation(config_from_dict(raw), mode="local", experiment="cms", run_name="uninterrupted")
    killed = {**raw, "output_dir": f"s3://{s3_bucket}/killed"}
    run_id = kill_at_random_point(sites, killed, "local", "cms", rounds=[1],
                                  round_s=min(r["time/round_s"] for r in uninterrupted.history))
    resumed = run_federation(config_from_dict(killed), mode="local", experiment="cms", resume=run_id)
    assert [r["round"] for r in resumed.history] == list(range(1, ROUNDS + 1))
    assert_same_models(resumed, uninterrupted)


DAMAGED_KINDS = {  # file in the newest round (2) -> the note naming it
    "rounds/round_00002/global.npz": "driver checkpoint damaged (global.npz: {problem})",
    "rounds/round_00002/driver.pkl": "driver checkpoint damaged (driver.pkl: {problem})",
    "rounds/round_00002/COMMITTED": "commit marker damaged (not the JSON a commit writes)",
    "clients/cms/round_00002/MANIFEST": "cms checkpoint damaged (round_00002/MANIFEST: {problem})",
    "clients/cms/round_00002/client/mp_rank_00_model_states.pt":
        "cms checkpoint damaged (round_00002/client/mp_rank_00_model_states.pt: {problem})",
    "clients/atlas/round_00002/client/zero_pp_rank_1_mp_rank_00_optim_states.pt":
        "atlas checkpoint damaged (round_00002/client/zero_pp_rank_1_mp_rank_00_optim_states.pt: {problem})",
    "clients/cms/round_00002/client/rank_1_trainer_state.pt":
        "cms checkpoint damaged (round_00002/client/rank_1_trainer_state.pt: {problem})",
}


def test_every_kind_of_damaged_checkpoint_file_is_named_and_the_round_before_it_resumed(sites, zero2_run):
    """Each file of the newest round truncated or emptied: one line names it and round 1 is chosen; damaged
    in both kept rounds: an error naming the run and both. Checked by the clients at their sites (their
    actors, not started: no DeepSpeed needed to verify)."""
    import ray

    from crossfed.errors import CrossfedError
    from crossfed.federation import placement
    from crossfed.federation.client import client_actor_class
    from crossfed.federation.driver import FederationDriver
    from crossfed.federation.rounds import plan_rounds

    raw, result = zero2_run
    config = config_from_dict(raw)
    plan = plan_rounds(config, "federated", None)
    driver = FederationDriver(config, plan, result.run_dir)
    driver.clients = {
        spec.name: client_actor_class().options(label_selector=placement.label_selector(spec.cluster)).remote(
            config, spec.name, spec.experiments, spec.cluster, result.run_dir, 4, None)
        for spec in plan.clients
    }
    run = Storage(result.run_dir)
    assert checkpoint.committed_rounds(run) == [2, 1]
    try:
        for name, note in DAMAGED_KINDS.items():
            intact = run.read_bytes(name)
            for damaged, problem in ((intact[: len(intact) // 2], f"truncated: {len(intact) // 2} of {len(intact)} "
                                      "bytes"), (b"", f"empty: 0 of {len(intact)} bytes")):
                run.write_bytes(name, damaged)
                found, notes = driver.newest_intact_round(logged_rounds=2)
                assert found.round == 1, name
                assert notes == [f"round 2: {note.format(problem=problem)}; resuming from round 1"], notes
            run.write_bytes(name, intact)
        found, notes = driver.newest_intact_round(logged_rounds=2)
        assert found.round == 2 and notes == []

        trainer_state = "clients/cms/round_0000{}/client/rank_0_trainer_state.pt"
        for round_number in (1, 2):
            run.write_bytes(trainer_state.format(round_number), b"")
        with pytest.raises(CrossfedError) as err:
            driver.newest_intact_round(logged_rounds=2)
        message = str(err.value)
        assert message.startswith(f"cannot resume run {result.run_dir}: no intact committed round left (round 2: "
                                  "cms checkpoint damaged (round_00002/client/rank_0_trainer_state.pt: empty: 0 of ")
        assert "; round 1: cms checkpoint damaged (round_00001/client/rank_0_trainer_state.pt: empty" in message
        assert "\n" not in message
    finally:
        for client in driver.clients.values():
            ray.kill(client)
