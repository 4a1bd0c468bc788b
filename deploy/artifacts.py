"""A model artifact's bytes at rest: sealed on write, decrypted and verified on read.

``seal_artifact`` and ``open_artifact`` are the only way fedwarden turns a
model artifact (an ONNX file, and any side file holding its external weights)
into the bytes it keeps and back, so wherever those bytes live (a file through
``write_artifact`` / ``read_artifact``, the store's content-addressed blob
through ``keep_in_store``, the serving host's cache through ``ArtifactFetcher``)
the same wrap applies. The registered SHA-256 is always that of the plaintext:
``read_artifact`` decrypts first, then checks the digest, and refuses the
artifact (nothing is served) if either step fails.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

from sqlalchemy.orm import Session

from deploy.errors import ServingError
from privacy.envelope import Keyring, is_sealed, open_if_sealed, seal_if
from privacy.errors import EncryptionError
from privacy.sealed_files import write_file
from server.store import repository as repo
from server.store.engine import Store

logger = logging.getLogger(__name__)


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


def keep_in_store(session: Session, *, path: Path, sha256: str, keyring: Keyring | None) -> bool:
    """Copy an artifact file's kept bytes (sealed as they are on disk) into the store, under
    the digest of its plaintext, once it opens and matches; returns whether a row was added."""
    blob = path.read_bytes()
    data = open_artifact(blob, sha256=sha256, keyring=keyring, what=path.name)
    return repo.save_artifact(session=session, sha256=sha256, blob=blob, size=len(data))


class ArtifactFetcher:
    """An artifact's plaintext for the serving host: from its local cache, else the store,
    else the file the version was registered with (versions registered before artifacts
    travelled with the store).

    The cache holds the kept bytes (sealed when the store seals), one file per
    SHA-256; every read decrypts and checks the digest, and a cached copy that
    fails is dropped and fetched again.
    """

    def __init__(self, store: Store, *, cache_dir: Path | None) -> None:
        self.store = store
        self.cache_dir = cache_dir

    def fetch(self, *, sha256: str, path: Path | None, what: str) -> bytes:
        keyring = self.store.keyring
        cached = self._cached(sha256)
        if cached is not None:
            try:
                kept = cached.read_bytes()
                if keyring is not None and not is_sealed(kept):
                    # A store that seals serves nothing from a copy in the clear (one left
                    # by an earlier, unsealed registration of the same model): the store's
                    # own sealed bytes decide, so a wrong KEK still serves nothing.
                    raise ServingError("the cached copy is not sealed and this store seals")
                return open_artifact(kept, sha256=sha256, keyring=keyring, what=what)
            except (ServingError, OSError) as exc:
                logger.warning("dropping the cached artifact of %s: %s", what, exc)
                cached.unlink(missing_ok=True)
        with self.store.session() as session:
            blob = repo.artifact_blob(session=session, sha256=sha256)
        if blob is not None:
            data = open_artifact(blob, sha256=sha256, keyring=keyring, what=what)
            self._keep(sha256, blob)
            return data
        if path is None:
            raise ServingError(f"artifact of {what} is neither in the store nor on this host")
        return read_artifact(path, sha256=sha256, keyring=keyring, what=what)

    def _cached(self, sha256: str) -> Path | None:
        if self.cache_dir is None:
            return None
        candidate = self.cache_dir / f"{sha256}.onnx"
        return candidate if candidate.is_file() else None

    def _keep(self, sha256: str, blob: bytes) -> None:
        """Write the kept bytes to the cache atomically (mode 0600); a cache that cannot be
        written is logged and skipped: the store still has the artifact."""
        if self.cache_dir is None:
            return
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            handle, temporary = tempfile.mkstemp(dir=self.cache_dir, prefix=".partial-")
            with os.fdopen(handle, "wb") as sink:
                sink.write(blob)
            os.replace(temporary, self.cache_dir / f"{sha256}.onnx")
        except OSError as exc:
            logger.warning("cannot cache artifact %s in %s: %s", sha256[:12], self.cache_dir, exc)
