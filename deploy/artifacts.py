"""A model artifact's bytes at rest: sealed on write, decrypted and verified on read.

``seal_artifact`` and ``open_artifact`` are the only way fedwarden turns a
model artifact (an ONNX file, and any side file holding its external weights)
into the bytes it keeps and back, so wherever those bytes live (a file today
through ``write_artifact`` / ``read_artifact``, a content-addressed blob
tomorrow) the same wrap applies. The registered SHA-256 is always that of the plaintext:
``read_artifact`` decrypts first, then checks the digest, and refuses the
artifact (nothing is served) if either step fails.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from deploy.errors import ServingError
from privacy.envelope import Keyring, open_if_sealed, seal_if
from privacy.errors import EncryptionError
from privacy.sealed_files import write_file


def seal_artifact(data: bytes, *, keyring: Keyring | None) -> tuple[bytes, str]:
    """The bytes to keep for an artifact (sealed when ``keyring`` is given) and the SHA-256 of
    its plaintext, which is what the registry records. Storage-agnostic: a file or a blob."""
    return seal_if(keyring, data), hashlib.sha256(data).hexdigest()


def open_artifact(blob: bytes, *, sha256: str, keyring: Keyring | None, what: str) -> bytes:
    """An artifact's plaintext from its kept bytes, once it decrypts and matches ``sha256``.

    Raises
    ------
    ServingError
        It does not decrypt (wrong or missing KEK, altered bytes), or its plaintext
        does not match the registered digest.
    """
    try:
        data = open_if_sealed(keyring, blob, what=f"the artifact of {what}")
    except EncryptionError as exc:
        raise ServingError(f"{exc}; refusing to serve it", **exc.context) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ServingError(
            f"artifact of {what} does not match its registered SHA-256 "
            f"({actual[:12]}… instead of {sha256[:12]}…); refusing to serve it"
        )
    return data


def write_artifact(path: Path, data: bytes, *, keyring: Keyring | None) -> str:
    """Write an artifact file (sealed and mode 0600 when ``keyring`` is given); return the
    plaintext's SHA-256."""
    blob, sha256 = seal_artifact(data, keyring=keyring)
    write_file(path, blob, keyring=None, private=keyring is not None)
    return sha256


def read_artifact(path: Path, *, sha256: str, keyring: Keyring | None, what: str) -> bytes:
    """An artifact file's plaintext, once it decrypts and matches ``sha256`` (``ServingError``
    if it is missing or does not)."""
    if not path.is_file():
        raise ServingError(f"artifact of {what} is missing: {path}")
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ServingError(f"cannot read the artifact of {what}: {exc.strerror}") from None
    return open_artifact(blob, sha256=sha256, keyring=keyring, what=what)
