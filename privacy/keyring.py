"""Where key-encryption keys come from: a 0600 keyring folder, the environment, later a KMS.

``EncryptionSettings`` is read from the environment in each entry point and
turned into a ``Keyring`` (or ``None``: encryption off) by ``load_keyring``,
which asks the provider named by ``FEDWARDEN_KEK_PROVIDER``. The ``local``
provider knows two sources:

* ``FEDWARDEN_KEYRING=DIR``: a folder (mode 0700) of ``<id>.kek`` files (mode
  0600, JSON with the base64 key), and ``ACTIVE`` naming the one that seals;
  ``fedwarden keys create / rotate / retire`` manage it.
* ``FEDWARDEN_KEK=<id>:<base64 of 32 bytes>``: one KEK held in the environment
  (a secret manager's injection), added to the folder's or used alone.

An external KMS plugs in with ``register_kek_provider("vault", factory)``: the
factory returns a ``Keyring`` of ``KeyEncryptionKey`` objects that call out.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from privacy.envelope import KeyEncryptionKey, Keyring, LocalKeyEncryptionKey, check_kek_id
from privacy.errors import ConfigError, KeyUnavailableError, UnknownNameError

ACTIVE_FILE = "ACTIVE"
SUFFIX = ".kek"


class EncryptionSettings(BaseSettings):
    """Where this process finds its KEKs; with neither source, encryption is off."""

    model_config = SettingsConfigDict(env_prefix="FEDWARDEN_", extra="ignore", frozen=True)

    keyring: Path | None = None
    kek: SecretStr | None = None
    kek_provider: str = "local"

    @classmethod
    def load(cls, keyring: Path | None = None) -> EncryptionSettings:
        """Settings from the environment; an explicit ``keyring`` folder wins."""
        try:
            settings = cls()
        except ValidationError as exc:
            raise ConfigError(
                f"encryption settings are invalid: {exc.error_count()} error(s)"
            ) from None
        if keyring is not None:
            settings = settings.model_copy(update={"keyring": keyring})
        return settings

    @property
    def enabled(self) -> bool:
        return self.keyring is not None or self.kek is not None


KekProvider = Callable[[EncryptionSettings], Keyring | None]
_PROVIDERS: dict[str, KekProvider] = {}


def register_kek_provider(name: str, provider: KekProvider) -> None:
    """Make ``provider`` available as ``FEDWARDEN_KEK_PROVIDER=name``."""
    _PROVIDERS[name] = provider


def load_keyring(settings: EncryptionSettings | None = None) -> Keyring | None:
    """The keyring the settings describe, or ``None`` when encryption is off.

    Raises
    ------
    UnknownNameError
        ``kek_provider`` names no registered provider.
    KeyUnavailableError, ConfigError
        The keyring folder or ``FEDWARDEN_KEK`` cannot be used.
    """
    settings = settings or EncryptionSettings.load()
    try:
        provider = _PROVIDERS[settings.kek_provider]
    except KeyError:
        raise UnknownNameError("KEK provider", settings.kek_provider, _PROVIDERS) from None
    return provider(settings)


def _local_keyring(settings: EncryptionSettings) -> Keyring | None:
    keks: list[KeyEncryptionKey] = []
    active: str | None = None
    if settings.keyring is not None:
        keks.extend(read_folder(settings.keyring))
        active = active_id(settings.keyring)
    if settings.kek is not None:
        env_kek = parse_env_kek(settings.kek.get_secret_value())
        keks = [k for k in keks if k.kek_id != env_kek.kek_id] + [env_kek]
        active = active or env_kek.kek_id
    if not keks:
        return None
    if active is None:
        raise KeyUnavailableError(f"the keyring {settings.keyring} has no KEK; run `keys create`")
    return Keyring(keks, active=active)


register_kek_provider("local", _local_keyring)


def parse_env_kek(value: str) -> LocalKeyEncryptionKey:
    """``<id>:<base64 key>`` (as ``fedwarden keys create --print-env`` shows) as a KEK."""
    kek_id, sep, encoded = value.strip().partition(":")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not sep or len(key) != 32:
        raise ConfigError("FEDWARDEN_KEK must be <id>:<base64 of 32 random bytes>")
    return LocalKeyEncryptionKey(check_kek_id(kek_id), key)


@dataclass(frozen=True)
class KekInfo:
    kek_id: str
    created: str
    active: bool


def create_kek(folder: Path, *, kek_id: str | None = None, activate: bool = True) -> KekInfo:
    """Add a new random KEK to the keyring ``folder`` (created 0700); make it active."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = os.urandom(32)
    kek = LocalKeyEncryptionKey(kek_id or f"kek-{secrets.token_hex(4)}", key)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    record = {"id": kek.kek_id, "key": base64.b64encode(key).decode(), "created": created}
    path = folder / f"{kek.kek_id}{SUFFIX}"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"KEK {kek.kek_id!r} exists already in {folder}") from None
    with os.fdopen(descriptor, "w") as handle:
        json.dump(record, handle)
    if activate or active_id(folder) is None:
        set_active(folder, kek.kek_id)
    return KekInfo(kek_id=kek.kek_id, created=created, active=activate)


