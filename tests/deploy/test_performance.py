"""Realised metrics against scikit-learn's, and CBPE's estimate against what really happened."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)

from client.contract.profile import ReferenceProfile, federation_layout
from client.contract.schema import TableSchema
from deploy.estimation import FederatedCalibration
from deploy.performance import realised_metrics, roc_auc

SCHEMA = TableSchema.model_validate({
    "name": "toy",
    "features": [{"kind": "numeric", "name": "x", "range": [0, 1]}],
    "target": {"name": "y", "labels": ["no", "yes"], "mapping": {"0": "no", "1": "yes"}},
})


def binary(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p1 = rng.beta(2, 2, size=rows)
    labels = (rng.random(rows) < p1).astype(np.int64)  # calibrated by construction
    return np.stack([1 - p1, p1], axis=1), labels


def test_realised_metrics_match_scikit_learn():
    probabilities, labels = binary(500, seed=1)

    metrics = realised_metrics(probabilities, labels)

    predicted = probabilities.argmax(axis=1)
    assert metrics["rows"] == 500
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, probabilities[:, 1]))
    assert metrics["log_loss"] == pytest.approx(log_loss(labels, probabilities))
    assert metrics["brier"] == pytest.approx(brier_score_loss(labels, probabilities[:, 1]))
    assert sum(b["rows"] for b in metrics["calibration"]) == 500


def test_multiclass_auc_is_macro_one_vs_rest_and_ties_count_half():
    rng = np.random.default_rng(2)
    probabilities = rng.dirichlet([1, 1, 1], size=300)
    labels = rng.integers(0, 3, size=300)

    metrics = realised_metrics(probabilities, labels)

    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, probabilities, multi_class="ovr"))
    assert roc_auc(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == 0.5
    assert roc_auc(np.array([0.2, 0.9]), np.array([1.0, 1.0])) is None


def test_an_empty_window_has_no_metrics():
    metrics = realised_metrics(np.zeros((0, 2)), np.zeros(0, dtype=np.int64))
    assert metrics["rows"] == 0 and metrics["accuracy"] is None and metrics["calibration"] == []


def profile_of(probabilities: np.ndarray, labels: np.ndarray) -> ReferenceProfile:
    layout = federation_layout(SCHEMA)
    numeric = np.full((len(labels), 1), 0.5, dtype=np.float32)
    counts = layout.counts(numeric, np.zeros((len(labels), 0), dtype=np.int64), probabilities, labels)
    return ReferenceProfile(layout=layout, counts=counts, rows=float(len(labels)))


def test_cbpe_estimates_accuracy_and_auc_from_probabilities_alone():
    reference = profile_of(*binary(4000, seed=3))
    served, truth = binary(2000, seed=4)
    calibration = FederatedCalibration.from_profile(reference, classes=2)

    estimate = calibration.estimate(served)
    actual = realised_metrics(served, truth)

    assert calibration.calibrated
    assert estimate["accuracy"] == pytest.approx(actual["accuracy"], abs=0.03)
    assert estimate["auc"] == pytest.approx(actual["auc"], abs=0.03)
    assert calibration.reference["accuracy"] == pytest.approx(0.69, abs=0.03)


def test_cbpe_learns_an_overconfident_models_calibration_from_the_federation():
    probabilities, labels = binary(4000, seed=5)
    overconfident = np.clip((probabilities[:, 1] - 0.5) * 2 + 0.5, 0.0, 1.0)
    shown = np.stack([1 - overconfident, overconfident], axis=1)
    calibration = FederatedCalibration.from_profile(profile_of(shown, labels), classes=2)
    naive = FederatedCalibration.from_profile(None, classes=2)

    served, truth = binary(2000, seed=6)
    served_shown = np.stack([1 - np.clip((served[:, 1] - 0.5) * 2 + 0.5, 0, 1),
                             np.clip((served[:, 1] - 0.5) * 2 + 0.5, 0, 1)], axis=1)
    actual = realised_metrics(served_shown, truth)["accuracy"]

    assert not naive.calibrated
    assert abs(calibration.estimate(served_shown)["accuracy"] - actual) < 0.03
    assert naive.estimate(served_shown)["accuracy"] - actual > 0.05  # raw confidence overstates it


def test_calibration_blocks_count_each_row_once_and_drift_ignores_them():
    probabilities, labels = binary(300, seed=7)
    profile = profile_of(probabilities, labels)
    block = next(b for b in profile.layout.blocks if b.kind == "calibration")

    assert profile.block_counts(block).sum() == 300
    assert profile.block_counts(block)[:-1].sum() == labels.sum()
    assert not profile.without_calibration().layout.has_calibration
    assert ReferenceProfile.from_dict(profile.to_dict()).layout.has_calibration
