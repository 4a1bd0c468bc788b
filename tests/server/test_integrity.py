"""The coordinator's own checks against a hostile institution, on the real Flower strategy.

Each reply here is what a node without fedwarden's update guard could send: huge
values, NaN, or more training rows than it declared in the census. In the clear
the reply is dropped; under SecAgg+ (where the strategy sees only the unmasked
average) the round is discarded and the global model stays as it was.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import FitRes, ndarrays_to_parameters, parameters_to_ndarrays

from tests.server.test_federated_strategy import GLOBAL, OK, configured, reply, strategy

ONES = [np.ones((2, 3)) * 0.5, np.ones(2) * 0.5]  # norm 1.58, within the bound of 10


def _secure_results(average: list[np.ndarray], claims: list[int]):
    """What SecAgg+ hands the strategy: every result carries the same unmasked average."""
    results = []
    for node, claim in enumerate(claims, start=1):
        proxy, res = reply(node, average, claim)
        results.append((proxy, FitRes(OK, ndarrays_to_parameters(average), claim, res.metrics)))
    return results


def test_plain_a_reply_claiming_more_rows_than_its_census_is_dropped():
    s = strategy()
    configured(s)

    params, _ = s.aggregate_fit(
        1, [reply(1, ONES, 1000), reply(2, ONES, 10**6), reply(3, ONES, 900)], []
    )

    assert params is not None
    assert "census declared 1000" in s.logs[1].rejected["inst-2"]
    assert s.logs[1].trained == ["inst-1", "inst-3"]


@pytest.mark.parametrize("attack", ["huge", "nan"])
def test_plain_huge_or_nan_updates_are_dropped_and_the_rest_averaged(attack):
    s = strategy()
    configured(s)
    bad = [np.full((2, 3), 1e6 if attack == "huge" else np.nan), np.zeros(2)]

    params, _ = s.aggregate_fit(
        1, [reply(1, ONES, 1000), reply(2, bad, 1000), reply(3, ONES, 1000)], []
    )

    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], ONES[0])
    assert "inst-2" in s.logs[1].rejected and s.logs[1].discarded is None


@pytest.mark.parametrize(
    ("average", "claims", "phrase"),
    [
        ([np.full((2, 3), 1e6), np.zeros(2)], [1000, 1000, 1000], "exceeds the plan's bound"),
        ([np.full((2, 3), 5.0), np.zeros(2)], [1000, 1000, 1000], "exceeds the plan's bound"),
        ([np.full((2, 3), np.nan), np.zeros(2)], [1000, 1000, 1000], "NaN or Inf"),
        (ONES, [1000, 10**6, 1000], "census declared 1000"),
    ],
    ids=["huge", "just-over-the-bound", "nan", "claimed-rows"],
)
def test_secure_a_bad_average_discards_the_round(average, claims, phrase):
    s = strategy(secure=True)
    configured(s)

    params, _ = s.aggregate_fit(1, _secure_results(average, claims), [])

    assert params is None  # nothing applied: the global model stays as it was
    log = s.logs[1]
    assert phrase in log.discarded and not log.aggregated and log.trained == []
    assert len(log.reports) == 3  # every institution's ε is still accounted for


def test_secure_a_bounded_average_is_applied():
    s = strategy(secure=True)
    configured(s)

    params, _ = s.aggregate_fit(1, _secure_results(ONES, [1000, 800, 1000]), [])

    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], GLOBAL[0] + ONES[0], rtol=1e-6)
    assert s.logs[1].discarded is None