def set_active(folder: Path, kek_id: str) -> None:
    """Make ``kek_id`` (already in ``folder``) the KEK that seals new envelopes."""
    if not (folder / f"{check_kek_id(kek_id)}{SUFFIX}").exists():
        raise KeyUnavailableError(f"no KEK {kek_id!r} in {folder}", kek_id=kek_id)
    temporary = folder / f".{ACTIVE_FILE}.tmp"
    temporary.write_text(kek_id + "\n")
    os.replace(temporary, folder / ACTIVE_FILE)


def active_id(folder: Path) -> str | None:
    """The active KEK's id, or ``None`` for an empty keyring."""
    try:
        return check_kek_id((folder / ACTIVE_FILE).read_text().strip())
    except FileNotFoundError:
        return None


def list_keks(folder: Path) -> list[KekInfo]:
    """Every KEK in the folder, oldest first, without its key."""
    active = active_id(folder)
    infos = [
        KekInfo(kek_id=data["id"], created=data["created"], active=data["id"] == active)
        for data in (_read_record(path) for path in sorted(folder.glob(f"*{SUFFIX}")))
    ]
    return sorted(infos, key=lambda info: info.created)


def read_folder(folder: Path) -> list[LocalKeyEncryptionKey]:
    """The KEKs of a keyring folder; refuse key files others can read."""
    if not folder.is_dir():
        raise KeyUnavailableError(f"the keyring folder {folder} does not exist; `keys create` it")
    keks = []
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        data = _read_record(path)
        keks.append(LocalKeyEncryptionKey(data["id"], base64.b64decode(data["key"])))
    return keks


def retire_kek(folder: Path, kek_id: str) -> None:
    """Delete a KEK that no envelope needs any more (the caller checks that); never the active."""
    if kek_id == active_id(folder):
        raise ConfigError(f"KEK {kek_id!r} is the active one; rotate to a new KEK first")
    path = folder / f"{check_kek_id(kek_id)}{SUFFIX}"
    if not path.exists():
        raise KeyUnavailableError(f"no KEK {kek_id!r} in {folder}", kek_id=kek_id)
    size = path.stat().st_size
    with path.open("r+b") as handle:  # overwrite before unlinking: no key left in the file's blocks
        handle.write(b"\0" * size)
        handle.flush()
        os.fsync(handle.fileno())
    path.unlink()


def _read_record(path: Path) -> dict[str, str]:
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"the KEK file {path} is readable by others; chmod 600 it")
    try:
        data = json.loads(path.read_text())
        check_kek_id(str(data["id"]))
        if path.name != f"{data['id']}{SUFFIX}" or len(base64.b64decode(data["key"])) != 32:
            raise ValueError("id or key length")
        return {"id": str(data["id"]), "key": str(data["key"]), "created": str(data["created"])}
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ConfigError(f"{path} is not a KEK file written by `fedwarden keys create`") from None
