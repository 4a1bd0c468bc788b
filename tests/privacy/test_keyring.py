"""Where KEKs come from: a 0600 keyring folder, the environment, or a registered provider."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from privacy.envelope import Keyring, LocalKeyEncryptionKey
from privacy.errors import ConfigError, KeyUnavailableError, UnknownNameError
from privacy.keyring import (
    EncryptionSettings,
    active_id,
    create_kek,
    list_keks,
    load_keyring,
    register_kek_provider,
    retire_kek,
)


def test_create_writes_an_owner_only_key_file_and_activates_it(tmp_path):
    folder = tmp_path / "keyring"

    info = create_kek(folder, kek_id="kek-one")

    path = folder / "kek-one.kek"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert active_id(folder) == "kek-one" and info.active
    keyring = load_keyring(EncryptionSettings(keyring=folder))
    assert keyring is not None and keyring.active_id == "kek-one"


def test_no_source_means_encryption_off(monkeypatch):
    monkeypatch.delenv("FEDWARDEN_KEYRING", raising=False)
    monkeypatch.delenv("FEDWARDEN_KEK", raising=False)

    assert load_keyring(EncryptionSettings.load()) is None


def test_a_kek_from_the_environment(monkeypatch):
    key = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("FEDWARDEN_KEK", f"kek-env:{key}")

    keyring = load_keyring(EncryptionSettings.load())

    assert keyring is not None and keyring.active_id == "kek-env"
    assert keyring.open(keyring.seal(b"x")) == b"x"


def test_a_malformed_environment_kek_is_refused_without_echoing_it(monkeypatch):
    monkeypatch.setenv("FEDWARDEN_KEK", "kek-env:c2hvcnQ=")

    with pytest.raises(ConfigError, match="FEDWARDEN_KEK must be") as caught:
        load_keyring(EncryptionSettings.load())
    assert "c2hvcnQ" not in str(caught.value)


def test_a_key_file_readable_by_others_is_refused(tmp_path):
    create_kek(tmp_path / "k", kek_id="kek-one")
    os.chmod(tmp_path / "k" / "kek-one.kek", 0o644)

    with pytest.raises(ConfigError, match="readable by others"):
        load_keyring(EncryptionSettings(keyring=tmp_path / "k"))


def test_retire_refuses_the_active_kek_and_deletes_an_old_one(tmp_path):
    folder = tmp_path / "k"
    create_kek(folder, kek_id="kek-old")
    create_kek(folder, kek_id="kek-new")

    with pytest.raises(ConfigError, match="active one"):
        retire_kek(folder, "kek-new")
    retire_kek(folder, "kek-old")

    assert [info.kek_id for info in list_keks(folder)] == ["kek-new"]
    with pytest.raises(KeyUnavailableError):
        retire_kek(folder, "kek-old")


def test_an_unknown_provider_is_refused_and_a_kms_can_plug_in():
    with pytest.raises(UnknownNameError, match="KEK provider 'vault'"):
        load_keyring(EncryptionSettings(kek_provider="vault"))

    kms = LocalKeyEncryptionKey.generate("kms-1")  # stands in for a KMS client's wrap/unwrap
    register_kek_provider("test-kms", lambda settings: Keyring([kms], active="kms-1"))
    keyring = load_keyring(EncryptionSettings(kek_provider="test-kms"))

    assert keyring is not None and keyring.open(keyring.seal(b"abc")) == b"abc"
