"""Central DP as the accountant assumes it: clipping, Poisson sampling, the fixed denominator, the noise
scale, ε against Opacus computed independently, noised metrics, the budget, unpredictable noise.

Statistical tests are two-sided at a false-alarm rate of 1e-6 each (stated where used), so the suite
fails by chance about once in a million runs per test; a wrong denominator or scale fails them by far.
"""

import numpy as np
import pytest
from scipy import stats

from crossfed.config import StrategyConfig
from crossfed.config.federation import PrivacyConfig
from crossfed.errors import CrossfedError
from crossfed.federation.privacy import CentralPrivacy, check_planned_budget, clip_update, schedule_epsilon
from crossfed.federation.strategies import ClientUpdate, build_strategy
from crossfed.federation.validation import update_norm

FALSE_ALARM = 1e-6


def private_round(privacy, strategy, global_state, updates, rng=None):
    """One private round as the driver runs it: clip, the strategy's mean delta, noise, the server step."""
    clipped = privacy.privatize(global_state, updates)
    return strategy.aggregate(global_state, clipped, perturb_delta=privacy.perturbation(len(clipped), rng))


def test_privatize_clips_each_delta_to_the_norm_over_all_tensors():
    privacy = CentralPrivacy(PrivacyConfig(enabled=True, clip_norm=1.0), total_clients=3)
    global_state = {"w": np.array([1.0, 1.0], np.float32), "b": np.array([2.0], np.float32)}
    big = ClientUpdate("big", {"w": np.array([4.0, 1.0], np.float32), "b": np.array([6.0], np.float32)}, 500,
                       {"loss": 3.0})
    small = ClientUpdate("small", {"w": np.array([1.3, 1.0], np.float32), "b": np.array([2.4], np.float32)}, 7)
    clipped = privacy.privatize(global_state, [big, small])
    # big: Δ = (3, 0, 4), norm 5 -> (0.6, 0, 0.8); small: Δ = (0.3, 0, 0.4), norm 0.5 stays
    np.testing.assert_allclose(clipped[0].state["w"], [1.6, 1.0], rtol=1e-6)
    np.testing.assert_allclose(clipped[0].state["b"], [2.8], rtol=1e-6)
    assert update_norm(global_state, clipped[0].state) == pytest.approx(1.0, rel=1e-6)
    assert update_norm(global_state, clipped[1].state) == pytest.approx(0.5, rel=1e-6)
    assert [u.num_examples for u in clipped] == [1, 1]  # uniform weights: sensitivity C/m
    assert clipped[0].metrics == {}


def test_clip_update_leaves_what_it_cannot_judge_for_the_validation():
    global_state = {"w": np.zeros(2, np.float32)}
    not_finite = {"w": np.array([np.nan, 1e3], np.float32)}
    wrong_shape = {"w": np.zeros(3, np.float32)}
    assert clip_update(global_state, not_finite, 1.0) is not_finite
    assert clip_update(global_state, wrong_shape, 1.0) is wrong_shape
    # the client's float32 clip stays within float32 rounding of C; the driver clips again anyway
    clipped = clip_update(global_state, {"w": np.array([3.0, 4.0], np.float32)}, 1.0, np.float32)
    assert clipped["w"].dtype == np.float32 and update_norm(global_state, clipped) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("updating", [1, 2, 3])
