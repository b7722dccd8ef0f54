"""The round's steps one at a time, on a driver instance, with the recovery state's invariants.

The maths steps (sample, validate, privatise, aggregate) need nothing but the driver. The steps that
talk to clients (broadcast, collect, evaluate, commit) run on a real local Ray against scripted client
actors that answer `fit` as a test tells them (train, fail, die, be too slow) and record what they were
asked: the steps' own logic, without DeepSpeed. The whole round with real clients is test_federation.py's.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from crossfed.config import config_from_dict
from crossfed.errors import CrossfedError
from crossfed.federation import checkpoint
from crossfed.federation.driver import FederationDriver, RecoveryState, periodic_round, sample_clients
from crossfed.federation.rounds import plan_rounds
from crossfed.federation.strategies import ClientUpdate
from crossfed.federation.validation import update_norm
from crossfed.storage import FileEntry, Storage

NAMES = ("cms", "atlas", "lhcb", "alice")


def make_driver(tmp_path, mode="federated", keep=2, every=1, background=False, **federation) -> FederationDriver:
    config = config_from_dict({
        "seed": 5,
        "checkpoint": {"keep": keep, "every": every, "background": background},
        "experiments": {name: {"schema": "cms_nanoaod", "pretrain": {"files": ["unused.root"]}} for name in NAMES},
        "federation": {"rounds": 3, "local_steps": 4, **federation},
    })
    driver = FederationDriver(config, plan_rounds(config, mode, "cms" if mode == "local" else None),
                              str(tmp_path / "run"))
    driver.global_state = {"w": np.zeros(3, np.float32), "b": np.ones(2, np.float32)}
    return driver


def update(name, shift, global_state, examples=10):
    return ClientUpdate(name, {k: v + np.float32(shift) for k, v in global_state.items()}, examples)


def manifest(name: str, round_number: int) -> FileEntry:
    """The MANIFEST entry a scripted client reports for its checkpoint of a round."""
    return FileEntry.of(f"{name} {round_number}".encode())


class ScriptedClient:
    """A client actor's protocol (fit, evaluate, restore, save, prune), answered as scripted; calls are
    recorded."""

    def __init__(self, name: str, behaviour: str = "train", seconds: float = 0.0):
        self.name, self.behaviour, self.seconds, self.calls = name, behaviour, seconds, []

    def fit(self, global_ref, groups, steps, proximal_mu, checkpoint_round, privacy=None):
        import ray

        self.calls.append(("fit", steps, proximal_mu, checkpoint_round) + ((privacy,) if privacy else ()))
        if self.behaviour == "die":
            os._exit(1)
        if self.behaviour == "fail":
            return {"client": self.name, "failed": "worker died: ActorDiedError"}
        time.sleep(self.seconds)
        # an outlier: an update 1000 times the others' (once: a transient fault; always: a broken site)
        outlier = self.behaviour == "outlier" or (self.behaviour == "outlier once" and len(self.calls) == 1)
        state = {k: v + np.float32(500.0 if outlier else 0.5) for k, v in ray.get(global_ref[0]).items()}
        return {"client": self.name, "state": state, "num_examples": 10, "metrics": {"loss": 1.0},
                "compute_s": 0.1, "footprint": {"wall_s": 0.1, "device_hours": 1e-4, "cpu_energy_j": 2.0}}

    def evaluate(self, global_ref, checkpoint_round):
        import ray

        self.calls.append(("evaluate", checkpoint_round))
        return {"metrics": {"loss": float(ray.get(global_ref[0])["w"][0])},
                "footprint": {"wall_s": 0.05, "device_hours": 5e-5}}  # energy not measured here

    def restore(self, round_number, global_state):
        self.calls.append(("restore", round_number))

    def snapshot(self, round_number):
        pass

    def save(self, round_number):
        self.calls.append(("save", round_number))
        if self.behaviour == "hang in save" and round_number > 1:
            time.sleep(3600)
        return manifest(self.name, round_number)

    def prune(self, keep_rounds):
        self.calls.append(("prune", keep_rounds))

    def monitor_system(self):
        self.calls.append(("monitor_system",))

    def system_samples(self, final=False):
        self.calls.append(("system_samples", final))
        if self.behaviour == "slow samples":
            time.sleep(self.seconds)
        return [(int(time.time() * 1000), {"cpu_utilization_percentage": float(len(self.calls))})]

    def recorded(self):
        return self.calls


@pytest.fixture(scope="module")
def local_ray():
    import ray

    from crossfed.ray_session import connect_ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import a test module
    with connect_ray(num_cpus=2, include_dashboard=False, log_to_driver=False):
        yield


def scripted(driver, local_ray, **behaviours):
    """Scripted actors as the driver's clients: name -> (behaviour, seconds); the rest train at once."""
    import ray

    actor = ray.remote(num_cpus=0, max_concurrency=4)(ScriptedClient)
    driver.clients = {name: actor.remote(name, *behaviours.get(name, ("train", 0.0))) for name in NAMES}
    ray.get([client.__ray_ready__.remote() for client in driver.clients.values()])  # started: timeouts count fits only
    driver.recovery.committed(0, {name: manifest(name, 0) for name in NAMES})


