"""Aggregation maths against hand-computed numbers (the formulas are in the comments)."""

import pickle

import numpy as np
import pytest

from crossfed.config import StrategyConfig
from crossfed.federation.strategies import ClientUpdate, build_strategy


def updates(*states, examples=None):
    examples = examples or [1] * len(states)
    return [
        ClientUpdate(f"client{i}", {"w": np.array(s, dtype=np.float32)}, n, {})
        for i, (s, n) in enumerate(zip(states, examples))
    ]


def scalar_round(strategy, global_value, client_values):
    global_state = {"w": np.array([global_value], dtype=np.float32)}
    return float(strategy.aggregate(global_state, updates(*[[v] for v in client_values]))["w"][0])


def test_fedavg_is_the_example_weighted_mean():
    strategy = build_strategy(StrategyConfig(name="fedavg"))
    global_state = {"w": np.array([10.0, -10.0], dtype=np.float32)}
    # (1·[1, 2] + 3·[4, 8]) / 4 = [3.25, 6.5]
    new = strategy.aggregate(global_state, updates([1, 2], [4, 8], examples=[1, 3]))
    assert new["w"].dtype == np.float32
    np.testing.assert_allclose(new["w"], [3.25, 6.5], rtol=1e-6)


def test_fedprox_averages_like_fedavg_and_tells_clients_mu():
    strategy = build_strategy(StrategyConfig(name="fedprox", proximal_mu=0.3))
    assert strategy.client_options() == {"proximal_mu": 0.3}
    assert build_strategy(StrategyConfig(name="fedavg")).client_options() == {}
    new = strategy.aggregate({"w": np.zeros(1, np.float32)}, updates([2.0], [5.0], examples=[2, 1]))
    np.testing.assert_allclose(new["w"], [3.0], rtol=1e-6)  # (2·2 + 1·5) / 3


def test_fedadam_one_step():
    strategy = build_strategy(StrategyConfig(name="fedadam", server_lr=0.5, beta1=0.9, beta2=0.99, tau=0.1))
    global_state = {"w": np.array([1.0, 2.0], dtype=np.float32)}
    # Δ = [0.5, -1]; m = 0.1Δ = [0.05, -0.1]; v = 0.01Δ² = [0.0025, 0.01]; √v = [0.05, 0.1]
    # w + 0.5·m/(√v + 0.1) = [1 + 0.5·0.05/0.15, 2 + 0.5·(-0.1)/0.2] = [1.1666667, 1.75]
    new = strategy.aggregate(global_state, updates([1.5, 1.0], [1.5, 1.0]))
    np.testing.assert_allclose(new["w"], [1.1666667, 1.75], rtol=1e-6)


def test_fedavgm_two_rounds():
    strategy = build_strategy(StrategyConfig(name="fedavgm", server_lr=0.5, server_momentum=0.9))
    # round 1: Δ = 1 - 0 = 1, v = 1, w = 0 + 0.5·1 = 0.5
    assert scalar_round(strategy, 0.0, [0.0, 2.0]) == pytest.approx(0.5)
    # round 2: Δ = 1.5 - 0.5 = 1, v = 0.9·1 + 1 = 1.9, w = 0.5 + 0.5·1.9 = 1.45
    assert scalar_round(strategy, 0.5, [1.5, 1.5]) == pytest.approx(1.45, rel=1e-6)


def test_fedyogi_two_rounds_uses_the_yogi_second_moment():
    strategy = build_strategy(StrategyConfig(name="fedyogi", server_lr=1.0, beta1=0.9, beta2=0.99, tau=0.1))
    # round 1: Δ = 2, m = 0.2, v = 0 - 0.01·4·sign(0 - 4) = 0.04, w = 0.2/(0.2 + 0.1) = 0.6666667
    assert scalar_round(strategy, 0.0, [2.0]) == pytest.approx(0.6666667, rel=1e-6)
    # round 2: Δ = 1, m = 0.18 + 0.1 = 0.28, v = 0.04 - 0.01·1·sign(0.04 - 1) = 0.05 (Adam: 0.0496)
    # w = 0.6666667 + 0.28/(√0.05 + 0.1) = 0.6666667 + 0.28/0.3236068 = 1.5319143
    assert scalar_round(strategy, 0.6666667, [1.6666667]) == pytest.approx(1.5319143, rel=1e-6)


def test_fedadagrad_two_rounds():
    strategy = build_strategy(StrategyConfig(name="fedadagrad", server_lr=1.0, beta1=0.5, tau=0.1))
    # round 1: Δ = 2, m = 0.5·2 = 1, v = 4, w = 1/(2 + 0.1) = 0.4761905
    assert scalar_round(strategy, 0.0, [2.0]) == pytest.approx(0.4761905, rel=1e-6)
    # round 2: Δ = 1, m = 0.5 + 0.5 = 1, v = 5, w = 0.4761905 + 1/(√5 + 0.1) = 0.4761905 + 0.4280697 = 0.9042602
    assert scalar_round(strategy, 0.4761905, [1.4761905]) == pytest.approx(0.9042602, rel=1e-6)


@pytest.mark.parametrize("name, expected", [("fedmedian", 3.0), ("trimmed_mean", 3.0), ("fedavg", 202.0)])
def test_robust_strategies_ignore_one_outlier(name, expected):
    strategy = build_strategy(StrategyConfig(name=name, trim_fraction=0.2))
    # median(1, 2, 3, 4, 1000) = 3; trimmed (cut 1 each end): mean(2, 3, 4) = 3; plain mean: 1010/5 = 202
    assert scalar_round(strategy, 0.0, [1.0, 2.0, 3.0, 4.0, 1000.0]) == pytest.approx(expected)


