"""Schema migrations, run through Alembic without an ``alembic.ini``.

The migration scripts ship inside the package (``server/store/migrations``).
``upgrade`` runs in one transaction that first takes the migration lock, so
several processes opening a new store at once create it exactly once; when it
changes the revision it adds a ``store.upgrade`` event to the audit log in the
same transaction.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from server.errors import StoreError
from server.store import audit
from server.store.locks import LockPurpose, lock_for_transaction

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the store, optionally bound to an open connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this fedwarden knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise StoreError("the store's migration scripts are missing")
    return head


def current_revision(engine: Engine) -> str | None:
    """The store's revision, or ``None`` if it has no schema yet."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, *, actor: str = "system") -> tuple[str | None, str]:
    """Bring the store's schema to the newest revision (creating it if the store is empty).

    Parameters
    ----------
    engine : Engine
        The store's engine.
    actor : str
        Who asked, for the audit event recorded when the revision changes.

    Returns
    -------
    (str or None, str)
        The revision before and after.

    Raises
    ------
    StoreError
        The store is at a revision this fedwarden does not know (a newer release made it).
    """
    head = head_revision()
    with engine.begin() as connection:
        lock_for_transaction(connection, purpose=LockPurpose.MIGRATIONS)
        before = MigrationContext.configure(connection).get_current_revision()
        if before == head:
            return before, head
        config = alembic_config(connection)
        try:
            if before is not None:
                ScriptDirectory.from_config(config).get_revision(before)
            command.upgrade(config, "head")
        except CommandError:
            raise StoreError(
                f"the store is at revision {before}, which this fedwarden does not know; "
                "it was made by a newer release",
                revision=before,
            ) from None
        with Session(bind=connection) as session:
            audit.append(
                session,
                actor=actor,
                action="store.upgrade",
                target="store",
                details={"from": before, "to": head},
            )
    logger.info("store schema upgraded from %s to %s", before, head)
    return before, head
