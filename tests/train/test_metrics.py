"""Classification metrics against values worked out by hand."""

import numpy as np
import pytest

from crossfed.train.metrics import accuracy, background_rejection, classification_metrics, roc_auc, roc_curve

# 4 signal, 4 background. Ranked by score: S S B S B S B B.
LABELS = np.array([1, 1, 0, 1, 0, 1, 0, 0])
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])


def test_auc_counts_correctly_ordered_pairs():
    # Pairs (signal above background): S0 beats 4, S1 beats 4, S3 beats 3, S5 beats 2 -> 13 of 16.
    assert roc_auc(LABELS, SCORES) == pytest.approx(13 / 16)
    assert roc_auc(LABELS, -SCORES) == pytest.approx(3 / 16)


def test_background_rejection_at_working_points():
    # eps_S >= 0.3 first reached at threshold 0.8 (2 of 4 signal), no background above it -> infinite.
    assert background_rejection(LABELS, SCORES, 0.3) == float("inf")
    # eps_S >= 0.75 first at threshold 0.6 (3 signal) with one background (0.7) above: eps_B 1/4 -> 4.
    assert background_rejection(LABELS, SCORES, 0.75) == pytest.approx(4.0)
    # eps_S = 1 needs threshold 0.4: backgrounds 0.7 and 0.5 pass, eps_B = 1/2 -> 2.
    assert background_rejection(LABELS, SCORES, 1.0) == pytest.approx(2.0)


def test_accuracy_and_roc_curve():
    # Signal if score >= 0.5: right on S(0.9) S(0.8) S(0.6) and B(0.3) B(0.2); wrong on B(0.7) B(0.5) S(0.4).
    assert accuracy(LABELS, SCORES) == pytest.approx(5 / 8)
    fpr, tpr, _ = roc_curve(LABELS, SCORES)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    metrics = classification_metrics(LABELS, SCORES)
    assert metrics == {"auc": pytest.approx(13 / 16), "accuracy": pytest.approx(5 / 8),
                       "rejection_at_0.3": float("inf"), "rejection_at_0.5": float("inf")}


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="both signal"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([1, 0], [np.nan, 0.3])