def test_noise_std_and_mean_use_the_expected_not_the_realised_number_of_clients(updating):
    """8 clients, 2 expected per round (q = 1/4), clip 0.5, σ = 1.2: the aggregate is Σ Δ_i / 2 plus noise of
    std 1.2 × 0.5 / 2 = 0.3, whether 1, 2 or 3 clipped updates arrived. Each client moved every coordinate by
    c = 1e-3 (norm 0.2 over 40 000 coordinates: not clipped). Variance: χ² test with the known mean; mean: z
    test; both two-sided at FALSE_ALARM. The realised count as denominator (std 0.6 or 0.2) fails by far."""
    n, c = 40_000, 1e-3
    privacy = CentralPrivacy(PrivacyConfig(enabled=True, clip_norm=0.5, noise_multiplier=1.2), total_clients=8,
                             expected_clients=2)
    assert privacy.sample_rate == 0.25 and privacy.noise_std() == pytest.approx(0.3)
    global_state = {"w": np.zeros(n, np.float32)}
    updates = [ClientUpdate(f"c{i}", {"w": np.full(n, c, np.float32)}, 10 * (i + 1)) for i in range(updating)]
    new = private_round(privacy, build_strategy(StrategyConfig(name="fedavg")), global_state, updates)
    x = new["w"].astype(np.float64)
    mean, std = updating * c / 2, 0.3
    chi2 = np.sum((x - mean) ** 2) / std**2
    assert stats.chi2.ppf(FALSE_ALARM / 2, n) < chi2 < stats.chi2.isf(FALSE_ALARM / 2, n), chi2 / n
    z = (x.mean() - mean) / (std / np.sqrt(n))
    assert abs(z) < stats.norm.isf(FALSE_ALARM / 2), z
    assert privacy.accountant.history == [(1.2, 0.25, 1)]


def test_an_empty_sample_still_releases_pure_noise_and_is_counted():
    privacy = CentralPrivacy(PrivacyConfig(enabled=True, clip_norm=1.0, noise_multiplier=2.0), total_clients=4,
                             expected_clients=1)
    global_state = {"w": np.full(20_000, 3.0, np.float32)}
    new = private_round(privacy, build_strategy(StrategyConfig(name="fedavgm", server_lr=1.0, server_momentum=0.0)),
                        global_state, [])
    noise = new["w"].astype(np.float64) - 3.0
    chi2 = np.sum(noise**2) / 2.0**2  # std σ·C/m = 2
    assert stats.chi2.ppf(FALSE_ALARM / 2, noise.size) < chi2 < stats.chi2.isf(FALSE_ALARM / 2, noise.size)
    assert privacy.accountant.history == [(2.0, 0.25, 1)]


def test_noise_goes_on_the_mean_delta_before_the_server_step():
    # FedAvgM, server_lr 2: w = 0 + 2·(Σ clipped Δ / 2 + noise). Clients move every coordinate by 0.01 and
    # 0.03 (norms 1 and 3 over 10⁴ coordinates, under C = 10: not clipped); mean Δ = 0.02.
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


def test_the_noise_comes_from_os_entropy_not_from_anything_configured():
    """Two mechanisms built from the same configuration (all a run logs) add different noise, so no
    function of the logged parameters regenerates it; nor does the old derivation from (seed, round)."""
    cfg = PrivacyConfig(enabled=True, clip_norm=1.0, noise_multiplier=1.0)
    global_state = {"w": np.zeros(1000, np.float32)}
    updates = [ClientUpdate("a", {"w": np.full(1000, 0.01, np.float32)}, 1)]
    fedavg = build_strategy(StrategyConfig(name="fedavg"))
    first = private_round(CentralPrivacy(cfg, total_clients=1), fedavg, global_state, updates)["w"]
    second = private_round(CentralPrivacy(cfg, total_clients=1), fedavg, global_state, updates)["w"]
    assert not np.allclose(first, second)
    for seed in (0, 1, 2, 3):
        for derived in ([seed, 1, 7], [seed, 1], seed):
            regenerated = 0.01 + np.random.default_rng(derived).normal(0.0, 1.0, 1000)
            assert not np.allclose(first, regenerated.astype(np.float32))