def recorded(driver) -> dict[str, list]:
    import ray

    return {name: ray.get(client.recorded.remote()) for name, client in driver.clients.items()}


# -- the maths steps ---------------------------------------------------------------------------------
def test_sample_draws_from_seed_and_round_alone():
    names = list(NAMES)
    first = sample_clients(names, 2, seed=5, round_number=1)
    assert len(first) == 2 and first == sample_clients(names, 2, seed=5, round_number=1)  # a resume draws the same
    assert first == sorted(first, key=names.index)
    assert len({tuple(sample_clients(names, 2, seed=5, round_number=r)) for r in range(1, 20)}) > 1
    assert sample_clients(names, None, 5, 1) == sample_clients(names, 9, 5, 1) == names


def test_validate_rejects_an_outlier_and_leaves_a_shortfall_to_the_round(tmp_path):
    driver = make_driver(tmp_path, min_clients=2)
    g = driver.global_state
    updates = [update("cms", 0.1, g), update("atlas", 0.2, g), update("lhcb", 50.0, g)]
    accepted, rejected = driver.validate(updates)
    assert [u.client for u in accepted] == ["cms", "atlas"]
    assert [name for name, _ in rejected] == ["lhcb"] and "norm" in rejected[0][1]
    new = driver.aggregate(*driver.privatise(accepted, round_number=1))  # fedavg, no DP: the weighted mean
    np.testing.assert_allclose(new["w"], np.full(3, 0.15), rtol=1e-6)

    strict = make_driver(tmp_path, min_clients=3)  # fewer than min_clients accepted: no error here
    assert [u.client for u in strict.validate(updates)[0]] == ["cms", "atlas"]


def test_rounds_screen_and_aggregate_in_one_buffer_and_give_the_model_a_fresh_one_would(tmp_path):
    """The driver keeps its [clients, parameters] buffer across rounds (new pages cost more than the work)
    and reads the global state it made itself without copying it: the same model as from the raw updates."""
    from crossfed.config.federation import StrategyConfig
    from crossfed.federation.strategies import build_strategy
    from crossfed.federation.strategies.base import Layout

    driver = make_driver(tmp_path)
    reference = build_strategy(StrategyConfig(name="fedavg"))
    rng = np.random.default_rng(3)
    buffers = []
    for round_number in (1, 2, 3):
        g = driver.global_state
        updates = [ClientUpdate(name, {k: v + rng.normal(size=v.shape).astype(np.float32) for k, v in g.items()},
                                10 + i) for i, name in enumerate(NAMES[:3])]
        expected = reference.aggregate({k: v.copy() for k, v in g.items()},
                                       [ClientUpdate(u.client, u.state, u.num_examples) for u in updates])
        accepted, rejected = driver.validate(updates)
        assert len(accepted) == 3 and not rejected
        buffers.append(accepted[0].delta)
        if round_number > 1:  # the global state of the last aggregation is read in place
            assert Layout.of(g).as_vector(g).base is None and np.shares_memory(Layout.of(g).as_vector(g), g["w"])
        new = driver.aggregate(*driver.privatise(accepted, round_number))
        for key in g:
            np.testing.assert_array_equal(new[key], expected[key], err_msg=f"round {round_number} {key}")
        driver.global_state = new
    assert np.shares_memory(buffers[0], buffers[1]) and np.shares_memory(buffers[1], buffers[2])


