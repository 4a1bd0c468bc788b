"""Alembic's environment for the governance store.

``server.store.migrate`` runs Alembic programmatically and hands over a
connection that is already inside a transaction holding the migration lock
(``config.attributes["connection"]``); no ``alembic.ini`` is involved.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from server.store.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the given connection, or one to ``sqlalchemy.url`` if none was given."""
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("run migrations through server.store.migrate, or set sqlalchemy.url")
    engine = create_engine(url)
    try:
        with engine.begin() as new_connection:
            _run(new_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("the governance store's migrations run online only")
run_migrations_online()
