"""Drift detectors: scores recomputed directly with scipy, the registry, the plan."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from deploy.drift import (
    DRIFT,
    OK,
    DriftPlan,
    DriftThresholds,
    get_detector,
    score_windows,
)
from privacy.errors import ConfigError
from tests.deploy.drift_cases import SyntheticWorld

THRESHOLDS = DriftThresholds()


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(reference_rows=50_000)


def raw_windows(world: SyntheticWorld, *, seed: int, windows: int = 4, rows: int = 500, **shift):
    return world.draw(np.random.default_rng(seed), (windows, rows), **shift)


def reference_groups(fine: np.ndarray, bins: int) -> list[np.ndarray]:
    """The documented merge, written out: consecutive fine bins go to the group that the
    reference mass before them falls in (mass * bins, floored), empty groups dropped."""
    total, before, groups = fine.sum(), 0.0, {}
    for index, mass in enumerate(fine):
        group = min(int(np.floor(before / total * bins + 1e-9)), bins - 1)
        groups.setdefault(group, []).append(index)
        before += mass
    return [np.array(members) for _, members in sorted(groups.items())]


def merged(fine: np.ndarray, groups: list[np.ndarray], missing: float | None) -> np.ndarray:
    values = [fine[g].sum() for g in groups]
    return np.array(values + ([] if missing is None else [missing]))


def check_numeric(by_test, block, reference, values) -> None:
    ref = reference.block_counts(block)
    present = values[~np.isnan(values)]
    # The window's histogram straight from numpy, on the block's fine edges.
    fine, _ = np.histogram(np.clip(present, block.low, block.high), bins=block.edges)
    groups = reference_groups(ref[: block.bins], THRESHOLDS.psi_bins)
    expected = merged(ref[: block.bins], groups, ref[block.bins])
    actual = merged(fine.astype(float), groups, float(np.isnan(values).sum()))
    e = np.clip(expected / expected.sum(), THRESHOLDS.epsilon, None)
    a = np.clip(actual / actual.sum(), THRESHOLDS.epsilon, None)
    psi = float(np.sum(rel_entr(a, e) + rel_entr(e, a)))
    assert by_test["psi"] == pytest.approx(psi, abs=1e-9)
    # KS against the reference's binned CDF, at the fine bin edges.
    cdf = np.cumsum(ref[: block.bins]) / ref[: block.bins].sum()
    inside = np.clip(present, block.low, block.high)
    ecdf = np.array([(inside < edge).mean() for edge in block.edges[1:]])
    ecdf[-1] = 1.0  # the top edge belongs to the last bin
    statistic = float(np.max(np.abs(ecdf - cdf)))
    assert by_test["ks"] == pytest.approx((statistic, stats.kstwo.sf(statistic, len(present))), abs=1e-9)


def check_categorical(by_test, block, reference, codes) -> None:
    ref = reference.block_counts(block)
    observed = np.bincount(np.where(codes < 0, len(block.labels), codes), minlength=block.size)
    used = (ref > 0) | (observed > 0)
    smoothed = ref[used] + 0.5
    chi = stats.chisquare(observed[used], smoothed / smoothed.sum() * observed.sum())
    assert by_test["chi2"] == pytest.approx((chi.statistic, chi.pvalue), abs=1e-9)


def check_js(found, reference_hist, window_hist) -> None:
    distance = jensenshannon(window_hist, reference_hist, base=2)
    statistic = 8 * window_hist.sum() * np.log(2) * distance**2
    p_value = stats.chi2.sf(statistic, (reference_hist > 0).sum() - 1)
    assert found == pytest.approx((distance, p_value), abs=1e-9)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scores_agree_with_scipy_on_the_same_windows(world, seed):
    shift = {1: {}, 2: {"shift": ("x2", 0.3)}, 3: {"prior": 0.6, "colours": np.array([0.3, 0.3, 0.2, 0.2])}}[seed]
    numeric, categorical, probabilities = raw_windows(world, seed=seed, **shift)
    layout, reference = world.layout, world.reference
    plan = DriftPlan(numeric=("psi", "ks"), categorical=("chi2", "psi"), prediction=("js", "chi2"))

    scores = score_windows(reference, layout.counts(numeric, categorical, probabilities), plan=plan)

    blocks = {b.name: b for b in layout.blocks}
    tests = sum(1 for t in scores.tests if t.p_value is not None)
    for w in range(numeric.shape[0]):
        found: dict[str, dict[str, object]] = {}
        for t in scores.tests:
            value = t.score[w] if t.p_value is None else (t.score[w], t.p_value[w])
            found.setdefault(t.block.name, {})[t.detector] = value
        for name in ("x1", "x2", "x3"):
            block = blocks[name]
            check_numeric(found[name], block, reference, numeric[w, :, block.column].astype(np.float64))
        for name in ("colour", "site"):
            check_categorical(found[name], blocks[name], reference, categorical[w, :, blocks[name].column])
        # JS on the predicted class, and on the positive class's probability over quantile bins.
        observed = np.bincount(probabilities[w].argmax(axis=1), minlength=2).astype(float)
        check_js(found["prediction"]["js"], reference.block_counts(blocks["prediction"]), observed)
        probability = blocks["probability:positive"]
        fine_ref = reference.block_counts(probability)
        groups = reference_groups(fine_ref, THRESHOLDS.psi_bins)
        fine_window = np.histogram(probabilities[w, :, 1], bins=probability.edges)[0].astype(float)
        check_js(found["probability:positive"]["js"], merged(fine_ref, groups, None), merged(fine_window, groups, None))
        # A tested block's status follows the Bonferroni-corrected p-value.
        ks = next(t for t in scores.tests if t.block.name == "x2" and t.detector == "ks")
        assert (ks.status[w] == DRIFT) == (ks.p_value[w] < 0.01 / tests)


def test_unknown_or_misplaced_detectors_fail_loudly():
    with pytest.raises(ConfigError, match="unknown drift detector 'wasserstein'"):
        get_detector("wasserstein")
    with pytest.raises(ConfigError, match="cannot score categorical"):
        DriftPlan(categorical=("ks",))
    with pytest.raises(ConfigError):
        DriftThresholds(psi_warning=0.3, psi_alert=0.2)


def test_small_windows_are_ok_whatever_their_scores(world):
    numeric, categorical, probabilities = raw_windows(world, seed=9, windows=1, rows=50, shift=("x1", 3.0))
    counts = world.layout.counts(numeric, categorical, probabilities)

    small = score_windows(world.reference, counts, plan=DriftPlan())
    lenient = score_windows(world.reference, counts, plan=DriftPlan(thresholds=DriftThresholds(min_rows=10)))

    assert small.status[0] == OK and small.rows[0] == 50
    assert lenient.status[0] == DRIFT and lenient.flagged("x1")[0]


def test_serve_refuses_an_unknown_drift_detector_in_one_line_before_starting(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("FEDWARDEN_DRIFT_NUMERIC_DETECTORS", '["psi", "wobble"]')

    code, output = cli("serve", "--database-url", f"sqlite:///{tmp_path / 'store.db'}", "--port", "1")

    assert code == 2
    assert "wobble" in output and "Traceback" not in output
    assert "serving the production models" not in output
