"""``fedwarden db``, ``admin``, ``audit`` (the governance store) and ``pki``,
``coordinator``, ``run`` (a deployment over Flower's deployment engine)."""

from __future__ import annotations

import typer

from server.deployment import commands as deployment_commands
from server.store.commands.admin import admin_app
from server.store.commands.auditing import audit_app
from server.store.commands.db import db_app


def register(app: typer.Typer) -> None:
    """Add this package's commands to the ``fedwarden`` application."""
    app.add_typer(db_app, name="db")
    app.add_typer(admin_app, name="admin")
    app.add_typer(audit_app, name="audit")
    deployment_commands.register(app)
