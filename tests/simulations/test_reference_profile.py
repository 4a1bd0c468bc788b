"""A short real run (Flower's simulation engine) ends with the federation's reference profile."""

from __future__ import annotations

import numpy as np
import pytest

from privacy.config import PrivacyBudget
from privacy.policy import DEFAULT_COUNT_NOISE
from simulations.runner import prepare, simulate
from simulations.scenario import Scenario

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("secagg", [False, True])
def test_an_exact_profile_of_every_training_row_where_the_nodes_allow_it(secagg):
    # a secure sum needs >= 3 institutions
    scenario = Scenario(institutions=3, seed=4, node_policy={"allow-exact-releases": True})
    training_rows = sum(len(i.train) for i in scenario.all_institutions())
    config = {"num-server-rounds": 1, "secagg": secagg, "profile-noise-multiplier": 0}

    outcome = simulate(scenario, prepare(scenario, config), baseline=False)

    profile = outcome.result.profile
    assert profile is not None
    assert profile.rows == training_rows and profile.noise_multiplier is None
    assert profile.institutions == ("Cleveland", "Hungary", "Switzerland") and profile.round == 1
    for block in profile.layout.blocks:
        counts = profile.block_counts(block)
        assert np.all(counts >= 0) and counts.sum() == pytest.approx(training_rows, abs=1e-6), block.name
    names = [b.name for b in profile.layout.blocks]
    assert names.index("prediction") + 1 == names.index("probability:disease")


def test_nodes_refuse_an_exact_profile_by_default():
    scenario = Scenario(institutions=2, seed=4)
    config = {"num-server-rounds": 1, "secagg": False, "profile-noise-multiplier": 0}

    outcome = simulate(scenario, prepare(scenario, config), baseline=False)

    assert outcome.result.profile is None
    assert all(r.refused and "exact reference profile" in r.reason for r in outcome.result.profile_reports)


def test_a_noisy_profile_is_accounted_in_each_institutions_epsilon():
    # Training noise is derived from the whole budget, as by default: it must leave room
    # for the profile's release, or the institutions would refuse to send it.
    scenario = Scenario(institutions=3, seed=5, budget=PrivacyBudget(epsilon=10.0, delta=1e-5))
    training_rows = sum(len(i.train) for i in scenario.all_institutions())

    outcome = simulate(
        scenario, prepare(scenario, {"num-server-rounds": 1, "secagg": True, "profile-noise-multiplier": 5.0}),
        baseline=False
    )

    profile, reports = outcome.result.profile, outcome.result.profile_reports
    assert profile is not None and profile.noise_multiplier == 5.0, [r.reason for r in reports]
    # the rows are the published (noised) counts' sum: σ = 20 rows per institution, never the exact count
    assert abs(profile.rows - training_rows) <= 6 * DEFAULT_COUNT_NOISE * np.sqrt(3)
    assert np.all(profile.counts >= 0)
    trained = outcome.result.rounds[-1].epsilon
    assert sorted(r.institution for r in reports) == ["Cleveland", "Hungary", "Switzerland"]
    for report in reports:
        assert not report.refused and report.epsilon > trained[report.institution]
        assert 9.5 < report.epsilon <= 10.0  # the budget is spent, and not passed
