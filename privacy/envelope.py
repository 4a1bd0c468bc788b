"""Envelope encryption of what fedwarden keeps at rest (checkpoints, model artifacts, keys).

Every sealed artifact gets its own random 256-bit data key; the bytes are
encrypted with AES-256-GCM under that key, and the data key is wrapped by a
key-encryption key (KEK) and stored in the artifact's header, so rotating the
KEK rewraps a few dozen bytes and never touches the ciphertext. An envelope
describes itself::

    b"FWENV" | version (1 byte) | KEK id length (1) | KEK id (ASCII)
             | wrapped data key length (2, big-endian) | wrapped data key
             | nonce (12) | AES-GCM ciphertext and tag

A ``KeyEncryptionKey`` is anything that wraps and unwraps a data key under an
id: ``LocalKeyEncryptionKey`` holds the key in this process (from a 0600 file
or the environment, see ``privacy.keyring``); a KMS-backed one only has to
implement the same two methods. Opening an envelope under another KEK, or one
whose bytes changed, raises ``DecryptionError``: nothing half-decrypted is
ever returned.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privacy.errors import ConfigError, DecryptionError, EncryptionError, KeyUnavailableError

MAGIC = b"FWENV"
VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
_DATA_AAD = MAGIC + bytes([VERSION])


@runtime_checkable
class KeyEncryptionKey(Protocol):
    """What wraps data keys: a local key today, an external KMS later."""

    @property
    def kek_id(self) -> str:
        """A short ASCII name that envelopes record, so the right KEK is found to open them."""
        ...

    def wrap(self, data_key: bytes) -> bytes:
        """The data key, encrypted and authenticated under this KEK."""
        ...

    def unwrap(self, wrapped: bytes) -> bytes:
        """The data key back; raise ``DecryptionError`` if it was not wrapped by this KEK."""
        ...


class LocalKeyEncryptionKey:
    """A 256-bit AES key held in this process; wraps with AES-GCM bound to its id."""

    def __init__(self, kek_id: str, key: bytes) -> None:
        check_kek_id(kek_id)
        if len(key) != KEY_BYTES:
            raise ConfigError(f"a key-encryption key is {KEY_BYTES} bytes, got {len(key)}")
        self._id = kek_id
        self._aead = AESGCM(key)

    @classmethod
    def generate(cls, kek_id: str | None = None) -> LocalKeyEncryptionKey:
        """A fresh random KEK (named ``kek-<8 hex>`` unless ``kek_id`` is given)."""
        return cls(kek_id or f"kek-{secrets.token_hex(4)}", AESGCM.generate_key(bit_length=256))

    @property
    def kek_id(self) -> str:
        return self._id

    def wrap(self, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, self._aad)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], self._aad)
        except (InvalidTag, ValueError):
            raise DecryptionError(
                f"the data key does not open under KEK {self._id!r}: wrong key material "
                "for that id, or the envelope was altered",
                kek_id=self._id,
            ) from None

    @property
    def _aad(self) -> bytes:
        return b"fedwarden-kek:" + self._id.encode("ascii")

    def __repr__(self) -> str:  # never the key itself
        return f"LocalKeyEncryptionKey({self._id!r})"


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope: who wrapped its data key, and the untouched ciphertext."""

    kek_id: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        kek = self.kek_id.encode("ascii")
        return b"".join(
            (
                _DATA_AAD,
                bytes([len(kek)]),
                kek,
                struct.pack(">H", len(self.wrapped_key)),
                self.wrapped_key,
                self.nonce,
                self.ciphertext,
            )
        )

    @classmethod
    def parse(cls, blob: bytes) -> Envelope:
        """Read an envelope's header; raise ``DecryptionError`` if ``blob`` is not one."""
        if not is_sealed(blob):
            raise DecryptionError("not a fedwarden envelope (no FWENV header)")
        if blob[len(MAGIC)] != VERSION:
            raise DecryptionError(f"unknown envelope format version {blob[len(MAGIC)]}")
        try:
            at = len(_DATA_AAD)
            kek_len = blob[at]
            kek_id = blob[at + 1 : at + 1 + kek_len].decode("ascii")
            at += 1 + kek_len
            (wrapped_len,) = struct.unpack(">H", blob[at : at + 2])
            wrapped = blob[at + 2 : at + 2 + wrapped_len]
            at += 2 + wrapped_len
            nonce = blob[at : at + NONCE_BYTES]
            ciphertext = blob[at + NONCE_BYTES :]
        except (IndexError, UnicodeDecodeError, struct.error):
            raise DecryptionError("the envelope's header is truncated or malformed") from None
        if len(wrapped) != wrapped_len or len(nonce) != NONCE_BYTES or len(ciphertext) < 16:
            raise DecryptionError("the envelope is truncated")
        return cls(kek_id=kek_id, wrapped_key=wrapped, nonce=nonce, ciphertext=ciphertext)


