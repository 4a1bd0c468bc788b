"""Signed receipts for the audit log's head, so an outside party can hold the coordinator to it.

``checkpoint`` signs ``"<seq>|<head hash>"`` with the coordinator's Ed25519
key and returns a ``Receipt``. Whoever keeps the receipt (a regulator, each
member institution) can later check, with ``verify_receipt`` and
``audit.verify_chain(anchor=...)``, that the log still holds that event with
that hash: a log rewritten from scratch or cut short no longer does. The
private key lives in a PEM file readable by its owner only (sealed under the
keyring's KEK when encryption at rest is on), and is never printed or logged;
``load_signing_key`` is the one function that reads it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.orm import Session

from privacy.envelope import Keyring
from privacy.errors import ConfigError
from privacy.sealed_files import read_private_file, write_private_file
from server.errors import AuditChainError
from server.store import audit
from server.store.models import utcnow

ALGORITHM = "ed25519"


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """A signed statement that the audit log's event ``seq`` has hash ``head_hash``."""

    seq: int
    head_hash: str
    signature: str
    public_key: str
    time: str
    algorithm: str = ALGORITHM

    @property
    def message(self) -> bytes:
        """The signed bytes: ``"<seq>|<head_hash>"``."""
        return f"{self.seq}|{self.head_hash}".encode()

    def to_json(self) -> str:
        """The receipt as one JSON object."""
        return json.dumps(asdict(self), sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Receipt:
        """Parse a receipt; raise ``ConfigError`` if it is not one."""
        try:
            data = json.loads(text)
            return cls(
                seq=int(data["seq"]),
                head_hash=str(data["head_hash"]),
                signature=str(data["signature"]),
                public_key=str(data["public_key"]),
                time=str(data["time"]),
                algorithm=str(data.get("algorithm", ALGORITHM)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"not an audit receipt: {exc}") from None


def generate_signing_key(path: Path, *, keyring: Keyring | None = None) -> str:
    """Write a new Ed25519 private key to ``path`` (PEM, mode 0600, sealed when ``keyring``
    is given); return its public key (hex).

    Raises
    ------
    ConfigError
        ``path`` exists already (a key is never overwritten) or cannot be written.
    """
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private_file(path, pem, keyring=keyring, what="a signing key")
    return public_key_hex(key.public_key())


def load_signing_key(path: Path, *, keyring: Keyring | None = None) -> Ed25519PrivateKey:
    """Read the coordinator's Ed25519 private key from a PEM file (decrypted if sealed).

    Raises
    ------
    ConfigError
        The file is missing, readable by others than its owner, or not an
        Ed25519 private key.
    EncryptionError
        The file is sealed and ``keyring`` cannot open it.
    """
    pem = read_private_file(path, keyring=keyring, what="the signing key")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_key_hex(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key, hex-encoded."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def checkpoint(session: Session, private_key: Ed25519PrivateKey) -> Receipt:
    """Sign the audit log's current head; an empty log signs ``seq`` 0 and the genesis hash."""
    seq, head_hash = audit.head(session)
    unsigned = Receipt(
        seq=seq,
        head_hash=head_hash,
        signature="",
        public_key=public_key_hex(private_key.public_key()),
        time=audit.format_time(utcnow()),
    )
    signature = base64.b64encode(private_key.sign(unsigned.message)).decode("ascii")
    return Receipt(**{**asdict(unsigned), "signature": signature})


def pinned_public_key(value: str | None) -> str | None:
    """The pinned public key (hex) that ``value`` gives: hex itself, or a file that holds it.

    ``value`` is ``StoreSettings.audit_public_key`` or a command-line flag: 64
    hex characters, or the path of a file with them (or with a PEM public key).

    Raises
    ------
    ConfigError
        ``value`` is neither a hex public key nor a readable file holding one.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not _is_hex_key(text):
        try:
            text = Path(text).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"the pinned audit public key {value!r} is neither 64 hex characters "
                f"nor a readable file: {exc.strerror}"
            ) from None
        if text.startswith("-----BEGIN"):
            try:
                loaded = serialization.load_pem_public_key(text.encode("ascii"))
            except ValueError:
                raise ConfigError(f"{value} does not hold a PEM public key") from None
            if not isinstance(loaded, Ed25519PublicKey):
                raise ConfigError(f"{value} holds a {type(loaded).__name__}, not Ed25519")
            return public_key_hex(loaded)
    if not _is_hex_key(text):
        raise ConfigError(f"the pinned audit public key in {value} is not 64 hex characters")
    return text.lower()


def _is_hex_key(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def verify_receipt(receipt: Receipt, *, public_key: str | None) -> None:
    """Check a receipt's signature, made with the pinned ``public_key``.

    A receipt carries the key it was signed with, so its signature alone proves
    nothing (anyone can sign with a key of their own): it must be the pinned one.

    Raises
    ------
    ConfigError
        No public key is pinned (``FEDWARDEN_AUDIT_PUBLIC_KEY`` or ``--public-key``).
    AuditChainError
        The signature is invalid, or made with another key than the pinned one.
    """
    if public_key is None:
        raise ConfigError(
            "a receipt can only be checked against the coordinator's pinned public key: "
            "set FEDWARDEN_AUDIT_PUBLIC_KEY (hex, or a file holding it) or pass --public-key"
        )
    if public_key.lower() != receipt.public_key.lower():
        raise AuditChainError(
            "the receipt was signed with another key than the coordinator's",
            seq=receipt.seq,
        )
    try:
        signer = Ed25519PublicKey.from_public_bytes(bytes.fromhex(receipt.public_key))
        signer.verify(base64.b64decode(receipt.signature, validate=True), receipt.message)
    except (InvalidSignature, ValueError):
        raise AuditChainError(
            f"the receipt for event {receipt.seq} has an invalid signature", seq=receipt.seq
        ) from None
