"""Who drives the coordinator: every ``fedwarden run`` command is an operator's, on the record.

``authorize_operator`` opens the coordinator's store (never creating one),
checks the API key, checks the permission the command needs (``run:start``,
``run:stop`` or ``run:read``) and audits the command under the principal that
holds the key. A missing or wrong key, or a principal without the permission,
is refused and audited before anything reaches the SuperLink.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from privacy.keyring import load_keyring
from server.store import audit, rbac
from server.store.engine import open_store
from server.store.keys import authenticate
from server.store.settings import StoreSettings

PERMISSIONS: dict[str, str] = {
    "run.start": "run:start",
    "run.resume": "run:start",
    "run.stop": "run:stop",
    "run.status": "run:read",
    "run.list": "run:read",
}


def authorize_operator(
    *,
    database_url: str | None,
    api_key: str | None,
    action: str,
    target: str,
    details: Mapping[str, Any] | None = None,
) -> str:
    """Authenticate and authorize one ``fedwarden run`` command; return the principal's name.

    Parameters
    ----------
    action : str
        ``run.start``, ``run.resume``, ``run.stop``, ``run.status`` or ``run.list``.
    target : str
        What it concerns, for the audit record (``run:<id>``, ``runs``).

    Raises
    ------
    NotFoundError
        There is no store at the URL.
    AuthenticationError, PermissionDeniedError
        The key is not good, or its principal may not do this (both audited).
    """
    permission = PERMISSIONS[action]
    store = open_store(
        StoreSettings.load(database_url), upgrade=False, create=False, keyring=load_keyring()
    )
    try:
        with store.session() as session:
            principal = authenticate(session, api_key)
            name = principal.name
            rbac.authorize(session, principal=principal, permission=permission, target=target)
            audit.append(session, actor=name, action=action, target=target, details=details)
    finally:
        store.dispose()
    return name


def authorize_simulation(*, settings: StoreSettings, api_key: str | None) -> str | None:
    """For ``fedwarden simulate``: an operator key, if the store exists and is governed.

    A new store, or one without an admin yet, is the simulator's own and needs no
    key; a store with principals is written like any other: by an operator, on
    the record. Returns the operator's name, or ``None`` when none was needed.
    """
    from sqlalchemy import func, select

    from server.errors import NotFoundError
    from server.store.models import Grant, Role

    try:
        store = open_store(settings, upgrade=False, create=False, keyring=load_keyring())
    except NotFoundError:
        return None
    try:
        with store.session() as session:
            admins = session.scalar(
                select(func.count()).select_from(Grant).join(Role).where(Role.name == "admin")
            )
    finally:
        store.dispose()
    if not admins:
        return None
    return authorize_operator(
        database_url=settings.database_url,
        api_key=api_key,
        action="run.start",
        target="runs",
        details={"via": "simulate"},
    )
