"""Alembic migrations of the governance store (run through ``server.store.migrate``)."""
