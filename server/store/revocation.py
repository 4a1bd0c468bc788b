"""The revocation generation: a counter in the store that every revocation raises.

A service that caches who a key belongs to reads the counter on each request
(one primary-key read) and drops its cache when the counter has moved, so a
revoked key, a revoked role or a revoked node key is refused on the very next
request instead of when a cache entry times out.
"""

from __future__ import annotations

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from server.store.models import AuthGeneration


def current(session: Session) -> int:
    """The store's revocation generation (0 for a store that never revoked anything)."""
    value = session.scalar(select(AuthGeneration.generation).where(AuthGeneration.id == 1))
    return int(value or 0)


def bump(session: Session) -> None:
    """Raise the generation in the caller's transaction (it moves iff the revocation commits)."""
    session.execute(
        update(AuthGeneration)
        .where(AuthGeneration.id == 1)
        .values(generation=AuthGeneration.generation + 1)
    )


def read_generation(engine: Engine) -> int:
    """The generation, read outside any transaction (no write lock, even on SQLite).

    The store's sessions begin with ``BEGIN IMMEDIATE`` on SQLite, which takes
    the write lock; a service reading the counter on every request must not,
    so this reads through a pooled DBAPI connection in autocommit mode.
    """
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            cursor.execute("SELECT generation FROM auth_generations WHERE id = 1")
            row = cursor.fetchone()
        finally:
            cursor.close()
        connection.rollback()  # ends PostgreSQL's implicit transaction; a no-op on SQLite
    finally:
        connection.close()
    return int(row[0]) if row is not None else 0