def test_poisson_sampling_at_the_configured_rate_unpredictable_and_fixed_within_a_round():
    names = [f"c{i}" for i in range(10)]
    privacy = CentralPrivacy(PrivacyConfig(enabled=True), total_clients=10, expected_clients=3)
    draws = [privacy.draw(names, r) for r in range(1, 2001)]
    assert privacy.draw(names, 5) == draws[4]  # a retried round draws the same
    assert all(draw == sorted(draw, key=names.index) for draw in draws)
    sizes = [len(d) for d in draws]
    assert min(sizes) == 0 and max(sizes) >= 6  # a Poisson sample's size varies (mean 3)
    # each client is in a round with probability 0.3: binomial test per client at FALSE_ALARM
    for name in names:
        hits = sum(name in d for d in draws)
        assert stats.binomtest(hits, len(draws), 0.3).pvalue > FALSE_ALARM, (name, hits)
    # another driver with the same configuration draws differently (the key is not configured)
    other = CentralPrivacy(PrivacyConfig(enabled=True), total_clients=10, expected_clients=3)
    assert [other.draw(names, r) for r in range(1, 21)] != draws[:20]
    assert CentralPrivacy(PrivacyConfig(enabled=True), total_clients=10).draw(names, 1) == names  # q = 1


def test_epsilon_equals_opacus_for_a_known_schedule():
    """q = 0.25, σ = 1.1, 30 rounds, δ = 1e-5: ε through the driver's mechanism equals Opacus' RDP accountant
    stepped here on its own, and its RDP analysis called directly; with noised metrics (σ_m = 4, q = 1)
    both mechanisms compose."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    cfg = PrivacyConfig(enabled=True, clip_norm=1.0, noise_multiplier=1.1, delta=1e-5)
    privacy = CentralPrivacy(cfg, total_clients=8, expected_clients=2)
    fedavg = build_strategy(StrategyConfig(name="fedavg"))
    global_state = {"w": np.zeros(3, np.float32)}
    for round_number in range(30):
        updates = [ClientUpdate(c, {"w": np.ones(3, np.float32)}, 5) for c in "abc"[: round_number % 4]]
        private_round(privacy, fedavg, global_state, updates)  # 0-3 updates: the rate stays 0.25

    reference = RDPAccountant()
    for _ in range(30):
        reference.step(noise_multiplier=1.1, sample_rate=0.25)
    assert privacy.epsilon() == pytest.approx(reference.get_epsilon(1e-5), rel=1e-12)
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    direct, _ = get_privacy_spent(orders=orders, rdp=compute_rdp(q=0.25, noise_multiplier=1.1, steps=30,
                                                                    orders=orders), delta=1e-5)
    assert privacy.epsilon() == pytest.approx(direct, rel=1e-9)
    assert 0 < privacy.epsilon() < np.inf

    with_metrics = CentralPrivacy(cfg.model_copy(update={"metric_noise_multiplier": 4.0}), total_clients=8,
                                  expected_clients=2)
    for _ in range(30):
        private_round(with_metrics, fedavg, global_state, [])
        with_metrics.noised_metric_means({"a": {"loss": 1.0}}, ["loss"])
    rdp = compute_rdp(q=0.25, noise_multiplier=1.1, steps=30, orders=orders) + compute_rdp(
        q=1.0, noise_multiplier=4.0, steps=30, orders=orders)
    assert with_metrics.epsilon() == pytest.approx(get_privacy_spent(orders=orders, rdp=rdp, delta=1e-5)[0], rel=1e-9)
    assert with_metrics.epsilon() > privacy.epsilon()


def test_epsilon_survives_resume():
    cfg = PrivacyConfig(enabled=True, clip_norm=1.0, noise_multiplier=1.1, delta=1e-5)
    privacy = CentralPrivacy(cfg, total_clients=10)
    strategy = build_strategy(StrategyConfig(name="fedavg"))
    global_state = {"w": np.zeros(3, np.float32)}
    updates = [ClientUpdate(c, {"w": np.ones(3, np.float32)}, 5) for c in ["a", "b"]]
    assert privacy.epsilon() == 0.0
    epsilons = []
    for _ in range(3):
        private_round(privacy, strategy, global_state, updates)
        epsilons.append(privacy.epsilon())
    assert epsilons[0] < epsilons[1] < epsilons[2]

    resumed = CentralPrivacy(cfg, total_clients=10)
    resumed.load_state_dict(privacy.state_dict())
    assert resumed.epsilon() == epsilons[-1]
    private_round(resumed, strategy, global_state, updates)
    private_round(privacy, strategy, global_state, updates)
    assert resumed.epsilon() == privacy.epsilon() > epsilons[-1]
    assert CentralPrivacy(cfg.model_copy(update={"noise_multiplier": 0.0}), 2).round_steps(1) == [(0.0, 1.0, 1)]
    assert schedule_epsilon([(0.0, 1.0, 1)], 1e-5) == np.inf


def test_noised_metric_means_clip_each_client_and_divide_by_all_clients():
    """3 clients, metrics clipped to [0, 2], σ_m = 0.5, two metrics: std 0.5·2·√2/3; a missing client or value
    counts 0. Mean over 20 000 repetitions, z test at FALSE_ALARM; the variance by a χ² test."""
    cfg = PrivacyConfig(enabled=True, metric_noise_multiplier=0.5, metric_clip=2.0)
    privacy = CentralPrivacy(cfg, total_clients=3)
    evaluations = {"a": {"loss": 7.0, "acc": 0.5, "num_examples": 900.0}, "b": {"loss": -1.0, "acc": np.nan}}
    expected = {"loss": (2.0 + 0.0) / 3, "acc": 0.5 / 3}
    std = 0.5 * 2.0 * np.sqrt(2) / 3
    assert privacy.metric_noise_std(2) == pytest.approx(std)
    draws = [privacy.noised_metric_means(evaluations, ["loss", "acc"]) for _ in range(20_000)]
    assert set(draws[0]) == {"loss", "acc"}  # the example count is never released
    for key, mean in expected.items():
        values = np.array([d[key] for d in draws])
        assert abs((values.mean() - mean) / (std / np.sqrt(values.size))) < stats.norm.isf(FALSE_ALARM / 2)
        chi2 = np.sum((values - mean) ** 2) / std**2
        assert stats.chi2.ppf(FALSE_ALARM / 2, values.size) < chi2 < stats.chi2.isf(FALSE_ALARM / 2, values.size)
    assert privacy.accountant.history == [(0.5, 1.0, 20_000)]


def test_the_budget_is_checked_before_the_run_and_before_each_round():
    cfg = PrivacyConfig(enabled=True, noise_multiplier=1.5, delta=1e-5, target_epsilon=8.0)
    per_round = [schedule_epsilon([(1.5, 0.5, r)], 1e-5) for r in range(1, 40)]
    fitting = sum(e <= 8.0 for e in per_round)
    assert 0 < fitting < 39
    check_planned_budget(cfg, total_clients=4, expected_clients=2, rounds=fitting)
    with pytest.raises(CrossfedError, match=rf"federation.rounds=39 would spend ε=.* {fitting} round\(s\) fit"):
        check_planned_budget(cfg, total_clients=4, expected_clients=2, rounds=39)

    privacy = CentralPrivacy(cfg, total_clients=4, expected_clients=2)
    privacy.load_state_dict({"history": [(1.5, 0.5, fitting - 1)]})
    privacy.check_budget(fitting)  # the last round that fits
    privacy.load_state_dict({"history": [(1.5, 0.5, fitting)]})
    with pytest.raises(CrossfedError, match=rf"round {fitting + 1} would bring ε to .* stops after round {fitting}"):
        privacy.check_budget(fitting + 1)


def test_central_dp_refuses_robust_aggregators():
    privacy = CentralPrivacy(PrivacyConfig(enabled=True), total_clients=3)
    updates = [ClientUpdate(c, {"w": np.ones(1, np.float32)}, 1) for c in "abc"]
    with pytest.raises(ValueError, match="fedmedian"):
        private_round(privacy, build_strategy(StrategyConfig(name="fedmedian")), {"w": np.zeros(1, np.float32)},
                      updates, np.random.default_rng(0))
