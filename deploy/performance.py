"""Realised performance: served probabilities joined to the outcomes fed back, scored.

``realised_metrics`` scores a window of labelled predictions: accuracy,
balanced accuracy (the mean recall over the classes present), ROC AUC (binary;
macro one-vs-rest over the classes present otherwise), log loss (probabilities
clipped to ``[1e-15, 1]``), Brier score (mean squared distance between the
probability vector and the one-hot label, halved for two classes so it is the
familiar binary score) and a calibration curve (``CALIBRATION_BINS`` equal bins
of the positive class's probability, or of the predicted class's confidence
with more classes: mean predicted, observed frequency, rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

CALIBRATION_BINS = 10
METRICS = ("accuracy", "balanced_accuracy", "auc", "log_loss", "brier")
HIGHER_IS_BETTER = frozenset({"accuracy", "balanced_accuracy", "auc"})


def realised_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The metrics of ``probabilities`` (rows, classes) against class indices ``labels``."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    rows, classes = probabilities.shape if probabilities.ndim == 2 else (0, 0)
    if rows == 0:
        return {"rows": 0, **dict.fromkeys(METRICS), "calibration": []}
    predicted = probabilities.argmax(axis=1)
    correct = predicted == labels
    present = np.unique(labels)
    recalls = [float(correct[labels == c].mean()) for c in present]
    onehot = np.zeros_like(probabilities)
    onehot[np.arange(rows), labels] = 1.0
    true_p = np.clip(probabilities[np.arange(rows), labels], 1e-15, 1.0)
    brier = float(((probabilities - onehot) ** 2).sum(axis=1).mean())
    if classes == 2:
        brier /= 2
        auc = roc_auc(probabilities[:, 1], (labels == 1).astype(np.float64))
        score, outcome = probabilities[:, 1], (labels == 1).astype(np.float64)
    else:
        aucs = [roc_auc(probabilities[:, c], (labels == c).astype(np.float64)) for c in present]
        known = [a for a in aucs if a is not None]
        auc = float(np.mean(known)) if known else None
        score, outcome = probabilities.max(axis=1), correct.astype(np.float64)
    return {
        "rows": rows,
        "accuracy": float(correct.mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "auc": auc,
        "log_loss": float(-np.log(true_p).mean()),
        "brier": brier,
        "calibration": calibration_curve(score, outcome),
    }


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC of ``score`` for (possibly soft) labels ``positive`` in [0, 1]; ties count half.

    With soft labels (each row is positive with that probability) it is the
    expected-AUC estimate CBPE uses. ``None`` when either class has no weight.
    """
    score = np.asarray(score, dtype=np.float64)
    weight_pos = np.asarray(positive, dtype=np.float64)
    weight_neg = 1.0 - weight_pos
    total_pos, total_neg = weight_pos.sum(), weight_neg.sum()
    if total_pos <= 0 or total_neg <= 0:
        return None
    order = np.argsort(score, kind="mergesort")
    score, weight_pos, weight_neg = score[order], weight_pos[order], weight_neg[order]
    _, starts = np.unique(score, return_index=True)
    pos = np.add.reduceat(weight_pos, starts)
    neg = np.add.reduceat(weight_neg, starts)
    below = np.cumsum(neg) - neg  # negatives scored strictly lower than each group
    wins = (pos * (below + neg / 2)).sum()
    return float(wins / (total_pos * total_neg))


def calibration_curve(
    score: np.ndarray, outcome: np.ndarray, *, bins: int = CALIBRATION_BINS
) -> list[dict[str, float]]:
    """Per non-empty bin of ``score`` in [0, 1]: its range, mean score, observed rate, rows."""
    index = np.clip(np.floor(np.asarray(score) * bins), 0, bins - 1).astype(np.int64)
    counts = np.bincount(index, minlength=bins)
    predicted = np.bincount(index, weights=score, minlength=bins)
    observed = np.bincount(index, weights=outcome, minlength=bins)
    return [
        {
            "low": b / bins,
            "high": (b + 1) / bins,
            "predicted": float(predicted[b] / counts[b]),
            "observed": float(observed[b] / counts[b]),
            "rows": int(counts[b]),
        }
        for b in range(bins)
        if counts[b]
    ]
