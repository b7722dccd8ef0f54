"""The study's statistics, in plain numpy: ROC AUC with DeLong's per-event components, and the mean of
a metric over repeated trainings with a standard error and a 95 % confidence interval.

What varies between two answers of the same study, and how each part is estimated:

1. *Seeds.* A number in the table is the mean over runs: R pre-training seeds (the replicates) times F
   fine-tunings each (its own labelled-subset draw and head initialisation). The runs of one replicate
   share a pre-trained model, so they are not independent; the replicates are. The seed part of the
   variance of the mean is therefore s²(replicate means) / R with R − 1 degrees of freedom (the exact
   estimator for a balanced nested design; fine-tuning noise is inside the replicate means).
2. *Test events.* Every run is scored on the same held-out events, so the test set's sampling noise is
   common to all runs and does not show in their spread. For the mean AUC it is DeLong's variance of the
   averaged U-statistic: each test event's structural component (its share of the AUC) averaged over the
   runs, var(V10)/m + var(V01)/n over the m signal and n background events.

The total variance is their sum (law of total variance: seeds given the test set, plus the test set);
it is slightly conservative, because the test noise that differs from model to model is seen by both
parts. The degrees of freedom follow Welch–Satterthwaite (the test part has effectively infinitely
many), and the interval is mean ± t(df) · SE: with three replicates t is 4.30, not 1.96, which is what
three replicates can tell.

A paired difference (federated − local) is the same estimate applied to the per-run differences of runs
that share pre-training seed, fine-tuning seed and test set; DeLong's components subtract, so the
correlation of the two AUCs on one test set is accounted for, not ignored.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

LEVEL = 0.95


# --- ROC AUC and DeLong's structural components ---------------------------------------------------------

def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    # Boundaries of runs of equal values; each run gets the mean of the positions it spans.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    run_ranks = (starts + ends + 1) / 2.0  # mean of (start+1 .. end)
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(run_ranks, ends - starts)
    return ranks


def _split(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be 1-d and of equal length")
    positive, negative = scores[labels == 1], scores[labels == 0]
    if len(positive) == 0 or len(negative) == 0:
        raise ValueError("an AUC needs both signal (1) and background (0) events")
    return positive, negative


def delong_components(labels, scores) -> tuple[float, np.ndarray, np.ndarray]:
    """(AUC, V10, V10's partner V01): V10[i] is the fraction of background events signal event i outscores
    (ties count one half), V01[j] the fraction of signal events that outscore background event j. The AUC
    is the mean of either (DeLong, DeLong & Clarke-Pearson 1988; midrank form of Sun & Xu 2014)."""
    positive, negative = _split(labels, scores)
    m, n = len(positive), len(negative)
    combined = midranks(np.concatenate([positive, negative]))
    v10 = (combined[:m] - midranks(positive)) / n
    v01 = 1.0 - (combined[m:] - midranks(negative)) / m
    return float(v10.mean()), v10, v01


def auc(labels, scores) -> float:
    """ROC AUC = P(signal score > background score) + ½ P(equal) (the Mann–Whitney U statistic / m n)."""
    return delong_components(labels, scores)[0]


def delong_variance(v10: np.ndarray, v01: np.ndarray) -> float:
    """Variance over test sets of an AUC (or a mean or difference of AUCs on one test set) from its
    averaged structural components."""
    v10, v01 = np.asarray(v10, dtype=np.float64), np.asarray(v01, dtype=np.float64)
    if len(v10) < 2 or len(v01) < 2:
        return 0.0
    return float(v10.var(ddof=1) / len(v10) + v01.var(ddof=1) / len(v01))


# --- quantiles without scipy ------------------------------------------------------------------------------

def _incomplete_beta(x: float, a: float, b: float) -> float:
    """Regularised incomplete beta I_x(a, b) by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast only below the mean
        return 1.0 - _incomplete_beta(1.0 - x, b, a)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            numerator = 1.0
        elif i % 2 == 0:
            numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + numerator * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + numerator / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-14:
            break
    return front * (f - 1.0)


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function."""
    if math.isinf(df):
        return NormalDist().cdf(t)
    tail = 0.5 * _incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df (> 0, may be fractional or inf) degrees of freedom."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if math.isinf(df) or df > 1e7:
        return NormalDist().inv_cdf(p)
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):  # bisection: monotone, and exact to float precision in < 200 halvings
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


# --- the estimate of one table cell or one paired difference -----------------------------------------------

@dataclass(frozen=True)
class Estimate:
    """Mean of a metric over runs, with its standard error split into seeds and test set."""

    mean: float
    se: float  # total standard error of the mean
    low: float  # the confidence interval (LEVEL, t with df degrees of freedom)
    high: float
    df: float
    se_seeds: float
    se_test: float
    std: float  # spread of the single runs (not of the mean)
    runs: int
    replicates: int  # independent units: pre-training seeds, or runs when there is one seed or none
    seed_variance_from: str  # "replicates", "runs" (one pre-training seed: its variance is not included) or "none"

    def significant(self) -> bool:
        """The interval excludes zero (for a difference: the two methods differ)."""
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict:
        return asdict(self)


def estimate(values, replicates, test_variance: float = 0.0, level: float = LEVEL) -> Estimate:
    """Mean, SE and interval of `values` (one per run) whose runs are grouped by `replicates` (one id per
    run: the pre-training seed). `test_variance`: the test set's part, e.g. `delong_variance` of the
    runs' averaged components (0 if the metric has none)."""
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(replicates)
    if values.ndim != 1 or len(values) == 0 or groups.shape != values.shape:
        raise ValueError(f"need one replicate id per value; got {values.shape} values, {groups.shape} ids")
    if not np.all(np.isfinite(values)):
        raise ValueError("values contain NaN or infinity")
    ids = list(dict.fromkeys(groups.tolist()))
    means = np.array([values[groups == g].mean() for g in ids])
    if len(ids) >= 2:
        units, source = means, "replicates"
    elif len(values) >= 2:  # one pre-training: only the fine-tuning spread is measurable
        units, source = values, "runs"
    else:
        units, source = values, "none"
    seed_variance = float(units.var(ddof=1) / len(units)) if len(units) >= 2 else 0.0
    test_variance = max(float(test_variance), 0.0)
    total = seed_variance + test_variance
    mean = float(means.mean()) if source == "replicates" else float(values.mean())
    if seed_variance > 0:
        df = total**2 / (seed_variance**2 / (len(units) - 1))  # Welch–Satterthwaite; the test part has df = inf
    else:
        df = math.inf
    half = t_quantile(0.5 + level / 2, df) * math.sqrt(total) if total > 0 else 0.0
    return Estimate(
        mean=mean, se=math.sqrt(total), low=mean - half, high=mean + half, df=df,
        se_seeds=math.sqrt(seed_variance), se_test=math.sqrt(test_variance),
        std=float(values.std(ddof=1)) if len(values) >= 2 else 0.0, runs=len(values),
        replicates=len(ids) if source == "replicates" else len(units) if source == "runs" else 1,
        seed_variance_from=source,
    )


def rejection_variance(rejection: float, background_events: int) -> float:
    """Binomial test-set variance of a background rejection 1/ε_B measured on `background_events` events
    (delta method at the fixed working point): var(1/ε) = var(ε)/ε⁴ with var(ε) = ε(1−ε)/n."""
    if not math.isfinite(rejection) or rejection <= 0 or background_events <= 0:
        return 0.0
    efficiency = 1.0 / rejection
    return efficiency * (1 - efficiency) / background_events / efficiency**4


# --- the plain verdict --------------------------------------------------------------------------------------

def verdict(difference: Estimate, positive: str, negative: str, neutral: str, unit: str = "AUC") -> str:
    """One plain sentence: `positive` if the interval lies above zero, `negative` if below, else `neutral`,
    with the numbers, e.g. "federation improves atlas at 1,000 labels: +0.021 ± 0.006 AUC (95 % CI ...)"."""
    numbers = (f"{difference.mean:+.3f} ± {difference.se:.3f} {unit} "
               f"(95 % CI {difference.low:+.3f} … {difference.high:+.3f})")
    if difference.se == 0:
        return f"{neutral} (one run, no uncertainty): {numbers}"
    if difference.high < 0:
        return f"{negative}: {numbers}"
    if difference.low > 0:
        return f"{positive}: {numbers}"
    return f"{neutral}: {numbers}"
