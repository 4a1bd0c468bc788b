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
