"""The coordinator's profile settings, from the run config that Flower passes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from privacy.errors import ConfigError
from server.profiling import ProfileSettings, profile_settings_from_run_config

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_declared_keys_mean_an_exact_profile_by_default():
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]

    assert {"profile", "profile-noise-multiplier"} <= set(config)
    assert profile_settings_from_run_config(config) == ProfileSettings(enabled=True, noise_multiplier=None)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"profile": "false"}, ProfileSettings(enabled=False)),
        ({"profile": True, "profile-noise-multiplier": 2.5}, ProfileSettings(noise_multiplier=2.5)),
        ({"profile-noise-multiplier": "1.5"}, ProfileSettings(noise_multiplier=1.5)),
    ],
)
def test_run_config_values(config, expected):
    assert profile_settings_from_run_config(config) == expected


@pytest.mark.parametrize(
    "config",
    [{"profile": "sometimes"}, {"profile-noise-multiplier": "loud"}, {"profile-noise-multiplier": -1.0},
     {"profile-noise-multiplier": float("inf")}],
)
def test_bad_values_fail_loudly(config):
    with pytest.raises(ConfigError):
        profile_settings_from_run_config(config)


def _result(node_id, vector, *, rows, metrics):
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.server.compat.grid_client_proxy import GridClientProxy

    proxy = GridClientProxy(node_id=node_id, grid=None, run_id=1)  # only its id is read
    return proxy, FitRes(
        status=Status(code=Code.OK, message=""),
        parameters=ndarrays_to_parameters([vector]),
        num_examples=rows,
        metrics=metrics,
    )


def test_refusals_are_reported_even_when_every_institution_refused():
    # Under SecAgg+ every result carries the unmasked aggregate; when every weight is 0
    # that aggregate is not finite, and the refusals must still reach the ledger.
    import numpy as np

    from server.orchestrator import _AverageStrategy

    strategy = _AverageStrategy(size=3, allowed={1, 2}, config={}, parameters=[], value_range=(0.0, 1.0))
    nan = np.full(3, np.nan)
    strategy.aggregate_fit(
        1,
        [_result(1, nan, rows=0, metrics={"institution": "A"}),
         _result(2, nan, rows=0, metrics={"institution": "B"})],
        [],
    )

    assert strategy.result is not None
    assert strategy.result.rows == 0.0
    assert [m["institution"] for m in strategy.result.metrics] == ["A", "B"]


def test_a_refusal_does_not_weigh_in_the_average():
    import numpy as np

    from server.orchestrator import _AverageStrategy

    strategy = _AverageStrategy(size=2, allowed={1, 2, 3}, config={}, parameters=[], value_range=(0.0, 1.0))
    strategy.aggregate_fit(
        1,
        [_result(1, np.array([0.2, 0.4]), rows=10, metrics={"institution": "A"}),
         _result(2, np.array([0.6, 0.8]), rows=30, metrics={"institution": "B"}),
         _result(3, np.full(2, np.nan), rows=0, metrics={"institution": "C"})],
        [],
    )

    assert strategy.result is not None
    np.testing.assert_allclose(strategy.result.vector, [0.5, 0.7])
    assert strategy.result.rows == 40.0
    assert len(strategy.result.metrics) == 3
