"""A model artifact's bytes at rest: sealed on write, decrypted and verified on read.

These two functions are the only way fedwarden writes or reads a model
artifact (an ONNX file, and any side file holding its external weights), so
wherever the bytes live (a file today, a content-addressed blob tomorrow) the
same wrap applies. The registered SHA-256 is always that of the plaintext:
``read_artifact`` decrypts first, then checks the digest, and refuses the
artifact (nothing is served) if either step fails.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from deploy.errors import ServingError
from privacy.envelope import Keyring
from privacy.errors import EncryptionError
from privacy.sealed_files import read_file, write_file


def write_artifact(path: Path, data: bytes, *, keyring: Keyring | None) -> str:
    """Write an artifact (sealed when ``keyring`` is given, mode 0600); return its SHA-256.

    The digest is of ``data``, the plaintext: it is what the registry records.
    """
    write_file(path, data, keyring=keyring, private=keyring is not None)
    return hashlib.sha256(data).hexdigest()


def read_artifact(path: Path, *, sha256: str, keyring: Keyring | None, what: str) -> bytes:
    """The artifact's plaintext, once it decrypts and matches ``sha256``.

    Raises
    ------
    ServingError
        The file is missing, does not decrypt (wrong or missing KEK, altered
        bytes), or its plaintext does not match the registered digest.
    """
    if not path.is_file():
        raise ServingError(f"artifact of {what} is missing: {path}")
    try:
        data = read_file(path, keyring=keyring, what=f"the artifact of {what}")
    except EncryptionError as exc:
        raise ServingError(f"{exc}; refusing to serve it", **exc.context) from None
    except OSError as exc:
        raise ServingError(f"cannot read the artifact of {what}: {exc.strerror}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ServingError(
            f"artifact of {what} does not match its registered SHA-256 "
            f"({actual[:12]}… instead of {sha256[:12]}…); refusing to serve it"
        )
    return data
