"""Performance estimated before any label comes back: confidence-based estimation (CBPE).

The idea is NannyML's: if a model's probabilities are calibrated, each served
row is right with the probability the calibrated model gives it, so the
expected accuracy of a window is the mean of those probabilities and its
expected ROC AUC is the AUC with the calibrated probabilities as soft labels.

Calibration comes from the federation, never from pooled rows: the run's
reference profile (``client.contract.profile.federation_layout``) holds per class the
histogram of its predicted probability over the training rows and, in a
``calibration`` block, how many of the rows in each bin truly were of that
class; both are sums over institutions (securely aggregated, noised and
accounted when the run says so). ``FederatedCalibration`` merges the fine bins
into ``COARSE_BINS`` and shrinks each bin's observed rate towards its centre
by ``PRIOR_ROWS`` pseudo-rows, so sparse or noisy bins cannot swing the map.
A profile without calibration blocks (older runs) leaves the probabilities as
they are (``calibrated`` is ``False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from client.contract.profile import ReferenceProfile
from deploy.performance import roc_auc

COARSE_BINS = 10
PRIOR_ROWS = 2.0


@dataclass(frozen=True)
class ClassCalibration:
    """One class's map from predicted probability to observed frequency."""

    column: int
    edges: np.ndarray
    rates: np.ndarray
    rows: np.ndarray

    def __call__(self, probability: np.ndarray) -> np.ndarray:
        bins = len(self.rates)
        index = np.clip(np.floor(np.asarray(probability) * bins), 0, bins - 1).astype(np.int64)
        mapped: np.ndarray = self.rates[index]
        return mapped


class FederatedCalibration:
    """Calibration maps of a version's classes, from its reference profile."""

    def __init__(self, classes: int, maps: dict[int, ClassCalibration], reference_rows: float):
        self.classes = classes
        self.maps = maps
        self.reference_rows = reference_rows
        self.reference: dict[str, float | None] = {}

    @property
    def calibrated(self) -> bool:
        return bool(self.maps)

    @classmethod
    def from_profile(
        cls, profile: ReferenceProfile | None, *, classes: int
    ) -> FederatedCalibration:
        if profile is None or not profile.layout.has_calibration:
            return cls(classes, {}, 0.0)
        maps = {}
        for block in profile.layout.blocks:
            if block.kind != "calibration":
                continue
            seen = next(
                b for b in profile.layout.blocks
                if b.kind == "probability" and b.column == block.column
            )  # fmt: skip
            totals = _coarse(np.clip(profile.block_counts(seen), 0, None))
            hits = _coarse(np.clip(profile.block_counts(block)[:-1], 0, None))
            hits = np.minimum(hits, totals)
            centres = (np.arange(COARSE_BINS) + 0.5) / COARSE_BINS
            rates = (hits + PRIOR_ROWS * centres) / (totals + PRIOR_ROWS)
            maps[block.column] = ClassCalibration(
                column=block.column,
                edges=np.linspace(0, 1, COARSE_BINS + 1),
                rates=rates,
                rows=totals,
            )
        calibration = cls(classes, maps, profile.rows)
        calibration.reference = calibration.reference_estimate(profile)
        return calibration

    def positive(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated probability of each class, ``(rows, classes)`` (binary: from class 1)."""
        p = np.asarray(probabilities, dtype=np.float64)
        if not self.maps:
            return p
        if self.classes == 2 and 1 in self.maps:
            one = self.maps[1](p[:, 1])
            return np.stack([1.0 - one, one], axis=1)
        out = np.stack(
            [self.maps[c](p[:, c]) if c in self.maps else p[:, c] for c in range(p.shape[1])],
            axis=1,
        )
        return out

    def estimate(self, probabilities: np.ndarray) -> dict[str, Any]:
        """Expected accuracy and AUC of served rows, from their probabilities alone."""
        p = np.asarray(probabilities, dtype=np.float64)
        if len(p) == 0:
            return {"rows": 0, "accuracy": None, "auc": None, "calibrated": self.calibrated}
        soft = self.positive(p)
        predicted = p.argmax(axis=1)
        accuracy = float(soft[np.arange(len(p)), predicted].mean())
        if p.shape[1] == 2:
            auc = roc_auc(p[:, 1], soft[:, 1])
        else:
            aucs = [roc_auc(p[:, c], soft[:, c]) for c in range(p.shape[1])]
            known = [a for a in aucs if a is not None]
            auc = float(np.mean(known)) if known else None
        return {"rows": len(p), "accuracy": accuracy, "auc": auc, "calibrated": self.calibrated}

    def reference_estimate(self, profile: ReferenceProfile) -> dict[str, float | None]:
        """The accuracy the federation's own rows had (binary: from the calibration counts)."""
        if self.classes != 2 or 1 not in self.maps:
            return {"accuracy": None}
        block = next(b for b in profile.layout.blocks if b.kind == "calibration" and b.column == 1)
        seen = next(b for b in profile.layout.blocks if b.kind == "probability" and b.column == 1)
        totals = np.clip(profile.block_counts(seen), 0, None)
        positives = np.minimum(np.clip(profile.block_counts(block)[:-1], 0, None), totals)
        centres = (np.arange(len(totals)) + 0.5) / len(totals)
        # Rows at p(1) >= 0.5 are predicted 1: right when positive; below, right when not.
        right = np.where(centres >= 0.5, positives, totals - positives).sum()
        whole = totals.sum()
        return {"accuracy": float(right / whole) if whole > 0 else None}


def _coarse(fine: np.ndarray) -> np.ndarray:
    groups = np.array_split(np.asarray(fine, dtype=np.float64), COARSE_BINS)
    return np.array([g.sum() for g in groups])
