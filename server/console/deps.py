"""What the console's routes depend on, declared once: the store session, the signed-in
viewer, a form's anti-forgery check, and rendering a page."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from server.console.sessions import COOKIE, ConsoleSession, SessionStore, same
from server.console.settings import ConsoleSettings
from server.errors import CsrfError, SignInRequiredError
from server.store import audit, rbac
from server.store.engine import Store
from server.store.keys import live_key_owner
from server.store.models import Principal

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True, kw_only=True)
class ConsoleState:
    """What the application holds for its lifetime (``app.state.console``)."""

    settings: ConsoleSettings
    store: Store
    sessions: SessionStore
    templates: Jinja2Templates


@dataclass(frozen=True, kw_only=True)
class Viewer:
    """The signed-in principal of a request, with the permissions it holds now."""

    principal: Principal
    name: str  # kept apart: a refusal's rollback expires ``principal``
    session: ConsoleSession
    token: str
    roles: list[str]
    permissions: frozenset[str]

    def may(self, permission: str) -> bool:
        """Whether the viewer holds ``permission`` (for showing links and buttons only:
        each action still goes through ``rbac.authorize``)."""
        return permission in self.permissions


def console_state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


StateDep = Annotated[ConsoleState, Depends(console_state)]


def db_session(state: StateDep) -> Iterator[Session]:
    """One transaction per request: committed before the response is sent, or rolled back."""
    with state.store.session() as session:
        yield session


DbDep = Annotated[Session, Depends(db_session, scope="function")]


def current_viewer(request: Request, state: StateDep, db: DbDep) -> Viewer:
    """The session's principal, if its session is live and its API key still valid.

    A key revoked or expired since sign-in ends the session.

    Raises
    ------
    SignInRequiredError
        No cookie, an unknown or expired session, or a key no longer valid.
    """
    token = request.cookies.get(COOKIE)
    session = state.sessions.get(token)
    if session is None or token is None:
        raise SignInRequiredError("sign in with your API key")
    principal = live_key_owner(db, prefix=session.key_prefix)
    if principal is None or principal.id != session.principal_id:
        state.sessions.end(token)
        raise SignInRequiredError("your API key was revoked or expired: sign in again")
    viewer = Viewer(
        principal=principal,
        name=principal.name,
        session=session,
        token=token,
        roles=rbac.roles_of(db, principal=principal),
        permissions=rbac.permissions_of(db, principal=principal),
    )
    request.state.viewer = viewer  # for error pages' navigation
    return viewer


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


def checked_form(
    request: Request,
    viewer: ViewerDep,
    db: DbDep,
    csrf_token: Annotated[str | None, Form()] = None,
) -> Viewer:
    """The viewer of a form post whose anti-forgery token is the session's; else audit, refuse."""
    if same(csrf_token, viewer.session.csrf):
        return viewer
    raise audit.record_refusal(
        db,
        error=CsrfError("the form's anti-forgery token is missing or wrong: reload the page"),
        actor=viewer.name,
        action="console.csrf",
        target=request.url.path,
        outcome="denied",
    )


FormViewerDep = Annotated[Viewer, Depends(checked_form)]


def render(
    request: Request,
    template: str,
    *,
    viewer: Viewer | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """``template`` filled with ``context``, the viewer and its anti-forgery token."""
    state = console_state(request)
    return state.templates.TemplateResponse(
        request,
        template,
        {
            "viewer": viewer,
            "csrf_token": viewer.session.csrf if viewer is not None else None,
            **context,
        },
        status_code=status_code,
    )