def test_a_state_of_separate_tensors_is_copied_into_one_vector():
    from crossfed.federation.strategies.base import Layout

    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float32)}
    layout = Layout.of(state)
    vector = layout.as_vector(state)
    np.testing.assert_array_equal(vector, [0, 1, 2, 3, 4, 5, 1, 1])
    assert not np.shares_memory(vector, state["w"])
    reordered = layout.unflatten(vector)
    swapped = {"b": reordered["b"], "w": reordered["w"]}  # views of one buffer, but not in the layout's order
    assert not np.shares_memory(Layout.of(swapped).as_vector(swapped), vector)
    np.testing.assert_array_equal(layout.as_vector(swapped), vector)  # read in the layout's order
    same_size = Layout.of({"x": np.zeros(2, np.float32), "y": np.zeros(2, np.float32)})
    ahead = np.arange(4, dtype=np.float32)
    backwards = {"y": ahead[:2], "x": ahead[2:]}  # consecutive views, in the other order: a copy, x first
    np.testing.assert_array_equal(same_size.as_vector(backwards), [2, 3, 0, 1])
    assert layout.as_vector(reordered) is vector
    wide = layout.unflatten(vector.astype(np.float64))  # views, but not float32: a float32 copy
    assert layout.as_vector(wide).dtype == np.float32


def test_privatise_clips_and_draws_noise_that_nothing_logged_regenerates(tmp_path):
    driver = make_driver(tmp_path, privacy={"enabled": True, "clip_norm": 1.0, "noise_multiplier": 0.5})
    twin = make_driver(tmp_path, privacy={"enabled": True, "clip_norm": 1.0, "noise_multiplier": 0.5})
    assert driver.config == twin.config  # the same configuration and seed: all that a run logs
    g = driver.global_state
    updates = [update("cms", 3.0, g, examples=1000), update("atlas", 0.1, g, examples=1)]
    clipped, noise = driver.privatise(updates, round_number=2)
    assert update_norm(g, clipped[0].state) == pytest.approx(1.0, rel=1e-6)
    assert [u.num_examples for u in clipped] == [1, 1]
    first = driver.aggregate(clipped, noise)
    again = driver.aggregate(*driver.privatise(updates, round_number=2))
    other = twin.aggregate(*twin.privatise(updates, round_number=2))
    assert not np.array_equal(first["w"], again["w"])  # fresh noise every time, even for a retried round
    assert not np.array_equal(first["w"], other["w"])  # and in another run with the same configuration
    # not the old derivation from the logged seed either: mean of the clipped deltas / 4 expected clients
    mean_delta = (clipped[0].state["w"] - g["w"] + clipped[1].state["w"] - g["w"]) / 4
    old = np.random.default_rng([driver.config.seed, 2, 7]).normal(0.0, 0.5 * 1.0 / 4, 3)
    assert not np.allclose(first["w"], g["w"] + mean_delta + old)
    assert driver.privacy.accountant.history == [(0.5, 1.0, 2)]  # every noised aggregate is counted


def test_under_dp_validation_sees_only_clipped_updates_each_judged_alone(tmp_path):
    driver = make_driver(tmp_path, privacy={"enabled": True, "clip_norm": 1.0})
    g = driver.global_state
    broken = update("alice", 0.1, g)
    broken.state["w"][0] = np.nan
    updates = [update("cms", 0.1, g), update("atlas", 0.2, g), update("lhcb", 50.0, g), broken]
    accepted, rejected = driver.validate(updates)
    # lhcb's 50-fold update would be a norm outlier without DP; under DP it is clipped and counted like any other
    assert [u.client for u in accepted] == ["cms", "atlas", "lhcb"]
    assert [name for name, _ in rejected] == ["alice"] and "non-finite" in rejected[0][1]
    assert update_norm(g, accepted[2].state) == pytest.approx(1.0, rel=1e-6)
    assert all(update_norm(g, u.state) <= 1.0 + 1e-9 for u in accepted)


def test_under_dp_the_budget_stops_the_run_before_the_round_that_would_exceed_it(tmp_path):
    driver = make_driver(tmp_path, privacy={"enabled": True, "noise_multiplier": 1.0, "target_epsilon": 10.0})
    driver.privacy.load_state_dict({"history": [(1.0, 1.0, 3)]})  # ε = 9.0 so far; a 4th round makes 10.7
    driver.recovery.committed(3, [])
    with pytest.raises(CrossfedError, match=r"round 4 would bring ε to .*=10; the run stops after round 3"):
        driver.run_round()  # before any client is asked: there are none here to ask

    # a configuration that cannot fit its rounds refuses to start, naming how many fit
    config = config_from_dict({
        "experiments": {name: {"schema": "cms_nanoaod", "pretrain": {"files": ["unused.root"]}} for name in NAMES},
        "federation": {"rounds": 50, "privacy": {"enabled": True, "noise_multiplier": 1.0, "target_epsilon": 10.0}},
    })
    with pytest.raises(CrossfedError, match=r"federation.rounds=50 would spend ε=.*: 3 round\(s\) fit"):
        plan_rounds(config, "federated", None)


