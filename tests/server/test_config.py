from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from privacy.errors import ConfigError, UnknownNameError
from server.config import FederationSettings, SecAggSettings, federation_settings_from_run_config

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def app_config() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]


def test_the_declared_run_config_means_the_documented_defaults():
    """`flwr run` only overrides keys declared in pyproject.toml: they must all parse, and
    to the same settings as the dataclasses' own defaults (SecAgg+ on)."""
    assert federation_settings_from_run_config(app_config()) == FederationSettings(secagg=SecAggSettings())


def test_every_key_the_translator_reads_is_declared():
    settings = federation_settings_from_run_config(
        {**app_config(), "noise-multiplier": 1.3, "secagg": False, "central-dp": True, "epsilon-cap": 2.0}
    )
    assert settings.plan.dp.noise_multiplier == 1.3
    assert settings.secagg is None
    assert settings.central_dp is not None and settings.plan.uniform_weights
    assert settings.epsilon_cap == 2.0


@pytest.mark.parametrize(
    ("overrides", "error", "phrase"),
    [
        ({"num-server-rounds": "many"}, ConfigError, "'num-server-rounds' must be int"),
        ({"learning-rate": float("nan")}, ConfigError, "'learning-rate' is NaN"),
        ({"secagg": "maybe"}, ConfigError, "'secagg' must be true or false"),
        ({"strategy": "fedsgd"}, UnknownNameError, "unknown strategy 'fedsgd'"),
        ({"accountant": "gdp"}, ConfigError, "unknown accountant 'gdp'"),
        ({"min-institutions": 1}, ConfigError, "needs >= 2 institutions"),
        ({"strategy": "krum"}, ConfigError, "needs each institution's update"),
        ({"central-noise-multiplier": 0.0, "central-dp": True}, ConfigError, "central noise multiplier"),
    ],
)
def test_malformed_run_config_names_the_key(overrides, error, phrase):
    with pytest.raises(error, match=phrase):
        federation_settings_from_run_config({**app_config(), **overrides})
