"""The coordinator's side of secure rounds: never fewer than k, never an endless wait."""

from __future__ import annotations

import pytest

from privacy.secagg import FIRST_ROUND_TIMEOUT_S
from server.config import FederationSettings, SecAggSettings
from server.federation import Federation, _stop_reason


@pytest.mark.parametrize(
    ("schedulable", "least", "phrase"),
    [
        (1, 2, "fewer than two institutions"),
        (2, 3, "fewer than the 3 a secure sum needs"),
        (3, 4, "fewer than the 4 a secure sum needs"),
    ],
)
def test_a_round_of_fewer_than_k_schedulable_institutions_is_not_run(schedulable, least, phrase):
    reason = _stop_reason(5, schedulable, least=least)

    assert reason is not None and phrase in reason and "round 5" in reason


def test_enough_institutions_run_the_round():
    assert _stop_reason(1, 3, least=3) is None
    assert _stop_reason(1, 2, least=2) is None


def test_k_applies_to_secure_runs_only():
    assert Federation(FederationSettings(secagg=None))._least_per_round() == 2
    assert Federation(FederationSettings(secagg=SecAggSettings()))._least_per_round() == 3
    secure = FederationSettings(secagg=SecAggSettings(min_participants=5))
    assert Federation(secure)._least_per_round() == 5


def test_the_secagg_timeout_is_finite_and_follows_the_previous_round():
    federation = Federation(FederationSettings(secagg=SecAggSettings()))
    first = federation._secagg_parameters(3, clipping_range=1.0, max_weight=10.0)
    federation._last_secure_s = 40.0
    later = federation._secagg_parameters(3, clipping_range=1.0, max_weight=10.0)

    assert first.timeout_s == FIRST_ROUND_TIMEOUT_S
    assert later.timeout_s == 200.0


# A normal secure round with every node's guard on, end to end on Flower's simulation
# engine: tests/client/test_release_manifest.py walks one and checks its round record.
