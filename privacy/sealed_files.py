"""Files that may be sealed: written encrypted when a keyring is given, read either way.

``write_file`` and ``read_file`` are the one place fedwarden's secrets and
weights touch a disk (PKI private keys, the audit signing key, model
artifacts); ``rewrap_file`` is what key rotation does to each of them.
Writes are atomic (a temporary file in the same folder, then a rename), so a
crash leaves the old file or the new one, never half of either.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from privacy.envelope import Keyring, is_sealed, open_if_sealed, seal_if
from privacy.errors import ConfigError


def write_file(
    path: Path,
    data: bytes,
    *,
    keyring: Keyring | None,
    private: bool = True,
    exclusive: bool = False,
) -> None:
    """Write ``data`` to ``path``, sealed when ``keyring`` is given; mode 0600 if ``private``.

    Raises
    ------
    ConfigError
        ``exclusive`` and ``path`` exists, or the folder cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive and path.exists():
        raise ConfigError(f"{path} exists already and is never overwritten")
    _atomic_write(path, seal_if(keyring, data), mode=0o600 if private else 0o644)


def read_file(path: Path, *, keyring: Keyring | None, what: str | None = None) -> bytes:
    """The plaintext of ``path`` (decrypted if sealed)."""
    return open_if_sealed(keyring, path.read_bytes(), what=what or str(path))


def file_kek(path: Path) -> str | None:
    """The id of the KEK that sealed ``path``, or ``None`` for a plaintext file."""
    from privacy.envelope import Envelope

    with path.open("rb") as handle:
        head = handle.read(512)
    if not is_sealed(head):
        return None
    return Envelope.parse(head + b"\0" * 64).kek_id  # only the header is read


def rewrap_file(path: Path, *, keyring: Keyring) -> bool:
    """Rewrap a sealed file's data key under the active KEK; ``False`` if nothing changed."""
    blob = path.read_bytes()
    if not is_sealed(blob):
        return False
    rewrapped = keyring.rewrap(blob)
    if rewrapped == blob:
        return False
    _atomic_write(path, rewrapped, mode=path.stat().st_mode & 0o777)
    return True


def _atomic_write(path: Path, data: bytes, *, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def write_private_file(path: Path, data: bytes, *, keyring: Keyring | None, what: str) -> None:
    """Write a secret (a private key) once: mode 0600, sealed when ``keyring`` is given.

    Raises
    ------
    ConfigError
        ``path`` exists already (a key is never overwritten) or cannot be written.
    """
    if path.exists():
        raise ConfigError(f"{path} exists already; {what} is never overwritten")
    write_file(path, data, keyring=keyring, private=True)


def read_private_file(path: Path, *, keyring: Keyring | None, what: str) -> bytes:
    """The one way fedwarden loads a secret from disk (signing keys, PKI keys, HMAC keys).

    The file must be readable by its owner only; a sealed file is decrypted
    with ``keyring``, a plaintext one (written before encryption was on) is
    returned as it is.

    Raises
    ------
    ConfigError
        The file is missing or readable by others.
    EncryptionError
        It is sealed and cannot be opened (no keyring, wrong KEK, altered).
    """
    try:
        mode = path.stat().st_mode
        blob = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{what} {path} is readable by others; chmod 600 it")
    return open_if_sealed(keyring, blob, what=f"{what} {path}")


@contextmanager
def materialized(path: Path, *, keyring: Keyring | None, what: str) -> Iterator[Path]:
    """A plaintext path of a secret for a program that can only read files (Flower's
    SuperLink TLS key, a SuperNode's auth key).

    A plaintext file is yielded as it is. A sealed one is decrypted into a fresh
    folder (mode 0700) in memory-backed ``/dev/shm`` where there is one, as a
    0600 file, and removed when the block ends.
    """
    blob = path.read_bytes()
    if not is_sealed(blob):
        yield path
        return
    plaintext = open_if_sealed(keyring, blob, what=f"{what} {path}")
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(prefix="fedwarden-", dir=shm if shm.is_dir() else None))
    target = folder / path.name
    try:
        _atomic_write(target, plaintext, mode=0o600)
        yield target
    finally:
        target.unlink(missing_ok=True)
        folder.rmdir()
