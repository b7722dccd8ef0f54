"""Central DP: clipping, the noise scale, Opacus' ε, composition with strategies, resume."""

import numpy as np
import pytest

from crossfed.config import StrategyConfig
from crossfed.config.federation import PrivacyConfig
from crossfed.federation.privacy import CentralPrivacy
from crossfed.federation.strategies import ClientUpdate, build_strategy
from crossfed.federation.validation import update_norm


def private_round(privacy, strategy, global_state, updates, rng):
    """One private round as the driver runs it: clip, the strategy's mean delta, noise, the server step."""
    clipped = privacy.privatize(global_state, updates)
    return strategy.aggregate(global_state, clipped, perturb_delta=privacy.perturbation(len(clipped), rng))


def test_privatize_clips_each_delta_to_the_norm_over_all_tensors():
    privacy = CentralPrivacy(PrivacyConfig(enabled=True, clip_norm=1.0), total_clients=3)
    global_state = {"w": np.array([1.0, 1.0], np.float32), "b": np.array([2.0], np.float32)}
    big = ClientUpdate("big", {"w": np.array([4.0, 1.0], np.float32), "b": np.array([6.0], np.float32)}, 500)
    small = ClientUpdate("small", {"w": np.array([1.3, 1.0], np.float32), "b": np.array([2.4], np.float32)}, 7)
    clipped = privacy.privatize(global_state, [big, small])
    # big: Δ = (3, 0, 4), norm 5 -> (0.6, 0, 0.8); small: Δ = (0.3, 0, 0.4), norm 0.5 stays
    np.testing.assert_allclose(clipped[0].state["w"], [1.6, 1.0], rtol=1e-6)
    np.testing.assert_allclose(clipped[0].state["b"], [2.8], rtol=1e-6)
    assert update_norm(global_state, clipped[0].state) == pytest.approx(1.0, rel=1e-6)
    assert update_norm(global_state, clipped[1].state) == pytest.approx(0.5, rel=1e-6)
    assert [u.num_examples for u in clipped] == [1, 1]  # uniform weights: sensitivity C/n


def test_noise_std_is_noise_multiplier_times_clip_over_clients():
    privacy = CentralPrivacy(PrivacyConfig(enabled=True, clip_norm=0.5, noise_multiplier=1.2), total_clients=8)
    global_state = {"w": np.zeros(200_000, np.float32)}
    # four clients that did not move: the new state is pure noise of std 1.2 × 0.5 / 4 = 0.15
    updates = [ClientUpdate(f"c{i}", {"w": np.zeros(200_000, np.float32)}, 10) for i in range(4)]
    fedavg = build_strategy(StrategyConfig(name="fedavg"))
    new = private_round(privacy, fedavg, global_state, updates, np.random.default_rng(7))
    assert privacy.noise_std(4) == pytest.approx(0.15)
    assert new["w"].std() == pytest.approx(0.15, rel=0.01)  # relative standard error ~0.16 %
    assert abs(new["w"].mean()) < 0.002


def test_noise_goes_on_the_mean_delta_before_the_server_step():
    # FedAvgM, server_lr 2: w = 0 + 2·(unweighted mean clipped Δ + noise). Clients move every coordinate by
    # 0.01 and 0.03 (norms 1 and 3 over 10⁴ coordinates, under C = 10: not clipped); mean Δ = 0.02.
    # Noise std on Δ: 0.01·10/2 = 0.05, so w has mean 0.04 and std 0.1 (noise after the step would give
    # std 0.05; example weights 1:99 would give mean 2·0.0298 = 0.0596).
    privacy = CentralPrivacy(PrivacyConfig(enabled=True, clip_norm=10.0, noise_multiplier=0.01), total_clients=2)
    strategy = build_strategy(StrategyConfig(name="fedavgm", server_lr=2.0))
    global_state = {"w": np.zeros(10_000, np.float32)}
    updates = [
        ClientUpdate(c, {"w": np.full(10_000, v, np.float32)}, n) for c, v, n in [("a", 0.01, 1), ("b", 0.03, 99)]
    ]
    new = private_round(privacy, strategy, global_state, updates, np.random.default_rng(1))
    assert new["w"].mean() == pytest.approx(0.04, abs=0.004)
    assert new["w"].std() == pytest.approx(0.1, rel=0.03)


def test_epsilon_from_opacus_grows_with_rounds_and_survives_resume():
    cfg = PrivacyConfig(enabled=True, clip_norm=1.0, noise_multiplier=1.1, delta=1e-5)
    privacy = CentralPrivacy(cfg, total_clients=10)
    strategy = build_strategy(StrategyConfig(name="fedavg"))
    global_state = {"w": np.zeros(3, np.float32)}
    updates = [ClientUpdate(c, {"w": np.ones(3, np.float32)}, 5) for c in ["a", "b"]]
    rng = np.random.default_rng(0)
    assert privacy.epsilon() == 0.0
    epsilons = []
    for _ in range(3):
        private_round(privacy, strategy, global_state, updates, rng)
        epsilons.append(privacy.epsilon())
    assert all(np.isfinite(e) and e > 0 for e in epsilons)
    assert epsilons[0] < epsilons[1] < epsilons[2]

    resumed = CentralPrivacy(cfg, total_clients=10)
    resumed.load_state_dict(privacy.state_dict())
    assert resumed.epsilon() == epsilons[-1]
    private_round(resumed, strategy, global_state, updates, rng)
    private_round(privacy, strategy, global_state, updates, rng)
    assert resumed.epsilon() == privacy.epsilon() > epsilons[-1]


def test_central_dp_refuses_robust_aggregators():
    privacy = CentralPrivacy(PrivacyConfig(enabled=True), total_clients=3)
    updates = [ClientUpdate(c, {"w": np.ones(1, np.float32)}, 1) for c in "abc"]
    with pytest.raises(ValueError, match="fedmedian"):
        private_round(privacy, build_strategy(StrategyConfig(name="fedmedian")), {"w": np.zeros(1, np.float32)},
                      updates, np.random.default_rng(0))
