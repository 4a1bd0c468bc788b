"""Scoring windows of served rows against a reference profile, with a plan of detectors.

Everything is computed from counts over a profile's blocks (``client.contract.profile``):
the reference profile's counts, and a window's counts over the same slots. Any
number of windows are scored at once (``score_windows`` takes ``(windows,
slots)``), which is how the service scores its one window and how tests score
hundreds. The detectors and their exact definitions are in ``deploy.detectors``;
a ``DriftPlan`` says which of them score which kind of block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from client.contract.profile import Block, ReferenceProfile
from deploy.detectors import (
    DRIFT,
    OK,
    STATUSES,
    WARNING,
    DriftDetector,
    DriftThresholds,
    get_detector,
)
from deploy.settings import ServeSettings
from privacy.errors import ConfigError

__all__ = [
    "DRIFT",
    "OK",
    "STATUSES",
    "WARNING",
    "BlockScores",
    "DriftPlan",
    "DriftThresholds",
    "WindowScores",
    "display_histogram",
    "get_detector",
    "score_windows",
]


@dataclass(frozen=True, kw_only=True)
class DriftPlan:
    """Which detectors score which kind of block, and the thresholds they use."""

    numeric: tuple[str, ...] = ("psi", "ks")
    categorical: tuple[str, ...] = ("chi2",)
    prediction: tuple[str, ...] = ("js",)
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)

    def __post_init__(self) -> None:
        for kinds, names in (
            (("numeric",), self.numeric),
            (("categorical",), self.categorical),
            (("prediction", "probability"), self.prediction),
        ):
            for name in names:
                detector = get_detector(name)
                if not any(kind in detector.kinds for kind in kinds):
                    raise ConfigError(
                        f"drift detector {name!r} cannot score {' or '.join(kinds)} blocks",
                        detector=name,
                    )

    def tests(self, profile: ReferenceProfile) -> list[tuple[Block, DriftDetector]]:
        """Every (block, detector) pair this plan scores on ``profile``."""
        pairs = []
        for block in profile.layout.blocks:
            names = {"numeric": self.numeric, "categorical": self.categorical}.get(
                block.kind, self.prediction
            )
            for name in names:
                detector = get_detector(name)
                if block.kind in detector.kinds:
                    pairs.append((block, detector))
        return pairs


@dataclass(frozen=True)
class BlockScores:
    """One (block, detector) pair's scores over a set of windows."""

    block: Block
    detector: str
    score: np.ndarray
    p_value: np.ndarray | None
    status: np.ndarray


@dataclass(frozen=True)
class WindowScores:
    """Every test's scores over ``windows`` windows, and each window's overall status."""

    tests: list[BlockScores]
    rows: np.ndarray
    status: np.ndarray

    def flagged(self, name: str, *, at_least: int = DRIFT) -> np.ndarray:
        """Per window: some test of block ``name`` is at ``at_least`` or worse."""
        hits = [t.status >= at_least for t in self.tests if t.block.name == name]
        if not hits:
            raise KeyError(name)
        result: np.ndarray = np.any(hits, axis=0)
        return result

    def report(self, window: int = 0) -> list[dict[str, Any]]:
        """One window's tests as plain dicts (name, kind, detector, score, p_value, status)."""
        return [
            {
                "name": t.block.name,
                "kind": t.block.kind,
                "detector": t.detector,
                "score": float(t.score[window]),
                "p_value": None if t.p_value is None else float(t.p_value[window]),
                "status": STATUSES[int(t.status[window])],
            }
            for t in self.tests
        ]


def score_windows(
    profile: ReferenceProfile, counts: np.ndarray, *, plan: DriftPlan
) -> WindowScores:
    """Score windows given as ``(windows, slots)`` counts in ``profile``'s layout."""
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    if counts.shape[1] != profile.layout.size:
        raise ConfigError(
            f"window counts have {counts.shape[1]} slots; the profile has {profile.layout.size}"
        )
    pairs = plan.tests(profile)
    tests_with_p = sum(1 for _, detector in pairs if detector.has_p_value)
    thresholds = plan.thresholds
    rows = _window_rows(profile, counts)
    enough = rows >= thresholds.min_rows
    results = []
    for block, detector in pairs:
        current = counts[:, block.offset : block.offset + block.size]
        score, p_value = detector.score(
            block, profile.block_counts(block), current, thresholds=thresholds
        )
        status = detector.status(score, p_value, thresholds=thresholds, tests=tests_with_p)
        results.append(
            BlockScores(block, detector.name, score, p_value, np.where(enough, status, OK))
        )
    overall = np.max([t.status for t in results], axis=0) if results else np.zeros(len(rows), int)
    return WindowScores(tests=results, rows=rows, status=overall)


def _window_rows(profile: ReferenceProfile, counts: np.ndarray) -> np.ndarray:
    # Every row fills exactly one slot of every block: any block's total is the row count.
    if not profile.layout.blocks:
        return np.zeros(len(counts))
    first = profile.layout.blocks[0]
    rows: np.ndarray = counts[:, first.offset : first.offset + first.size].sum(axis=-1)
    return rows


def display_histogram(
    block: Block, counts: np.ndarray, *, bins: int = 20
) -> tuple[list[str], list[float]]:
    """A block's counts as proportions over readable bins (``bins`` equal-width groups)."""
    counts = np.asarray(counts, dtype=np.float64)
    if block.kind in ("numeric", "probability"):
        per = max(1, math.ceil(block.bins / bins))
        edges = block.edges
        labels, values = [], []
        for start in range(0, block.bins, per):
            stop = min(start + per, block.bins)
            labels.append(f"{edges[start]:.4g}–{edges[stop]:.4g}")
            values.append(float(counts[start:stop].sum()))
        if block.has_missing_slot:
            labels.append("missing")
            values.append(float(counts[block.bins]))
    else:
        labels = list(block.labels) + (["missing"] if block.has_missing_slot else [])
        values = [float(v) for v in counts]
    total = sum(values)
    return labels, [v / total if total > 0 else 0.0 for v in values]


def drift_plan(settings: ServeSettings) -> DriftPlan:
    """The detectors and thresholds named by the settings (an unknown name: ``ConfigError``)."""
    thresholds = DriftThresholds(
        psi_warning=settings.drift_psi_warning,
        psi_alert=settings.drift_psi_alert,
        p_value=settings.drift_p_value,
        warning_p_value=max(settings.drift_p_value, 0.05),
        min_rows=settings.drift_min_rows,
    )
    return DriftPlan(
        numeric=settings.drift_numeric_detectors,
        categorical=settings.drift_categorical_detectors,
        prediction=settings.drift_prediction_detectors,
        thresholds=thresholds,
    )


def with_histograms(
    profile: ReferenceProfile, features: list[dict[str, Any]], counts: np.ndarray
) -> list[dict[str, Any]]:
    """``features`` (scored blocks) with each block's reference and current histogram."""
    blocks = {b.name: b for b in profile.layout.blocks}
    result = []
    for item in features:
        block = blocks[item["name"]]
        bins, reference = display_histogram(block, profile.block_counts(block))
        _, current = display_histogram(block, counts[block.offset : block.offset + block.size])
        result.append({**item, "bins": bins, "reference": reference, "current": current})
    return result