def test_a_baseline_takes_its_single_client_state_as_it_is(tmp_path):
    driver = make_driver(tmp_path, mode="local")
    g = driver.global_state
    only = [update("cms", 70.0, g)]  # no validation, DP or strategy for a baseline
    accepted, rejected = driver.validate(only)
    updates, noise = driver.privatise(accepted, round_number=1)
    assert accepted is only and rejected == [] and noise is None
    np.testing.assert_array_equal(driver.aggregate(updates)["w"], only[0].state["w"])


# -- the steps that talk to clients ----------------------------------------------------------------
def test_broadcast_starts_each_sampled_client_and_a_retry_rewinds_it_first(tmp_path, local_ray):
    import ray

    driver = make_driver(tmp_path, strategy={"name": "fedprox", "proximal_mu": 0.05})
    scripted(driver, local_ray)
    driver.recovery.committed(1, {name: manifest(name, 1) for name in ("cms", "lhcb")})  # atlas: a straggler then
    fits = driver.broadcast(["cms", "atlas"], round_number=2, retry=True)
    assert sorted(fits.values()) == ["atlas", "cms"]
    ray.get(list(fits))
    calls = recorded(driver)
    assert calls["atlas"] == [("restore", 0), ("fit", 4, 0.05, 0)]
    assert calls["cms"] == [("restore", 1), ("fit", 4, 0.05, 1)]
    assert calls["lhcb"] == calls["alice"] == []


def test_collect_keeps_updates_drops_failures_deaths_and_stragglers_until_their_fit_ends(tmp_path, local_ray):
    import ray

    driver = make_driver(tmp_path, round_timeout_s=3.0)
    scripted(driver, local_ray, atlas=("fail", 0.0), lhcb=("die", 0.0), alice=("train", 8.0))
    collected = driver.collect(driver.broadcast(list(NAMES), round_number=1), round_number=1)
    assert sorted(collected.payloads) == ["cms"] and driver.received() == collected.payloads
    assert collected.dropped["atlas"] == "worker died: ActorDiedError"
    assert collected.dropped["lhcb"].startswith("client actor died")
    assert collected.dropped["alice"].startswith("straggler")
    assert [u.client for u in collected.updates()] == ["cms"]

    # Busy with its dropped fit, alice is neither sampled, evaluated nor checkpointed; nor is lhcb, whose
    # actor died, until it has rejoined ...
    assert list(driver.recovery.stragglers) == ["alice"] and list(driver.recovery.lost) == ["lhcb"]
    assert driver.sample(round_number=2) == ["cms", "atlas"]
    evaluations, footprints = driver.evaluate(driver.global_state)
    assert sorted(evaluations) == sorted(footprints) == ["atlas", "cms"]
    driver.commit(1, driver.global_state, {"round": 1})
    assert driver.recovery.client_rounds == {"cms": 1, "atlas": 1, "lhcb": 0, "alice": 0}
    # ... until that fit has returned; its late update is discarded.
    ray.wait([driver.recovery.stragglers["alice"]], timeout=30)
    assert driver.sample(round_number=2) == ["cms", "atlas", "alice"] and not driver.recovery.stragglers


def test_a_client_slow_to_hand_over_its_system_samples_is_not_waited_for_but_heard_at_the_next_call(
    tmp_path, local_ray
):
    driver = make_driver(tmp_path)
    scripted(driver, local_ray, atlas=("slow samples", 4.0))
    assert driver.system_samples() == {}  # nothing asked before the clients sample
    driver.monitor_system()
    started = time.monotonic()
    first = driver.system_samples()
    assert time.monotonic() - started < 3.0 and sorted(first) == ["alice", "cms", "lhcb"]
    time.sleep(4.0)
    second = driver.system_samples()
    assert sorted(second) == ["alice", "atlas", "cms", "lhcb"]
    assert second["atlas"][0][1]["cpu_utilization_percentage"] == 2.0  # the answer to the first call
    assert [call for call in recorded(driver)["atlas"] if call[0] == "system_samples"] == [("system_samples", False)]


