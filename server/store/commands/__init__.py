"""The store's command groups: ``fedwarden db``, ``fedwarden admin``, ``fedwarden audit``.

These modules import only Typer and Rich at load time; the store itself
(SQLAlchemy, Alembic) loads inside each command, so ``fedwarden --help`` stays fast.
"""
