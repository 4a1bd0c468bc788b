"""Drift detectors: each scores windows of one profile block against the reference.

A detector sees one block's counts: the reference profile's, and any number
of windows' over the same slots (``(windows, slots)``), and answers a score
and, where it has one, a p-value per window; ``deploy.drift`` runs a plan of
them over every block.

Detectors, chosen by name (``get_detector``):

``psi``
    Population stability index over about ``psi_bins`` bins: a numeric or
    probability block's fine bins merged into groups of roughly equal
    reference mass (its quantile bins), the missing slot kept apart; a
    categorical block's own slots. Proportions below ``epsilon`` are raised to
    it, so an empty bin costs a finite amount. Status by threshold (0.1
    warning, 0.25 drift).
``ks``
    Kolmogorov–Smirnov for numeric and probability blocks. The reference is
    only known as a fine histogram, so the statistic is the largest gap
    between the window's and the reference's cumulative distributions at the
    fine bin edges: the exact KS statistic of the window, discretised to the
    same bins, against the reference's binned CDF. Missing values are left
    out. The p-value is the one-sample KS distribution (``scipy.stats.kstwo``)
    for the window's non-missing rows; discretisation only makes it
    conservative. The reference is taken as exact, which holds for a profile
    of many more rows than a window.
``chi2``
    Pearson's chi-square goodness of fit for categorical and prediction
    blocks: the window's counts against the reference proportions. Slots empty
    in both are left out; each remaining reference count gets half a count
    added, so a category the reference never saw gives a large but finite
    statistic.
``js``
    Jensen–Shannon distance (base 2, in [0, 1]) between the window's and the
    reference's distributions, for the model's outputs: the predicted class,
    and each class probability over its quantile bins as for ``psi``. A fixed
    threshold on it would depend on the window's size (an unshifted window of
    100 rows over 10 bins is about 0.13 away by chance alone), so its p-value
    is taken from its asymptotic null distribution: for a window of ``n`` rows
    and ``k`` bins, ``8 n ln(2) JS²`` (8 n times the divergence in nats, which
    is then Pearson's statistic to second order) is chi-square with ``k - 1``
    degrees of freedom.

Detectors with a p-value are corrected for the number of such tests in a
report (Bonferroni): a test is ``drift`` when ``p < p_value / tests`` (0.01
family-wise) and ``warning`` when ``p < warning_p_value / tests``. A window of
fewer than ``min_rows`` rows is ``ok`` whatever its scores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import stats

from client.contract.profile import Block, BlockKind
from privacy.errors import ConfigError, UnknownNameError

STATUSES = ("ok", "warning", "drift")
OK, WARNING, DRIFT = range(3)


@dataclass(frozen=True, kw_only=True)
class DriftThresholds:
    """When a score is a warning or drift; defaults are the usual ones."""

    psi_warning: float = 0.1
    psi_alert: float = 0.25
    p_value: float = 0.01
    warning_p_value: float = 0.05
    psi_bins: int = 10
    epsilon: float = 1e-4
    min_rows: int = 100

    def __post_init__(self) -> None:
        if not 0 < self.psi_warning <= self.psi_alert:
            raise ConfigError("PSI thresholds must satisfy 0 < warning <= alert")
        if not 0 < self.p_value <= self.warning_p_value < 1:
            raise ConfigError("p-value thresholds must satisfy 0 < p_value <= warning_p_value < 1")
        if self.psi_bins < 2 or not 0 < self.epsilon < 0.01 or self.min_rows < 1:
            raise ConfigError("psi_bins must be >= 2, epsilon in (0, 0.01), min_rows >= 1")


class DriftDetector(ABC):
    """Scores windows of one block against the reference's counts of that block."""

    name: ClassVar[str]
    kinds: ClassVar[frozenset[BlockKind]]
    has_p_value: ClassVar[bool] = False

    @abstractmethod
    def score(
        self,
        block: Block,
        reference: np.ndarray,
        current: np.ndarray,
        *,
        thresholds: DriftThresholds,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Score and p-value (or ``None``) per window; ``current`` is ``(windows, slots)``."""

    @abstractmethod
    def status(
        self,
        score: np.ndarray,
        p_value: np.ndarray | None,
        *,
        thresholds: DriftThresholds,
        tests: int,
    ) -> np.ndarray:
        """``OK``, ``WARNING`` or ``DRIFT`` per window."""


class _ThresholdDetector(DriftDetector):
    warning_field: ClassVar[str]
    alert_field: ClassVar[str]

    def status(
        self,
        score: np.ndarray,
        p_value: np.ndarray | None,
        *,
        thresholds: DriftThresholds,
        tests: int,
    ) -> np.ndarray:
        warning = getattr(thresholds, self.warning_field)
        alert = getattr(thresholds, self.alert_field)
        return np.where(score >= alert, DRIFT, np.where(score >= warning, WARNING, OK))


class _TestDetector(DriftDetector):
    has_p_value = True

    def status(
        self,
        score: np.ndarray,
        p_value: np.ndarray | None,
        *,
        thresholds: DriftThresholds,
        tests: int,
    ) -> np.ndarray:
        assert p_value is not None
        tests = max(tests, 1)
        return np.where(
            p_value < thresholds.p_value / tests,
            DRIFT,
            np.where(p_value < thresholds.warning_p_value / tests, WARNING, OK),
        )


class PsiDriftDetector(_ThresholdDetector):
    name = "psi"
    kinds = frozenset({"numeric", "categorical", "probability", "prediction"})
    warning_field, alert_field = "psi_warning", "psi_alert"

    def score(
        self,
        block: Block,
        reference: np.ndarray,
        current: np.ndarray,
        *,
        thresholds: DriftThresholds,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        groups = merge_matrix(block, reference, bins=thresholds.psi_bins)
        expected = _proportions(reference @ groups).clip(thresholds.epsilon, None)
        actual = _proportions(current @ groups).clip(thresholds.epsilon, None)
        psi = ((actual - expected) * np.log(actual / expected)).sum(axis=-1)
        return np.where(current.sum(axis=-1) > 0, psi, 0.0), None


class KsDriftDetector(_TestDetector):
    name = "ks"
    kinds = frozenset({"numeric", "probability"})

    def score(
        self,
        block: Block,
        reference: np.ndarray,
        current: np.ndarray,
        *,
        thresholds: DriftThresholds,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        bins = block.bins
        expected = np.cumsum(reference[:bins]) / max(reference[:bins].sum(), 1e-12)
        rows = current[:, :bins].sum(axis=-1)
        actual = np.cumsum(current[:, :bins], axis=-1) / np.maximum(rows, 1)[:, None]
        statistic = np.abs(actual - expected).max(axis=-1)
        statistic = np.where(rows > 0, statistic, 0.0)
        p_value = np.ones_like(statistic)
        seen = rows > 0
        p_value[seen] = stats.kstwo.sf(statistic[seen], rows[seen].astype(np.int64))
        return statistic, p_value


class ChiSquareDriftDetector(_TestDetector):
    name = "chi2"
    kinds = frozenset({"categorical", "prediction"})

    def score(
        self,
        block: Block,
        reference: np.ndarray,
        current: np.ndarray,
        *,
        thresholds: DriftThresholds,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        used = (reference > 0) | (current > 0)
        smoothed = np.where(used, reference + 0.5, 0.0)
        rows = current.sum(axis=-1)
        expected = smoothed / smoothed.sum(axis=-1, keepdims=True) * rows[:, None]
        terms = np.where(used, (current - expected) ** 2 / np.where(used, expected, 1.0), 0.0)
        statistic = terms.sum(axis=-1)
        dof = used.sum(axis=-1) - 1
        p_value = np.ones_like(statistic)
        tested = (dof >= 1) & (rows > 0)
        p_value[tested] = stats.chi2.sf(statistic[tested], dof[tested])
        return np.where(tested, statistic, 0.0), p_value


class JsDriftDetector(_TestDetector):
    name = "js"
    kinds = frozenset({"prediction", "probability"})

    def score(
        self,
        block: Block,
        reference: np.ndarray,
        current: np.ndarray,
        *,
        thresholds: DriftThresholds,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        groups = merge_matrix(block, reference, bins=thresholds.psi_bins)
        p = _proportions(reference @ groups)
        q = _proportions(current @ groups)
        m = (p + q) / 2
        divergence = (_plogp(p, m) + _plogp(q, m)) / 2
        divergence = np.clip(divergence, 0.0, None)
        rows = current.sum(axis=-1)
        dof = (p > 0).sum(axis=-1) - 1
        statistic = 8.0 * rows * np.log(2.0) * divergence
        p_value = np.ones_like(statistic)
        tested = (rows > 0) & (dof >= 1)
        p_value[tested] = stats.chi2.sf(statistic[tested], np.broadcast_to(dof, rows.shape)[tested])
        return np.where(rows > 0, np.sqrt(divergence), 0.0), p_value


def _plogp(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    ratio = np.where(p > 0, p / np.where(m > 0, m, 1.0), 1.0)
    result: np.ndarray = (p * np.log2(ratio)).sum(axis=-1)
    return result


def _proportions(counts: np.ndarray) -> np.ndarray:
    total = counts.sum(axis=-1, keepdims=True)
    result: np.ndarray = counts / np.where(total > 0, total, 1.0)
    return result


DETECTORS: dict[str, DriftDetector] = {
    detector.name: detector
    for detector in (
        PsiDriftDetector(),
        KsDriftDetector(),
        ChiSquareDriftDetector(),
        JsDriftDetector(),
    )
}


def get_detector(name: str) -> DriftDetector:
    """The detector called ``name``; an unknown name raises ``UnknownNameError``."""
    try:
        return DETECTORS[name]
    except KeyError:
        raise UnknownNameError("drift detector", name, DETECTORS) from None


def merge_matrix(block: Block, reference: np.ndarray, *, bins: int) -> np.ndarray:
    """``(slots, groups)`` 0/1 matrix merging a block's slots into the detector's bins.

    Numeric and probability blocks: fine bins grouped by the reference's
    cumulative mass into at most ``bins`` groups (empty groups dropped), the
    missing slot its own group. Other blocks: one group per slot.
    """
    if block.kind not in ("numeric", "probability"):
        return np.eye(block.size)
    fine = reference[: block.bins]
    total = fine.sum()
    before = np.concatenate([[0.0], np.cumsum(fine)[:-1]]) / (total if total > 0 else 1.0)
    group = np.minimum(np.floor(before * bins + 1e-9), bins - 1).astype(np.int64)
    if total <= 0:
        group = np.minimum(np.arange(block.bins) * bins // block.bins, bins - 1)
    _, group = np.unique(group, return_inverse=True)
    groups = int(group.max()) + 1
    if block.has_missing_slot:
        group = np.append(group, groups)
        groups += 1
    matrix = np.zeros((block.size, groups))
    matrix[np.arange(block.size), group] = 1.0
    return matrix
