"""The store's URL handed to the ServerApp in a file only the coordinator's user can read.

The URL may carry the store's password (PostgreSQL). An environment variable
would reach every process the SuperLink starts, and show in their environment;
instead ``fedwarden coordinator start`` writes it to ``<state>/store.url``
(mode 0600) and ``fedwarden run`` names that file in the run config
(``database-url-file``), which ``server.config`` reads.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from privacy.errors import ConfigError

STORE_URL_FILE = "store.url"


def store_url_path(state_dir: Path) -> Path:
    """Where the coordinator whose state is in ``state_dir`` keeps its store's URL."""
    return state_dir.resolve() / STORE_URL_FILE


def write_store_url(*, state_dir: Path, url: str) -> Path:
    """Write ``url`` to ``<state>/store.url``, readable and writable by this user only."""
    path = store_url_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # an older file may have had wider permissions
        os.write(descriptor, url.encode())
    finally:
        os.close(descriptor)
    return path


def read_store_url(path: Path) -> str:
    """The URL in ``path``; ``ConfigError`` if it is missing, empty, or readable by others."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"database-url-file {path} cannot be read: {exc.strerror}") from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise ConfigError(
            f"database-url-file {path} is readable by other users "
            f"(mode {stat.S_IMODE(info.st_mode):o}); make it 0600"
        )
    url = path.read_text().strip()
    if not url:
        raise ConfigError(f"database-url-file {path} is empty")
    return url
