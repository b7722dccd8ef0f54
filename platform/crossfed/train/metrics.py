"""Signal-vs-background classification metrics: ROC AUC, background rejection, accuracy.

Background rejection at a working point is 1/ε_B where ε_B is the background efficiency at the lowest
threshold that keeps at least the requested signal efficiency ε_S (the usual HEP figure of merit).
"""

from __future__ import annotations

import numpy as np

WORKING_POINTS = (0.3, 0.5)


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be 1-d and of equal length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    if len(np.unique(labels)) != 2:
        raise ValueError("need both signal (1) and background (0) events")
    return labels.astype(np.int64), scores


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr = ε_B, tpr = ε_S, thresholds), starting at (0, 0)."""
    from sklearn.metrics import roc_curve as sklearn_roc_curve

    labels, scores = _check(labels, scores)
    fpr, tpr, thresholds = sklearn_roc_curve(labels, scores, drop_intermediate=False)
    return fpr, tpr, thresholds


def roc_auc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    labels, scores = _check(labels, scores)
    return float(roc_auc_score(labels, scores))


def background_rejection(labels, scores, signal_efficiency: float) -> float:
    """1/ε_B at the first ROC point with ε_S >= signal_efficiency (inf if no background passes)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    background_efficiency = fpr[np.searchsorted(tpr, signal_efficiency, side="left")]
    return float("inf") if background_efficiency == 0 else float(1.0 / background_efficiency)


def accuracy(labels, scores, threshold: float = 0.5) -> float:
    labels, scores = _check(labels, scores)
    return float(np.mean((scores >= threshold) == (labels == 1)))


def classification_metrics(labels, scores) -> dict[str, float]:
    """auc, rejection_at_0.3, rejection_at_0.5, accuracy (scores are signal probabilities)."""
    result = {"auc": roc_auc(labels, scores), "accuracy": accuracy(labels, scores)}
    for point in WORKING_POINTS:
        result[f"rejection_at_{point}"] = background_rejection(labels, scores, point)
    return result
