"""The store's URL reaches the ServerApp in a 0600 file named by the run config."""

from __future__ import annotations

import stat

import pytest

from privacy.errors import ConfigError
from server.config import federation_settings_from_run_config
from server.store_url import read_store_url, write_store_url

URL = "postgresql+psycopg://fedwarden:s3cret@db.example/fw"


def test_the_url_file_is_readable_by_its_owner_only_and_names_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDWARDEN_DATABASE_URL", "sqlite:///not-this.db")
    path = write_store_url(state_dir=tmp_path, url=URL)

    settings = federation_settings_from_run_config({"database-url-file": str(path)})

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert settings.record.database_url == URL


def test_the_environment_no_longer_names_the_store(monkeypatch):
    monkeypatch.setenv("FEDWARDEN_DATABASE_URL", "sqlite:///env.db")

    assert federation_settings_from_run_config({}).record.database_url is None


def test_a_url_file_others_can_read_is_refused(tmp_path):
    path = write_store_url(state_dir=tmp_path, url=URL)
    path.chmod(0o644)

    with pytest.raises(ConfigError, match="readable by other users"):
        read_store_url(path)


def test_rewriting_the_file_narrows_its_permissions(tmp_path):
    (tmp_path / "store.url").write_text("old")
    (tmp_path / "store.url").chmod(0o644)

    path = write_store_url(state_dir=tmp_path, url=URL)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_store_url(path) == URL


def test_a_missing_url_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"database-url-file .* cannot be read"):
        federation_settings_from_run_config({"database-url-file": str(tmp_path / "nope")})
