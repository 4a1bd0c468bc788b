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


def test_a_noisy_profile_reaches_the_plan_and_the_wire():
    from client.plan import TrainingPlan
    from server.config import federation_settings_from_run_config

    noisy = federation_settings_from_run_config({"profile-noise-multiplier": 4.0}).plan
    off = federation_settings_from_run_config({"profile": False, "profile-noise-multiplier": 4.0}).plan
    exact = federation_settings_from_run_config({}).plan

    assert noisy.profile_noise_multiplier == 4.0
    assert off.profile_noise_multiplier is None and exact.profile_noise_multiplier is None
    # (the wire carries the effective update clip norm, derived when not set)
    assert TrainingPlan.from_config(noisy.to_config()).profile_noise_multiplier == 4.0
    legacy = {k: v for k, v in exact.to_config().items() if k != "fw.profile-noise-multiplier"}
    assert TrainingPlan.from_config(legacy).profile_noise_multiplier is None  # an older plan
