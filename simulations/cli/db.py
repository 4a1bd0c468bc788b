"""``fedwarden db``: create the store and migrate its schema."""

from __future__ import annotations

from pathlib import Path

import typer

from simulations.cli.common import DatabaseUrl, console

db_app = typer.Typer(help="The governance store's schema.", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade_command(database_url: DatabaseUrl = None) -> None:
    """Create the store if it does not exist, or bring its schema to the newest revision.

    Needs no API key: whoever can reach the database can migrate it.
    """
    from simulations.cli.common import opened

    with opened(database_url, upgrade=False, create=True) as store:
        before, after = store.upgrade(actor="system")
        url = store.url
    if before == after:
        console.print(f"store {url} is at the newest revision, {after}")
    else:
        console.print(f"store {url} upgraded from revision {before or '(empty)'} to {after}")


@db_app.command("current")
def current_command(database_url: DatabaseUrl = None) -> None:
    """Show the store's schema revision and the newest one this fedwarden knows.

    Reads no governed data and needs no API key; it does not create a store.
    """
    from sqlalchemy.engine import make_url

    from server.store.migrate import head_revision
    from server.store.settings import StoreSettings
    from simulations.cli.common import opened

    settings = StoreSettings.load(database_url)
    head = head_revision()
    path = make_url(settings.database_url).database
    on_disk = settings.backend == "sqlite" and path not in (None, "", ":memory:")
    if on_disk and not Path(str(path)).expanduser().exists():
        console.print(f"no store at {settings.database_url} (newest revision: {head})")
        return
    with opened(settings.database_url, upgrade=False) as store:
        revision = store.revision()
        url = store.url
    state = "up to date" if revision == head else f"behind: run `fedwarden db upgrade` for {head}"
    console.print(f"store {url}: revision {revision or '(empty)'} ({state})")
