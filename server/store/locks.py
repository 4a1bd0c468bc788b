"""Database locks that keep writers in separate processes from stepping on each other.

PostgreSQL: a transaction-scoped advisory lock whose key combines a constant
for the purpose with the OID of the store's schema, so two stores in one
database (two schemas) never wait for each other. It is released at commit or
rollback. SQLite needs nothing here: every store transaction already holds the
write lock from ``BEGIN IMMEDIATE`` (see ``engine.py``).
"""

from __future__ import annotations

from enum import IntEnum

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session


class LockPurpose(IntEnum):
    """What a lock protects; the high 32 bits of the advisory lock key."""

    MIGRATIONS = 0x46570001
    AUDIT_CHAIN = 0x46570002
    MODEL_REGISTRY = 0x46570003


def lock_for_transaction(executor: Session | Connection, *, purpose: LockPurpose) -> None:
    """Block until this transaction holds the lock for ``purpose`` in this store.

    Parameters
    ----------
    executor : Session or Connection
        Inside the transaction that needs the lock.
    purpose : LockPurpose
        Which lock.
    """
    dialect = executor.get_bind().dialect if isinstance(executor, Session) else executor.dialect
    if dialect.name != "postgresql":
        return
    executor.execute(
        text(
            f"SELECT pg_advisory_xact_lock(({int(purpose)}::bigint << 32) | "
            "(SELECT oid::bigint FROM pg_namespace WHERE nspname = current_schema()))"
        )
    )