def test_a_dp_round_keeps_rate_and_denominator_when_a_client_drops_and_records_nothing_per_client(
    tmp_path, local_ray
):
    """Poisson rate 3/4; atlas is drawn and fails. The accountant still gets q = 0.75 and the mean still
    divides by the 3 expected clients; the record and the checkpoint hold only ε and δ."""
    privacy = {"enabled": True, "clip_norm": 1.0, "noise_multiplier": 1e-6}
    driver = make_driver(tmp_path, clients_per_round=3, privacy=privacy)
    scripted(driver, local_ray, atlas=("fail", 0.0))
    while "atlas" not in driver.privacy.draw(list(NAMES), 1):  # a draw with atlas in it (the key is random)
        driver.privacy._sampling_key += 1
    drawn = driver.sample(round_number=1)
    record = driver.run_round()

    assert driver.privacy.accountant.history == [(1e-6, 0.75, 1)]
    updated = len(drawn) - 1  # atlas dropped; each scripted update moves all 5 numbers by 0.5, clipped to norm 1
    expected_w = updated / 3 * 0.5 / np.sqrt(5 * 0.25)
    np.testing.assert_allclose(driver.global_state["w"], np.full(3, expected_w), atol=1e-4)
    assert set(record) == {"round", "privacy/epsilon", "privacy/delta"} and record["privacy/delta"] == 1e-5
    calls = recorded(driver)
    assert calls["atlas"] == [("fit", 4, 0.0, 0, {"clip_norm": 1.0, "metrics": False}), ("save", 1), ("prune", [1])]
    assert not any(call[0] == "evaluate" for client in calls.values() for call in client)  # no metric is asked for
    assert checkpoint.read_round(Storage(str(tmp_path / "run")), 1).driver_state["history"] == [record]


def test_commit_checkpoints_clients_then_the_round_and_only_then_moves_on(tmp_path, local_ray):
    driver = make_driver(tmp_path, keep=2)
    scripted(driver, local_ray)
    run = Storage(str(tmp_path / "run"))
    checkpoint.write_round(run, 0, driver.global_state, {"history": []}, driver.recovery.client_checkpoints())
    states = [driver.global_state]
    for round_number in (1, 2):
        states.append({k: v + 1 for k, v in states[-1].items()})
        record = {"round": round_number, "global/val_loss": 0.5}
        driver.commit(round_number, states[-1], record, round_started=time.perf_counter())
        assert record["time/round_s"] >= 0
    # Each client saved, then was told which checkpoints the kept rounds (1 and 2) still name.
    assert all(calls == [("save", 1), ("prune", [0, 1]), ("save", 2), ("prune", [1, 2])]
               for calls in recorded(driver).values())
    assert driver.recovery == RecoveryState(2, dict.fromkeys(NAMES, 2), {n: manifest(n, 2) for n in NAMES})
    assert [r["round"] for r in driver.history] == [1, 2]
    assert checkpoint.committed_rounds(run) == [2, 1]
    found = checkpoint.read_round(run, 2)
    assert found.driver_state["client_rounds"] == dict.fromkeys(NAMES, 2)
    assert found.clients == {n: checkpoint.ClientCheckpoint(2, manifest(n, 2)) for n in NAMES}
    assert [r["round"] for r in found.driver_state["history"]] == [1, 2]
    np.testing.assert_array_equal(found.global_state["w"], states[2]["w"])

    # A commit that cannot write its round leaves the driver at the last committed round.
    driver.run = Storage(str(tmp_path / "run" / "rounds" / "round_00002" / "global.npz"))  # a file: no folder below
    with pytest.raises(OSError):
        driver.commit(3, {k: v + 1 for k, v in states[2].items()}, {"round": 3})
    assert driver.recovery.completed_rounds == 2 and [r["round"] for r in driver.history] == [1, 2]
    np.testing.assert_array_equal(driver.global_state["w"], states[2]["w"])


