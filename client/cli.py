"""``fedwarden client``: an institution's node."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the ``fedwarden`` application."""
