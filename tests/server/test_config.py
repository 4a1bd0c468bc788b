from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from privacy.errors import ConfigError, UnknownNameError
from server.config import (
    DEFAULT_PROFILE_NOISE,
    DEFAULT_SUMMARY_NOISE,
    FederationSettings,
    ProfileSettings,
    RecordSettings,
    SecAggSettings,
    federation_settings_from_run_config,
)

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def app_config() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]


def test_the_declared_run_config_means_the_documented_defaults():
    """`flwr run` only overrides keys declared in pyproject.toml: they must all parse, and
    to the same settings as the dataclasses' own defaults (SecAgg+ on)."""
    config = app_config()
    assert federation_settings_from_run_config(config) == FederationSettings(
        secagg=SecAggSettings(), run_config=config
    )


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
        ({"min-secure-participants": 1}, ConfigError, "'min-secure-participants' must be"),
        ({"min-secure-participants": "k"}, ConfigError, "'min-secure-participants' must be int"),
        ({"secagg-timeout": -1.0}, ConfigError, "'secagg-timeout' must be a finite"),
        ({"central-dp": True, "strategy": "fedadam"}, ConfigError, "after its server-side optimiser"),
        ({"central-dp": True, "strategy": "fedyogi"}, ConfigError, "after its server-side optimiser"),
    ],
)
def test_malformed_run_config_names_the_key(overrides, error, phrase):
    with pytest.raises(error, match=phrase):
        federation_settings_from_run_config({**app_config(), **overrides})


def test_a_noisy_profile_reaches_the_plan_and_the_wire():
    from client.contract.plan import TrainingPlan
    from server.config import federation_settings_from_run_config

    noisy = federation_settings_from_run_config({"profile-noise-multiplier": 4.0}).plan
    off = federation_settings_from_run_config({"profile": False, "profile-noise-multiplier": 4.0}).plan
    exact = federation_settings_from_run_config({"profile-noise-multiplier": 0}).plan

    assert noisy.profile_noise_multiplier == 4.0
    assert off.profile_noise_multiplier is None and exact.profile_noise_multiplier is None
    # (the wire carries the effective update clip norm, derived when not set)
    assert TrainingPlan.from_config(noisy.to_config()).profile_noise_multiplier == 4.0
    legacy = {k: v for k, v in exact.to_config().items() if k != "fw.profile-noise-multiplier"}
    assert TrainingPlan.from_config(legacy).profile_noise_multiplier is None  # an older plan


def test_the_declared_keys_mean_noisy_releases_by_default():
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]

    settings = federation_settings_from_run_config(config)

    assert {"profile", "profile-noise-multiplier", "summary-noise-multiplier"} <= set(config)
    assert settings.profile == ProfileSettings(enabled=True, noise_multiplier=DEFAULT_PROFILE_NOISE)
    assert settings.plan.summary_noise_multiplier == DEFAULT_SUMMARY_NOISE
    assert settings.plan.profile_noise_multiplier == DEFAULT_PROFILE_NOISE


def test_zero_asks_for_an_exact_release():
    settings = federation_settings_from_run_config(
        {"profile-noise-multiplier": 0, "summary-noise-multiplier": "0"}
    )

    assert settings.profile.noise_multiplier is None
    assert settings.plan.summary_noise_multiplier is None and settings.plan.profile_noise_multiplier is None


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"profile": "false"}, ProfileSettings(enabled=False)),
        ({"profile": True, "profile-noise-multiplier": 2.5}, ProfileSettings(noise_multiplier=2.5)),
        ({"profile-noise-multiplier": "1.5"}, ProfileSettings(noise_multiplier=1.5)),
    ],
)
def test_run_config_values(config, expected):
    assert federation_settings_from_run_config(config).profile == expected


@pytest.mark.parametrize(
    "config",
    [{"profile": "sometimes"}, {"profile-noise-multiplier": "loud"}, {"profile-noise-multiplier": -1.0},
     {"profile-noise-multiplier": float("inf")}],
)
def test_bad_values_fail_loudly(config):
    with pytest.raises(ConfigError):
        federation_settings_from_run_config(config)


def test_where_the_run_is_recorded_comes_from_the_run_config(monkeypatch, tmp_path):
    monkeypatch.delenv("FEDWARDEN_DATABASE_URL", raising=False)
    config = {**app_config(), "database-url": "sqlite:///x.db", "output-dir": str(tmp_path),
              "run-id": "abc", "run-name": "study", "resume": "true"}

    record = federation_settings_from_run_config(config).record

    assert record == RecordSettings(database_url="sqlite:///x.db", output_dir=tmp_path, run_id="abc",
                                    run_name="study", resume=True)
    assert federation_settings_from_run_config(app_config()).record == RecordSettings()


def test_the_store_url_never_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("FEDWARDEN_DATABASE_URL", "sqlite:///env.db")

    assert federation_settings_from_run_config({}).record.database_url is None
    assert federation_settings_from_run_config({"database-url": "sqlite:///run.db"}).record.database_url == "sqlite:///run.db"


def test_resuming_without_a_store_is_refused(monkeypatch):
    monkeypatch.delenv("FEDWARDEN_DATABASE_URL", raising=False)

    with pytest.raises(ConfigError, match="resuming a run needs the store"):
        federation_settings_from_run_config({"resume": True})


def test_k_for_secure_rounds_comes_from_the_run_config_with_a_default_of_three():
    assert federation_settings_from_run_config({}).secagg == SecAggSettings(min_participants=3)
    settings = federation_settings_from_run_config({"min-secure-participants": 4})
    assert settings.secagg is not None and settings.secagg.min_participants == 4


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox"])
def test_central_dp_is_allowed_where_the_noise_lands_on_the_average(strategy):
    settings = federation_settings_from_run_config({"central-dp": True, "strategy": strategy})
    assert settings.central_dp is not None