def test_a_background_commit_lands_during_the_next_round_and_killed_half_way_never_counts(tmp_path, local_ray):
    """Round 2's commit is written while round 3 trains; atlas never completes its round-2 checkpoint
    (its save hangs) and the driver's process is then killed: round 2 never counts, and a resume starts
    from round 1, with every client's round-1 checkpoint still there."""
    import ray

    run = Storage(str(tmp_path / "run"))
    remote_driver = ray.remote(num_cpus=0, max_concurrency=4)(FederationDriver)

    def start(driver: FederationDriver) -> None:
        scripted(driver, local_ray, atlas=("hang in save", 0.0))
        driver.commit(0, driver.global_state, None)

    config = make_driver(tmp_path, keep=3, background=True).config
    driver = remote_driver.remote(config, make_driver(tmp_path).plan, run.location)
    ray.get(driver.__ray_call__.remote(lambda d: (setattr(d, "global_state", make_driver(tmp_path).global_state),
                                                  start(d))))
    first = ray.get(driver.run_round.remote())
    assert ray.get(driver.state.remote())[0] == 1  # round 1's commit waited for: it has landed
    second = ray.get(driver.run_round.remote())  # returns with its commit still being written
    assert second["round"] == 2 and "time/round_s" in second
    assert ray.get(driver.last_commit.remote()) == 1 and checkpoint.committed_rounds(run) == [1, 0]
    calls = ray.get(driver.__ray_call__.remote(lambda d: recorded(d)))
    assert ("save", 2) in calls["cms"] and ("save", 2) in calls["atlas"]  # atlas is stuck in it
    assert run.exists("rounds/round_00002/global.npz") is False  # the driver writes its files after every client's

    ray.kill(driver, no_restart=True)  # killed half-way through round 2's commit
    resumed = make_driver(tmp_path, keep=3, background=True)
    found, skipped = resumed.newest_intact_round(logged_rounds=1)
    assert found.round == 1 and skipped == [] and [r["round"] for r in found.driver_state["history"]] == [1]
    assert found.clients == {n: checkpoint.ClientCheckpoint(1, manifest(n, 1)) for n in NAMES}
    assert [r["round"] for r in found.driver_state["history"]] == [first["round"]]


def test_a_background_commit_that_fails_fails_the_run_when_it_is_waited_for(tmp_path, local_ray):
    driver = make_driver(tmp_path, background=True)
    scripted(driver, local_ray)
    driver.commit(1, driver.global_state, {"round": 1})
    driver.wait_for_commit()
    driver.run = Storage(str(tmp_path / "run" / "rounds" / "round_00001" / "global.npz"))  # a file: no folder below
    driver.commit(2, driver.global_state, {"round": 2})  # adopted in memory, written in the background
    assert driver.recovery.completed_rounds == 2 and [r["round"] for r in driver.history] == [1, 2]
    with pytest.raises(OSError):
        driver.wait_for_commit()
    assert driver.committed_round == 1 and driver.recovery.client_rounds == dict.fromkeys(NAMES, 1)
    assert driver.state()[0] == 1  # waited for once: the error is not raised again


def test_the_global_model_is_evaluated_every_evaluate_every_rounds_and_after_the_last(tmp_path, local_ray):
    driver = make_driver(tmp_path, rounds=7, evaluate_every=3)
    scripted(driver, local_ray)
    records = [driver.run_round() for _ in range(7)]
    with_metrics = [r["round"] for r in records if "global/val_loss" in r]
    assert with_metrics == [3, 6, 7]
    assert all("client/cms/val_loss" not in r for r in records if r["round"] not in (3, 6, 7))
    assert all("clients/updated" in r and "time/round_s" in r for r in records)  # every round is recorded
    evaluated = [call for call in recorded(driver)["cms"] if call[0] == "evaluate"]
    assert [round_number for _, round_number in evaluated] == [2, 5, 6]  # each after its round's training
    assert periodic_round(4, 1, 7) and not periodic_round(4, 3, 7) and periodic_round(7, 3, 7)
    with pytest.raises(CrossfedError, match="federation.evaluate_every"):
        make_driver(tmp_path, evaluate_every=0)


