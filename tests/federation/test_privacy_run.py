"""A federation under central DP, end to end: real DeepSpeed clients on a local Ray, a real MLflow store.

What leaves each client is its clipped update and nothing else; MLflow holds only ε, δ and the noised
global validation metrics, ε per round as Opacus computes it; a second run with the same configuration
(the same logged parameters) adds different noise. Lean: tiny model, 2 rounds of 1 local step.
"""

from __future__ import annotations

import numpy as np
import pytest

from crossfed.config import config_from_dict

SCHEMAS = {"cms": "cms_nanoaod", "atlas": "atlas_opendata"}
PRIVACY = {"enabled": True, "clip_norm": 1.0, "noise_multiplier": 0.05, "metric_noise_multiplier": 2.0,
           "metric_clip": 5.0}


@pytest.fixture(scope="module")
def local_ray():
    from crossfed.ray_session import connect_ray

    with connect_ray(num_cpus=2, include_dashboard=False, log_to_driver=False):
        yield


def dp_config(samples, tmp_path):
    return config_from_dict({
        "seed": 3,
        "output_dir": str(tmp_path / "runs"),
        "experiments": {
            name: {"schema": schema, "pretrain": {"files": [str(samples[name]["ttbar"])]}}
            for name, schema in SCHEMAS.items()
        },
        "data": {"cache_dir": str(tmp_path / "cache")},
        "model": {"preset": "tiny"},
        "training": {"batch_size": 32, "eval_batches": 1, "device": "cpu"},
        "federation": {"rounds": 2, "local_steps": 1, "privacy": PRIVACY},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "dp-test"},
    })


def test_under_dp_only_clipped_updates_leave_clients_and_only_noised_aggregates_reach_mlflow(
    local_ray, samples, tmp_path
):
    import mlflow
    import ray
    from opacus.accountants import RDPAccountant

    from crossfed.federation import run_federation
    from crossfed.federation.result import load_state
    from crossfed.federation.rounds import validation_metric_keys
    from crossfed.federation.validation import update_norm

    config = dp_config(samples, tmp_path)
    globals_after, received = {}, {}

    def on_round(round_number: int, record: dict) -> None:
        (name,) = [n for n in ray.util.list_named_actors() if n.startswith("crossfed-driver-")]
        received[round_number] = ray.get(ray.get_actor(name).received.remote())
        run_dir = next((tmp_path / "runs").iterdir())
        globals_after[round_number] = load_state(run_dir / "rounds" / f"round_{round_number:05d}" / "global.npz")

    first = run_federation(config, on_round=on_round, run_name="dp-1")

    # What left the clients in round 2: each one's update clipped to C around round 1's global model, no
    # metric, no example count.
    assert sorted(received[2]) == ["atlas", "cms"]
    for name, payload in received[2].items():
        assert payload["metrics"] == {} and payload["num_examples"] == 1, name
        assert 0 < update_norm(globals_after[1], payload["state"]) <= 1.0 * (1 + 1e-5), name

    # MLflow, read back from the store: ε and δ per round, the noised global metrics, nothing per client
    client = mlflow.MlflowClient(config.tracking.uri)
    run = client.get_run(first.run_id)
    released = {"privacy/epsilon", "privacy/delta"} | {f"global/val_{k}" for k in validation_metric_keys(config)}
    assert set(run.data.metrics) == released
    assert not [k for k in run.data.metrics if k.startswith(("client/", "clients/", "bytes/", "time/"))]
    reference = RDPAccountant()
    expected = []
    for _ in range(2):  # one training step at q = 1 (every client every round), one for the released metrics
        reference.step(noise_multiplier=0.05, sample_rate=1.0)
        reference.step(noise_multiplier=2.0, sample_rate=1.0)
        expected.append(reference.get_epsilon(1e-5))
    epsilons = [m.value for m in client.get_metric_history(first.run_id, "privacy/epsilon")]
    assert epsilons == pytest.approx(expected, rel=1e-9)
    assert [m.value for m in client.get_metric_history(first.run_id, "privacy/delta")] == [1e-5, 1e-5]
    assert all(set(record) == released | {"round"} for record in first.history)  # the driver's record too

    # Same configuration and seed: the same logged parameters, and (training being deterministic) the
    # same clipped updates; the models differ by the noise, which therefore follows from nothing logged.
    second = run_federation(config, run_name="dp-2")
    assert client.get_run(second.run_id).data.params == run.data.params
    one, two = load_state(first.global_state_path), load_state(second.global_state_path)
    assert any(not np.array_equal(one[key], two[key]) for key in one)


def test_the_run_summary_states_the_final_epsilon():
    from rich.console import Console

    from crossfed.cli.federate import _summary
    from crossfed.federation.result import FederationResult

    history = [{"round": r, "privacy/epsilon": e, "privacy/delta": 1e-5} for r, e in [(1, 1.5), (2, 2.25)]]
    console = Console(record=True, width=200)
    _summary(console, FederationResult("run", "dir", "global.npz", history))
    text = console.export_text()
    assert "ε = 2.25 at δ = 1e-05 after 2 rounds" in text
