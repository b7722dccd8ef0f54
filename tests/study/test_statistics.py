"""The study's statistics against cases worked out by hand, and the interval's coverage by simulation."""

import math

import numpy as np
import pytest

from crossfed.study import statistics as st


def test_midranks_share_tied_ranks():
    assert st.midranks([0.3, 0.1, 0.3, 0.2]).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_auc_and_delong_components_by_hand():
    # Signal scores 0.9, 0.4; background 0.5, 0.1. Pairs: 0.9 beats both, 0.4 beats only 0.1: AUC 3/4.
    value, v10, v01 = st.delong_components([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1])
    assert value == 0.75
    assert v10.tolist() == [1.0, 0.5]  # share of background each signal event outscores
    assert v01.tolist() == [0.5, 1.0]  # share of signal events outscoring each background event
    # var = s²(V10)/m + s²(V01)/n = 0.125/2 + 0.125/2 (s² of {1, 0.5} with ddof 1 is 0.125).
    assert st.delong_variance(v10, v01) == pytest.approx(0.125)


def test_auc_counts_ties_as_one_half():
    # Signal {0.5, 0.7}, background {0.5, 0.2}: pairs (0.5,0.5)=1/2, (0.5,0.2)=1, (0.7,0.5)=1, (0.7,0.2)=1.
    assert st.auc([1, 1, 0, 0], [0.5, 0.7, 0.5, 0.2]) == pytest.approx(3.5 / 4)
    assert st.auc([1, 0], [0.3, 0.3]) == 0.5


def test_auc_agrees_with_the_pair_count_on_random_scores():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounded: many ties
    positive, negative = scores[labels == 1], scores[labels == 0]
    pairs = (positive[:, None] > negative[None, :]) + 0.5 * (positive[:, None] == negative[None, :])
    value, v10, v01 = st.delong_components(labels, scores)
    assert value == pytest.approx(pairs.mean())
    np.testing.assert_allclose(v10, pairs.mean(axis=1))
    np.testing.assert_allclose(v01, pairs.mean(axis=0))


@pytest.mark.parametrize("df, expected", [(1, 12.706205), (2, 4.302653), (4, 2.776445), (10, 2.228139),
                                          (30, 2.042272), (2.5, 3.574655), (math.inf, 1.959964)])
def test_t_quantile_matches_the_tables(df, expected):
    assert st.t_quantile(0.975, df) == pytest.approx(expected, abs=2e-6)
    assert st.t_quantile(0.025, df) == pytest.approx(-expected, abs=2e-6)


def test_estimate_of_three_replicates_by_hand():
    # Replicate means 0.70, 0.72, 0.74 (two runs each): mean 0.72, s² = 0.0004, seed variance 0.0004/3.
    values = [0.69, 0.71, 0.72, 0.72, 0.73, 0.75]
    est = st.estimate(values, [0, 0, 1, 1, 2, 2])
    assert est.mean == pytest.approx(0.72)
    assert est.se_seeds == pytest.approx(math.sqrt(0.0004 / 3))
    assert est.se == est.se_seeds and est.se_test == 0 and est.df == pytest.approx(2)
    half = 4.302653 * math.sqrt(0.0004 / 3)
    assert (est.low, est.high) == (pytest.approx(0.72 - half), pytest.approx(0.72 + half))
    assert est.replicates == 3 and est.runs == 6 and est.seed_variance_from == "replicates"


def test_estimate_adds_the_test_variance_with_satterthwaite_degrees_of_freedom():
    est = st.estimate([0.70, 0.72, 0.74], [0, 1, 2], test_variance=0.0004 / 3)
    # Seed and test parts equal: total 2·0.0004/3; df = total² / (seed²/2) = 4 · 2 = 8.
    assert est.se == pytest.approx(math.sqrt(2 * 0.0004 / 3))
    assert est.df == pytest.approx(8.0)
    assert est.high - est.mean == pytest.approx(st.t_quantile(0.975, 8.0) * est.se)


