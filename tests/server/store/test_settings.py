"""Store settings: where the URL comes from, and what a bad one gets."""

from __future__ import annotations

import pytest

from privacy.errors import ConfigError
from server.store.settings import DEFAULT_DATABASE_URL, StoreSettings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    monkeypatch.delenv("FEDWARDEN_DATABASE_URL", raising=False)


def test_default_is_a_sqlite_file_in_the_current_directory():
    assert StoreSettings.load().database_url == DEFAULT_DATABASE_URL


def test_the_environment_wins_over_the_callers_default(monkeypatch):
    monkeypatch.setenv("FEDWARDEN_DATABASE_URL", "sqlite:///from-env.db")

    settings = StoreSettings.load(default_url="sqlite:///runs/x/fedwarden.db")

    assert settings.database_url == "sqlite:///from-env.db"


def test_an_explicit_url_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("FEDWARDEN_DATABASE_URL", "sqlite:///from-env.db")

    assert StoreSettings.load("sqlite:///given.db").database_url == "sqlite:///given.db"


def test_the_callers_default_applies_when_nothing_else_names_a_store():
    settings = StoreSettings.load(default_url="sqlite:///runs/x/fedwarden.db")

    assert settings.database_url == "sqlite:///runs/x/fedwarden.db"
    assert settings.backend == "sqlite"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://fw@db:5432/gov", "postgresql+psycopg://fw@db:5432/gov"),
        ("postgres://fw@db/gov", "postgresql+psycopg://fw@db/gov"),
        ("postgresql+psycopg://fw:pw@db/gov", "postgresql+psycopg://fw:pw@db/gov"),
    ],
)
def test_postgres_urls_get_the_psycopg_driver(given, expected):
    settings = StoreSettings.load(given)

    assert settings.database_url == expected
    assert settings.backend == "postgresql"


@pytest.mark.parametrize(
    ("url", "phrase"),
    [
        ("not a url", "malformed database URL"),
        ("mysql://root@db/gov", "unsupported database 'mysql'"),
        ("postgresql+psycopg://", "needs a host and a database name"),
    ],
)
def test_bad_urls_are_config_errors(url, phrase):
    with pytest.raises(ConfigError, match=phrase):
        StoreSettings.load(url)


def test_malformed_url_from_the_environment_is_a_config_error(monkeypatch):
    monkeypatch.setenv("FEDWARDEN_DATABASE_URL", "::nonsense::")

    with pytest.raises(ConfigError, match="malformed database URL"):
        StoreSettings.load()


def test_timeouts_must_be_positive(monkeypatch):
    monkeypatch.setenv("FEDWARDEN_CONNECT_TIMEOUT_S", "0")

    with pytest.raises(ConfigError, match="connect_timeout_s"):
        StoreSettings.load()
