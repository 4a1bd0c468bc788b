"""Detection and false-alarm rates of the default drift plan, on controlled shifts.

200 seeded windows of 500 rows per case, scored at once. A shifted case must
reach ``drift`` naming the shifted feature (for a prior shift: the model's
prediction distribution) in at least 95% of windows; the unshifted case may
reach ``drift`` in at most 5%. Run with ``-s`` to see the measured rates.
"""

from __future__ import annotations

import numpy as np
import pytest

from deploy.drift import DRIFT, WARNING, DriftPlan, score_windows
from tests.deploy.drift_cases import ROWS, WINDOWS, Case, HeartWorld, SyntheticWorld


@pytest.fixture(scope="module")
def heart() -> HeartWorld:
    return HeartWorld()


@pytest.fixture(scope="module")
def synthetic() -> SyntheticWorld:
    return SyntheticWorld()


def rates(case: Case, names: tuple[str, ...]) -> tuple[float, float, float]:
    """Rates of windows at drift, at warning or worse, and at drift naming one of ``names``."""
    scores = score_windows(case.reference, case.counts(), plan=DriftPlan())
    named = np.any([scores.flagged(name) for name in names], axis=0) if names else None
    return (
        float(np.mean(scores.status == DRIFT)),
        float(np.mean(scores.status >= WARNING)),
        float(np.mean(named)) if named is not None else float("nan"),
    )


def heart_case(world: HeartWorld, kind: str) -> tuple[Case, tuple[str, ...]]:
    frame = world.frame
    if kind == "none":
        return world.case(seed=1), ()
    if kind == "mean shift":  # age + 0.5 SD
        return world.case(seed=2, shift=("age", 0.5)), ("age",)
    if kind == "category":  # women twice as likely to come: 21% -> 35% of rows
        female = (frame["sex"] == "Female").to_numpy()
        return world.case(seed=3, weights=np.where(female, 2.0, 1.0)), ("sex",)
    # prior shift: disease 55% -> 75% of rows, features given the label unchanged
    sick = (frame["num"] == "disease").to_numpy()
    weights = np.where(sick, 0.75 / sick.sum(), 0.25 / (~sick).sum())
    return world.case(seed=4, weights=weights), ("prediction", "probability:disease")


def synthetic_case(world: SyntheticWorld, kind: str) -> tuple[Case, tuple[str, ...]]:
    if kind == "none":
        return world.case(seed=1), ()
    if kind == "mean shift":  # x3 + 0.5 SD
        return world.case(seed=2, shift=("x3", 0.5)), ("x3",)
    if kind == "category":  # colour "other" 10% -> 18%
        return world.case(seed=3, colours=np.array([0.4, 0.3, 0.2, 0.2])), ("colour",)
    return world.case(seed=4, prior=0.7), ("prediction", "probability:positive")


KINDS = ["none", "mean shift", "category", "prior shift"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dataset", ["heart-disease", "synthetic"])
def test_detection_and_false_alarm_rates(request, dataset, kind):
    if dataset == "heart-disease":
        case, names = heart_case(request.getfixturevalue("heart"), kind)
    else:
        case, names = synthetic_case(request.getfixturevalue("synthetic"), kind)
    assert case.counts().shape[0] == WINDOWS

    drift, warning, named = rates(case, names)

    print(
        f"\n{dataset:13s} {kind:11s} windows={WINDOWS}x{ROWS} drift={drift:.3f} "
        f"warning-or-drift={warning:.3f}" + ("" if not names else f" naming {names[0]}={named:.3f}")
    )
    if kind == "none":
        assert drift <= 0.05
    else:
        assert named >= 0.95