def is_sealed(blob: bytes) -> bool:
    """Whether ``blob`` starts like an envelope (plaintext artifacts never do)."""
    return blob[: len(MAGIC)] == MAGIC


def check_kek_id(kek_id: str) -> str:
    """A KEK id is 1–64 ASCII letters, digits, ``-`` or ``_`` (it names a file)."""
    if not (
        0 < len(kek_id) <= 64 and kek_id.isascii() and all(c.isalnum() or c in "-_" for c in kek_id)
    ):
        raise ConfigError(f"a KEK id is 1-64 letters, digits, '-' or '_', got {kek_id!r}")
    return kek_id


class Keyring:
    """The KEKs this process may use: one active (seals), all of them (open).

    Parameters
    ----------
    keks : iterable of KeyEncryptionKey
        Every KEK envelopes may have been sealed with.
    active : str
        The id of the one new envelopes are sealed with.
    """

    def __init__(self, keks: Iterable[KeyEncryptionKey], *, active: str) -> None:
        self._keks = {kek.kek_id: kek for kek in keks}
        if active not in self._keks:
            raise KeyUnavailableError(
                f"the active KEK {active!r} is not in the keyring", kek_id=active
            )
        self.active_id = active

    @property
    def ids(self) -> list[str]:
        return sorted(self._keks)

    def kek(self, kek_id: str) -> KeyEncryptionKey:
        try:
            return self._keks[kek_id]
        except KeyError:
            raise KeyUnavailableError(
                f"this was sealed with KEK {kek_id!r}, which is not in the keyring "
                f"(have: {', '.join(self.ids) or 'none'}); was it retired too early?",
                kek_id=kek_id,
            ) from None

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` under a fresh data key wrapped by the active KEK."""
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _DATA_AAD)
        wrapped = self._keks[self.active_id].wrap(data_key)
        return Envelope(
            kek_id=self.active_id, wrapped_key=wrapped, nonce=nonce, ciphertext=ciphertext
        ).to_bytes()

    def open(self, blob: bytes) -> bytes:
        """Decrypt an envelope; raise ``DecryptionError``/``KeyUnavailableError`` if it won't."""
        envelope = Envelope.parse(blob)
        data_key = self.kek(envelope.kek_id).unwrap(envelope.wrapped_key)
        try:
            return AESGCM(data_key).decrypt(envelope.nonce, envelope.ciphertext, _DATA_AAD)
        except InvalidTag:
            raise DecryptionError(
                f"the ciphertext sealed under KEK {envelope.kek_id!r} fails authentication: "
                "it was altered",
                kek_id=envelope.kek_id,
            ) from None

    def rewrap(self, blob: bytes) -> bytes:
        """The same envelope with its data key wrapped by the active KEK (ciphertext unchanged)."""
        envelope = Envelope.parse(blob)
        if envelope.kek_id == self.active_id:
            return blob
        data_key = self.kek(envelope.kek_id).unwrap(envelope.wrapped_key)
        return Envelope(
            kek_id=self.active_id,
            wrapped_key=self._keks[self.active_id].wrap(data_key),
            nonce=envelope.nonce,
            ciphertext=envelope.ciphertext,
        ).to_bytes()


def seal_if(keyring: Keyring | None, plaintext: bytes) -> bytes:
    """``plaintext`` sealed when encryption is on (a keyring is given), else as it is."""
    return plaintext if keyring is None else keyring.seal(plaintext)


def open_if_sealed(keyring: Keyring | None, blob: bytes, *, what: str) -> bytes:
    """``blob`` decrypted if it is an envelope, else as it is (written before encryption).

    Raises
    ------
    KeyUnavailableError
        ``blob`` is sealed but no keyring is configured, or not with the KEK it needs.
    DecryptionError
        The KEK is wrong or the bytes were altered.
    """
    if not is_sealed(blob):
        return blob
    if keyring is None:
        raise KeyUnavailableError(
            f"{what} is encrypted, and no key-encryption key is configured "
            "(set FEDWARDEN_KEYRING to the keyring folder, or FEDWARDEN_KEK)"
        )
    try:
        return keyring.open(blob)
    except EncryptionError as exc:
        raise type(exc)(f"cannot decrypt {what}: {exc.message}", **exc.context) from None
