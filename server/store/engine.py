"""Opening the store: one engine per process entry point, sessions on it, errors in our terms.

SQLite and PostgreSQL differ in how writers are kept apart. On SQLite every
transaction starts with ``BEGIN IMMEDIATE`` (SQLAlchemy's documented recipe:
sqlite3's own transaction handling is switched off and the engine emits BEGIN
itself), so it holds the database's write lock from its first statement and
other writers wait up to ``busy_timeout_s``. On PostgreSQL transactions run at
READ COMMITTED, and the audit log and migrations serialise their writers with
advisory locks (see ``locks.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from privacy.envelope import Keyring
from privacy.errors import ConfigError
from server.errors import ConflictError, NotFoundError, StoreError, StoreUnavailableError
from server.store import audit_key, migrate
from server.store.settings import StoreSettings

logger = logging.getLogger(__name__)


class Store:
    """An open governance store: its engine, and sessions that commit or roll back as a whole.

    Parameters
    ----------
    engine : Engine
        Built by ``create_store_engine``.
    keyring : Keyring, optional
        Seals what the store keeps that must not sit in the clear (checkpoints
        with weights, model artifacts); ``None``: encryption at rest is off.
    """

    def __init__(self, engine: Engine, *, keyring: Keyring | None = None) -> None:
        self.engine = engine
        self.keyring = keyring

    @property
    def url(self) -> str:
        """The store's URL with any password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work commits when the block ends, or rolls back if it raises.

        Database failures come out as ``StoreUnavailableError`` (unreachable,
        locked) or ``ConflictError`` (a uniqueness rule refused the write).
        """
        with translate_errors(self.url), Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def upgrade(self, *, actor: str = "system") -> tuple[str | None, str]:
        """Bring the schema to the newest revision; return the revisions before and after."""
        with translate_errors(self.url):
            return migrate.upgrade(self.engine, actor=actor)

    def revision(self) -> str | None:
        """The schema's revision, or ``None`` for an empty database."""
        with translate_errors(self.url):
            return migrate.current_revision(self.engine)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def create_store_engine(settings: StoreSettings) -> Engine:
    """An engine for ``settings.database_url``, with the locking described in this module.

    Raises
    ------
    ConfigError
        The URL names a driver that is not installed.
    StoreUnavailableError
        The SQLite file's folder cannot be created.
    """
    try:
        if settings.backend == "sqlite":
            return _sqlite_engine(settings)
        return create_engine(
            make_url(settings.database_url),
            echo=settings.echo_sql,
            pool_pre_ping=True,
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout_s,
            connect_args={"connect_timeout": max(2, round(settings.connect_timeout_s))},
        )
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(f"cannot use the store URL's driver: {exc}") from None
    except OSError as exc:
        raise StoreUnavailableError(
            f"cannot create the store's folder: {exc.strerror}: {exc.filename}"
        ) from None


def _sqlite_engine(settings: StoreSettings) -> Engine:
    url = make_url(settings.database_url)
    in_memory = url.database in (None, "", ":memory:")
    options: dict[str, Any] = {"echo": settings.echo_sql}
    connect_args: dict[str, Any] = {"timeout": settings.busy_timeout_s}
    if in_memory:
        options["poolclass"] = StaticPool
        connect_args["check_same_thread"] = False
    else:
        path = Path(str(url.database)).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # owner-only; -wal and -shm follow its mode
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    engine = create_engine(url, connect_args=connect_args, **options)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy, not sqlite3, emits BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout_s * 1000)}")
        if not in_memory and cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:  # WAL is persistent: only a new store switches, and one switch is enough
                cursor.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                logger.debug("left the journal mode as it was: %s", exc)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn the database driver's failures into the store's errors, in one line each."""
    try:
        yield
    except IntegrityError as exc:
        raise ConflictError(
            f"the store refused a conflicting write: {_first_line(exc)}", url=url
        ) from None
    except (OperationalError, InterfaceError) as exc:
        raise StoreUnavailableError(
            f"the store at {url} cannot be used: {_first_line(exc)}", url=url
        ) from None
    except DBAPIError as exc:
        raise StoreError(f"the store at {url} failed: {_first_line(exc)}", url=url) from None


def _require_existing(settings: StoreSettings) -> None:
    """``NotFoundError`` naming the URL if there is no store there (nothing is created)."""
    url = make_url(settings.database_url)
    shown = url.render_as_string(hide_password=True)
    if settings.backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            return
        path = Path(str(url.database)).expanduser()
        exists = path.is_file() and path.stat().st_size > 0
    else:
        probe = Store(create_store_engine(settings))
        try:
            exists = probe.revision() is not None
        finally:
            probe.dispose()
    if not exists:
        raise NotFoundError(
            f"there is no store at {shown}; check --database-url / FEDWARDEN_DATABASE_URL, "
            "or create one with `fedwarden db upgrade` or `fedwarden admin init`",
            url=shown,
        )


def _first_line(exc: DBAPIError) -> str:
    """The driver's own message, first line only, without SQLAlchemy's SQL echo."""
    text = str(exc.orig) if exc.orig is not None else str(exc)
    line = next((part.strip() for part in text.splitlines() if part.strip()), type(exc).__name__)
    return line.replace("[", "(").replace("]", ")")


def open_store(
    settings: StoreSettings | str,
    *,
    upgrade: bool = True,
    create: bool = True,
    keyring: Keyring | None = None,
) -> Store:
    """Open the store, creating it or bringing its schema to the newest revision if needed.

    Parameters
    ----------
    settings : StoreSettings or str
        The settings, or just a database URL.
    upgrade : bool
        Apply pending migrations (the default); ``False`` opens the store as it is.
    create : bool
        Create the store if there is none (the default). ``False`` (every command
        but ``db upgrade`` and ``admin init``) refuses, naming the URL, so an
        operator pointed at the wrong place does not get a fresh, empty store.
    keyring : Keyring, optional
        Encryption at rest for what the store keeps (see ``Store``).

    Raises
    ------
    ConfigError
        The URL is malformed.
    StoreUnavailableError
        The database cannot be reached within the connect timeout.
    StoreError
        The store's schema is newer than this fedwarden knows.
    """
    if isinstance(settings, str):
        settings = StoreSettings.load(settings)
    if not create:
        _require_existing(settings)
    store = Store(create_store_engine(settings), keyring=keyring)
    locator = audit_key.default_locator(settings)
    locator.keyring = keyring  # the audit key file is sealed under the KEK too
    audit_key.register(store.engine, locator)
    try:
        if upgrade:
            store.upgrade(actor="system")
        else:
            with translate_errors(store.url), store.engine.connect():
                pass
    except BaseException:
        store.dispose()
        raise
    logger.debug("opened the store at %s", store.url)
    return store
