"""What the commands share: the store URL, API key and state-folder options, the console,
and an authenticated session on the store.

Command modules import only Typer and Rich at load time; the libraries (SQLAlchemy,
torch, Flower) load inside each command, so ``fedwarden --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from server.store.engine import Store
    from server.store.models import Principal

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="The store: sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB "
        "(default: $FEDWARDEN_DATABASE_URL, else sqlite:///fedwarden.db).",
        show_default=False,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="FEDWARDEN_API_KEY",
        help="Your API key (prefer the FEDWARDEN_API_KEY variable: options show up in `ps`).",
        show_default=False,
        show_envvar=True,
    ),
]

StateDir = Annotated[
    Path,
    typer.Option(
        "--state",
        envvar="FEDWARDEN_COORDINATOR_STATE",
        help="The coordinator's state folder (as given to `coordinator start`).",
    ),
]

console = Console(highlight=False)


@contextmanager
def opened(
    database_url: str | None, *, upgrade: bool = True, create: bool = False
) -> Iterator[Store]:
    """The store named by ``--database-url`` or the environment, disposed of afterwards.

    Only ``db upgrade`` and ``admin init`` pass ``create=True``; everywhere else a
    missing store is an error that names the URL.
    """
    from privacy.keyring import load_keyring
    from server.store.engine import open_store
    from server.store.settings import StoreSettings

    keyring = load_keyring()  # FEDWARDEN_KEYRING / FEDWARDEN_KEK, if encryption at rest is on
    store = open_store(
        StoreSettings.load(database_url), upgrade=upgrade, create=create, keyring=keyring
    )
    try:
        yield store
    finally:
        store.dispose()


@contextmanager
def authenticated(
    database_url: str | None, api_key: str | None
) -> Iterator[tuple[Session, Principal]]:
    """A transaction on the store and the principal the API key belongs to.

    The transaction commits when the block ends and rolls back if it raises;
    a failed authentication is audited and raises ``AuthenticationError``.
    """
    from server.store.keys import authenticate

    with opened(database_url) as store, store.session() as session:
        yield session, authenticate(session, api_key)