def test_one_pretraining_seed_falls_back_to_the_runs_and_says_so():
    est = st.estimate([0.70, 0.74], [0, 0])
    assert est.seed_variance_from == "runs" and est.se_seeds == pytest.approx(math.sqrt(0.0008 / 2))
    single = st.estimate([0.7], [0], test_variance=0.0001)
    assert single.seed_variance_from == "none" and single.se == pytest.approx(0.01) and math.isinf(single.df)


def test_rejection_variance_by_hand():
    # 1/ε_B = 20 on 10,000 background events: ε = 0.05, var(ε) = 0.05·0.95/1e4, var(1/ε) = var(ε)/ε⁴.
    assert st.rejection_variance(20.0, 10_000) == pytest.approx(0.05 * 0.95 / 1e4 / 0.05**4)
    assert st.rejection_variance(math.inf, 100) == 0.0


def test_verdicts():
    phrases = ("federation improves atlas at 1,000 labels", "federation worsens atlas at 1,000 labels",
               "no significant difference for atlas at 1,000 labels")
    better = st.estimate([0.02, 0.021, 0.022], [0, 1, 2])
    assert st.verdict(better, *phrases).startswith(
        "federation improves atlas at 1,000 labels: +0.021 ± 0.001 AUC (95 % CI +0.019")
    worse = st.estimate([-0.02, -0.021, -0.022], [0, 1, 2])
    assert st.verdict(worse, *phrases).startswith("federation worsens atlas at 1,000 labels: -0.021")
    null = st.estimate([-0.01, 0.0, 0.012], [0, 1, 2])
    assert st.verdict(null, *phrases).startswith("no significant difference for atlas at 1,000 labels: +0.001")
    assert "no uncertainty" in st.verdict(st.estimate([0.01], [0]), *phrases)


@pytest.mark.parametrize("seed_sd, run_noise", [(0.15, 0.05), (0.0, 0.05)], ids=["seed-dominated", "test-dominated"])
def test_paired_interval_covers_the_true_difference_95_percent_of_the_time(seed_sd, run_noise):
    """Simulated studies: two methods scored on one shared test set, three pre-training seeds (each nudging
    each method's separation by `seed_sd`), five fine-tunings each (score noise `run_noise`). The true AUC
    difference is known; the 95 % interval must cover it in 90-99 % of 200 studies. Both regimes bite:
    with 1.96 instead of t(df=2) the seed-dominated one covers about 82 %; without DeLong's test-set
    part the test-dominated one covers about 75 % (measured when this test was written)."""
    rng = np.random.default_rng(7)
    m = n = 300
    labels = np.r_[np.ones(m), np.zeros(n)]
    # Signal N(mu, 1) + noise against background N(0, 1) + noise: AUC = Phi(mu / sqrt(2 + 2 noise²)).
    spread = math.sqrt(2 + 2 * run_noise**2)
    truth = normal_cdf(1.0 / spread) - normal_cdf(0.9 / spread)
    covered = 0
    for _ in range(200):
        signal, background = rng.normal(0, 1, m), rng.normal(0, 1, n)  # the shared test set
        differences, ids, v10s, v01s = [], [], [], []
        for seed in range(3):
            seed_effect = rng.normal(0, seed_sd, 2)
            for _ in range(5):
                runs = [st.delong_components(labels, np.r_[signal + mu + effect + rng.normal(0, run_noise, m),
                                                            background + rng.normal(0, run_noise, n)])
                        for mu, effect in zip((1.0, 0.9), seed_effect)]
                differences.append(runs[0][0] - runs[1][0])
                v10s.append(runs[0][1] - runs[1][1])
                v01s.append(runs[0][2] - runs[1][2])
                ids.append(seed)
        est = st.estimate(differences, ids, st.delong_variance(np.mean(v10s, 0), np.mean(v01s, 0)))
        covered += est.low <= truth <= est.high
    assert 0.90 <= covered / 200 <= 0.99, covered / 200


def normal_cdf(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))