def test_trimmed_mean_per_coordinate():
    strategy = build_strategy(StrategyConfig(name="trimmed_mean", trim_fraction=0.25))
    # 4 clients, cut 1 each end per coordinate: column 0 keeps (2, 3) -> 2.5, column 1 keeps (-1, 0) -> -0.5
    new = strategy.aggregate({"w": np.zeros(2, np.float32)}, updates([1, -9], [2, 0], [3, 5], [100, -1]))
    np.testing.assert_allclose(new["w"], [2.5, -0.5])


@pytest.mark.parametrize("name", ["fedavg", "fedadam", "fedmedian", "trimmed_mean"])
def test_mismatched_or_missing_updates_raise(name):
    strategy = build_strategy(StrategyConfig(name=name))
    global_state = {"w": np.zeros(2, np.float32), "b": np.zeros(1, np.float32)}
    good = {"w": np.ones(2, np.float32), "b": np.ones(1, np.float32)}
    with pytest.raises(ValueError, match="missing"):
        strategy.aggregate(global_state, [ClientUpdate("a", good, 1), ClientUpdate("b", {"w": good["w"]}, 1)])
    with pytest.raises(ValueError, match="shape"):
        strategy.aggregate(global_state, [ClientUpdate("a", {**good, "w": np.ones(3, np.float32)}, 1)])
    with pytest.raises(ValueError, match="no client updates"):
        strategy.aggregate(global_state, [])


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_server_optimizer_state_round_trips(name):
    cfg = StrategyConfig(name=name, server_lr=0.3)
    global_state = {"w": np.array([0.5, -1.0, 2.0], np.float32), "b": np.array([[0.1]], np.float32)}
    rng = np.random.default_rng(0)

    def round_updates():
        return [
            ClientUpdate(c, {k: v + rng.normal(size=v.shape).astype(np.float32) for k, v in global_state.items()}, n)
            for c, n in [("cms", 10), ("atlas", 30)]
        ]

    original = build_strategy(cfg)
    after_one = original.aggregate(global_state, round_updates())
    saved = pickle.loads(pickle.dumps(original.state_dict()))
    second = round_updates()
    continued = original.aggregate(after_one, second)

    resumed = build_strategy(cfg)
    resumed.load_state_dict(saved)
    resumed_result = resumed.aggregate(after_one, second)
    fresh = build_strategy(cfg).aggregate(after_one, second)
    for key in global_state:
        np.testing.assert_array_equal(resumed_result[key], continued[key])
    assert any(not np.allclose(fresh[k], continued[k]) for k in global_state)  # the state mattered


def float64_reference(name: str, cfg: StrategyConfig, global_state, client_updates, moments: dict):
    """The aggregation as it was computed before the flat float32 buffers: tensor by tensor, in float64."""
    weights = np.array([u.num_examples for u in client_updates], float)
    weights /= weights.sum()
    new = {}
    for key, value in global_state.items():
        deltas = np.stack([u.state[key].astype(np.float64) - value.astype(np.float64) for u in client_updates])
        if name == "fedmedian":
            delta = np.median(deltas, axis=0)
        elif name == "trimmed_mean":
            cut = int(cfg.trim_fraction * len(client_updates))
            delta = np.sort(deltas, axis=0)[cut:len(client_updates) - cut].mean(axis=0)
        else:
            delta = np.tensordot(weights, deltas, axes=1)
        if name == "fedavgm":
            velocity = moments.setdefault(("velocity", key), np.zeros_like(delta))
            velocity[...] = cfg.server_momentum * velocity + delta
            delta = cfg.server_lr * velocity
        elif name in ("fedadam", "fedyogi", "fedadagrad"):
            m = moments.setdefault(("m", key), np.zeros_like(delta))
            v = moments.setdefault(("v", key), np.zeros_like(delta))
            m[...] = cfg.beta1 * m + (1 - cfg.beta1) * delta
            squared = delta**2
            v[...] = {"fedadam": cfg.beta2 * v + (1 - cfg.beta2) * squared,
                      "fedyogi": v - (1 - cfg.beta2) * squared * np.sign(v - squared),
                      "fedadagrad": v + squared}[name]
            delta = cfg.server_lr * m / (np.sqrt(v) + cfg.tau)
        new[key] = (value.astype(np.float64) + delta).astype(np.float32)
    return new


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedmedian",
                                  "trimmed_mean"])
def test_flat_float32_aggregation_gives_the_float64_model(name):
    """Aggregating one flat float32 buffer per client gives the model of the tensor-by-tensor float64 maths
    to within 2 float32 ulps of each tensor's largest weight, over rounds (server moments included)."""
    cfg = StrategyConfig(name=name, trim_fraction=0.2)
    strategy, moments = build_strategy(cfg), {}
    rng = np.random.default_rng(7)
    global_state = {key: rng.normal(0, 0.05, shape).astype(np.float32)
                    for key, shape in {"w": (64, 33), "b": (33,), "conv": (7, 5, 3), "scale": (1,)}.items()}
    for _ in range(4):
        client_updates = [ClientUpdate(f"c{i}", {k: (v + rng.normal(0, 1e-3, v.shape)).astype(np.float32)
                                                 for k, v in global_state.items()}, int(rng.integers(10, 1000)))
                          for i in range(5)]
        expected = float64_reference(name, cfg, global_state, client_updates, moments)
        new = strategy.aggregate(global_state, client_updates)
        assert list(new) == list(global_state)
        for key in global_state:
            assert new[key].dtype == np.float32 and new[key].shape == global_state[key].shape
            np.testing.assert_allclose(new[key], expected[key], rtol=0,
                                       atol=2 * np.spacing(np.abs(expected[key]).max()), err_msg=key)
        global_state = new
