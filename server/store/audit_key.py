"""The coordinator's audit key: the secret the audit chain is keyed with, kept outside the store.

A database writer can recompute an unkeyed hash chain; it cannot recompute an
HMAC without the key. The key is 32 random bytes in a file of its own (mode
0600), named by ``StoreSettings.audit_key_file`` or, by default, kept in
``StoreSettings.audit_key_dir`` (``~/.config/fedwarden/audit-keys``) under a
name derived from the store's URL. Next to it, ``<key>.checkpoints.jsonl``
holds the automatic checkpoints (see ``audit.py``): the log's head, MAC'd, at
least every ``audit_checkpoint_every`` events or ``audit_checkpoint_interval_s``.

``load_audit_key`` is the one function that reads a key file; it goes through
``privacy.sealed_files.read_private_file``, so with encryption at rest on (a
keyring given to ``open_store``) the key file is sealed under the KEK.
A key is created only for a log that has no genesis event yet (a new store,
or one from before keyed chains); a log that has one and a missing key file
is an error, never a fresh key.

The locator of each engine (where its key and checkpoints live) is held in a
registry keyed by the engine, filled by ``open_store``; an engine opened some
other way gets the default locator for its URL.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, Engine

from privacy.envelope import Keyring, seal_if
from privacy.errors import ConfigError
from privacy.sealed_files import read_private_file

_HEADER = "fedwarden-audit-key-v1"
_SECRET_BYTES = 32


@dataclass(frozen=True)
class AuditKey:
    """An HMAC-SHA256 key for the audit chain; ``key_id`` names it without revealing it."""

    secret: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        """16 hex characters identifying the key (a hash of it, not the key)."""
        return hashlib.sha256(b"fedwarden-audit-key-id|" + self.secret).hexdigest()[:16]

    def mac(self, message: bytes) -> str:
        """HMAC-SHA256 of ``message`` under the key, hex-encoded."""
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()


def generate_audit_key(path: Path, *, keyring: Keyring | None = None) -> AuditKey:
    """Write a new key to ``path`` (mode 0600, never overwriting one, sealed when ``keyring``
    is given); return it.

    Raises
    ------
    ConfigError
        ``path`` exists already or cannot be written.
    """
    key = AuditKey(secrets.token_bytes(_SECRET_BYTES))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists already; an audit key is never overwritten") from None
    except OSError as exc:
        raise ConfigError(f"cannot write the audit key to {path}: {exc.strerror}") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(seal_if(keyring, f"{_HEADER} {key.secret.hex()}\n".encode("ascii")))
    return key


def load_audit_key(path: Path, *, keyring: Keyring | None = None) -> AuditKey:
    """Read the audit key from ``path``: the one place a key file is read (through
    ``privacy.sealed_files.read_private_file``, so a sealed key is opened with ``keyring``).

    Raises
    ------
    ConfigError
        The file is missing, readable by others than its owner, or not an audit key.
    EncryptionError
        The file is sealed and ``keyring`` cannot open it.
    """
    blob = read_private_file(path, keyring=keyring, what="the audit key")
    try:
        text = blob.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read the audit key {path}: not text") from None
    header, _, hexed = text.strip().partition(" ")
    try:
        secret = bytes.fromhex(hexed)
    except ValueError:
        secret = b""
    if header != _HEADER or len(secret) != _SECRET_BYTES:
        raise ConfigError(f"{path} is not a fedwarden audit key")
    return AuditKey(secret)


@dataclass(kw_only=True)
class KeyLocator:
    """Where one store's audit key and checkpoints live, and the key once loaded.

    ``path`` is ``None`` for an in-memory store: its key lives in memory only,
    as long as the store does, and it has no checkpoints.
    """

    path: Path | None
    checkpoint_every: int = 100
    checkpoint_interval_s: float = 600.0
    key: AuditKey | None = None
    keyring: Keyring | None = field(default=None, repr=False)
    genesis_seen: bool = False
    log_id: str | None = None
    last_checkpoint_seq: int | None = None
    last_checkpoint_time: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def checkpoint_path(self) -> Path | None:
        """The checkpoints file, next to the key."""
        if self.path is None:
            return None
        return self.path.with_name(self.path.name + ".checkpoints.jsonl")

    def existing_key(self) -> AuditKey | None:
        """The key if it exists (loading it once), else ``None``."""
        with self.lock:
            if self.key is None and self.path is not None and self.path.exists():
                self.key = load_audit_key(self.path, keyring=self.keyring)
            return self.key

    def require_key(self) -> AuditKey:
        """The key; ``ConfigError`` naming the file when there is none."""
        key = self.existing_key()
        if key is None:
            raise ConfigError(
                f"the audit key {self.path} is missing: the audit log cannot be written "
                "or verified without it (set FEDWARDEN_AUDIT_KEY_FILE to where it is)"
            )
        return key

    def create_key(self) -> AuditKey:
        """A new key for a log that has no genesis event yet."""
        with self.lock:
            if self.key is None:
                if self.path is None:
                    self.key = AuditKey(secrets.token_bytes(_SECRET_BYTES))
                elif self.path.exists():
                    self.key = load_audit_key(self.path, keyring=self.keyring)
                else:
                    self.key = generate_audit_key(self.path, keyring=self.keyring)
            return self.key


_LOCATORS: weakref.WeakKeyDictionary[Engine, KeyLocator] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def register(engine: Engine, locator: KeyLocator) -> None:
    """Say where ``engine``'s audit key lives (``open_store`` calls this)."""
    with _REGISTRY_LOCK:
        _LOCATORS[engine] = locator


def locator_for(bind: Engine | Connection) -> KeyLocator:
    """The locator registered for the engine behind ``bind``, or the default one for its URL."""
    engine = bind.engine if isinstance(bind, Connection) else bind
    with _REGISTRY_LOCK:
        found = _LOCATORS.get(engine)
        if found is None:
            from server.store.settings import StoreSettings

            found = default_locator(
                StoreSettings.load(engine.url.render_as_string(hide_password=False))
            )
            _LOCATORS[engine] = found
        return found


def default_locator(settings: object) -> KeyLocator:
    """The locator ``settings`` (a ``StoreSettings``) names: its key file, or one per store URL."""
    from sqlalchemy.engine import make_url

    from server.store.settings import StoreSettings

    assert isinstance(settings, StoreSettings)
    every, interval = settings.audit_checkpoint_every, settings.audit_checkpoint_interval_s
    if settings.audit_key_file is not None:
        path: Path | None = Path(settings.audit_key_file).expanduser()
    else:
        url = make_url(settings.database_url)
        if settings.backend == "sqlite":
            if url.database in (None, "", ":memory:"):
                return KeyLocator(path=None, checkpoint_every=every, checkpoint_interval_s=interval)
            identity = "sqlite:" + str(Path(str(url.database)).expanduser().resolve())
        else:
            identity = url.render_as_string(hide_password=True).replace("***", "")
        digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:20]
        path = Path(settings.audit_key_dir).expanduser() / f"{digest}.key"
    return KeyLocator(path=path, checkpoint_every=every, checkpoint_interval_s=interval)