def test_with_checkpoint_every_3_only_rounds_3_6_and_the_last_are_committed(tmp_path, local_ray):
    driver = make_driver(tmp_path, rounds=7, every=3, keep=5)
    scripted(driver, local_ray)
    run = Storage(str(tmp_path / "run"))
    committed = []
    for _ in range(7):
        record = driver.run_round()
        committed.append(driver.state()[0])
        assert "time/round_s" in record and driver.global_state["w"][0] == np.float32(0.5 * record["round"])
    assert committed == [0, 0, 3, 3, 3, 6, 7]
    assert checkpoint.committed_rounds(run) == [7, 6, 3]
    saves = [call[1] for call in recorded(driver)["cms"] if call[0] == "save"]
    assert saves == [3, 6, 7]
    # what a resume (and the interruption message) sees: the last commit and the records up to it only
    assert [r["round"] for r in checkpoint.read_round(run, 6).driver_state["history"]] == [1, 2, 3, 4, 5, 6]
    assert periodic_round(6, 3, 7) and not periodic_round(5, 3, 7) and periodic_round(7, 3, 7)
    with pytest.raises(CrossfedError, match=r"checkpoint.every is 2: with federation.privacy.enabled every round"):
        make_driver(tmp_path, every=2, privacy={"enabled": True, "clip_norm": 1.0, "noise_multiplier": 1.0})
    with pytest.raises(CrossfedError, match=r"checkpoint.background is true: with federation.privacy.enabled"):
        make_driver(tmp_path, background=True, privacy={"enabled": True, "clip_norm": 1.0, "noise_multiplier": 1.0})


def test_the_run_footprint_adds_up_the_committed_rounds_training_and_evaluation_across_a_resume(tmp_path, local_ray):
    driver = make_driver(tmp_path, rounds=3, evaluate_every=2)
    scripted(driver, local_ray)
    first, second = driver.run_round(), driver.run_round()
    # a round's footprint: its training's, plus its evaluation's in an evaluated round (2); an energy only
    # where every call measured it
    assert first["client/cms/round_wall_s"] == pytest.approx(0.1) and first["client/cms/round_cpu_energy_j"] == 2.0
    assert second["client/cms/round_wall_s"] == pytest.approx(0.15) and "client/cms/round_cpu_energy_j" not in second
    assert driver.footprints["cms"] == {"wall_s": pytest.approx(0.25), "device_hours": pytest.approx(2.5e-4)}

    # A resumed run goes on from the committed totals (a new driver process: its clients are new actors).
    resumed = make_driver(tmp_path, rounds=3, evaluate_every=2)
    scripted(resumed, local_ray)
    resumed._restore(checkpoint.read_round(Storage(str(tmp_path / "run")), 2))
    resumed.run_round()
    assert resumed.footprints == {name: {"wall_s": pytest.approx(0.4), "device_hours": pytest.approx(4e-4)}
                                  for name in NAMES}


def test_a_run_that_never_committed_starts_from_its_initial_model_unless_mlflow_says_it_had_rounds(tmp_path):
    driver = make_driver(tmp_path)  # its storage holds nothing: stopped while its clients were starting
    assert driver.newest_intact_round(logged_rounds=0) == (None, [])
    with pytest.raises(CrossfedError, match=r"MLflow holds 3 round\(s\) of this run but no committed round is in "
                                            rf"{tmp_path / 'run'} \(was it run with another output_dir"):
        driver.newest_intact_round(logged_rounds=3)


def test_a_rejected_update_is_retried_and_never_ends_the_run(tmp_path, local_ray):
    """Two clients, min_clients 2: one outlier leaves one update. The round is retried (each client back at
    its checkpoint); an outlier that recurs in the last attempt is left out and the round goes on."""
    driver = make_driver(tmp_path, min_clients=2, max_round_retries=1)
    scripted(driver, local_ray, atlas=("outlier once", 0.0))
    driver.clients = {name: driver.clients[name] for name in ("cms", "atlas")}
    record = driver.run_round()
    assert record["round/attempt"] == 1 and record["clients/updated"] == 2 and record["clients/rejected"] == 0
    assert recorded(driver)["atlas"][:3] == [("fit", 4, 0.0, 0), ("restore", 0), ("fit", 4, 0.0, 0)]
    np.testing.assert_allclose(driver.global_state["w"], np.full(3, 0.5))  # the clean updates' mean

    stubborn = make_driver(tmp_path / "stubborn", min_clients=2, max_round_retries=1)
    scripted(stubborn, local_ray, atlas=("outlier", 0.0))
    stubborn.clients = {name: stubborn.clients[name] for name in ("cms", "atlas")}
    record = stubborn.run_round()
    assert record["round/attempt"] == 1 and record["clients/updated"] == 1 and record["clients/rejected"] == 1
    np.testing.assert_allclose(stubborn.global_state["w"], np.full(3, 0.5))  # cms's update alone
    assert stubborn.recovery.completed_rounds == 1
