"""Sign in with an API key (exchanged for a session cookie), and sign out.

The sign-in form carries its own anti-forgery token, paired with a short-lived
cookie (double submit), so no other site can sign a browser in. The key is
checked by ``keys.authenticate``, which audits every failure; a success is
audited as ``console.signin``.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server.console.deps import DbDep, FormViewerDep, StateDep, render
from server.console.sessions import COOKIE, SIGNIN_COOKIE, same
from server.errors import CsrfError
from server.store import audit
from server.store.keys import authenticate, split_token

router = APIRouter()


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this site only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def signin_page(
    request: Request, *, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    """The sign-in form with a fresh anti-forgery token in the form and in a cookie."""
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "signin.html",
        viewer=None,
        status_code=status_code,
        signin_token=token,
        error=error,
        next=safe_next(request.query_params.get("next")),
    )
    response.set_cookie(
        SIGNIN_COOKIE,
        token,
        max_age=600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/signin",
    )
    return response


@router.get("/signin", response_class=HTMLResponse)
def signin_form(*, request: Request) -> HTMLResponse:
    return signin_page(request)


@router.post("/signin")
def signin(
    *,
    request: Request,
    state: StateDep,
    db: DbDep,
    api_key: Annotated[str, Form(max_length=512)],
    signin_token: Annotated[str | None, Form()] = None,
    next: Annotated[str | None, Form()] = None,
) -> Response:
    """Check the key; on success set the session cookie and go on to ``next``."""
    if not same(signin_token, request.cookies.get(SIGNIN_COOKIE)):
        raise audit.record_refusal(
            db,
            error=CsrfError("the sign-in form expired or came from elsewhere: try again"),
            actor="anonymous",
            action="console.signin",
            target="console",
        )
    principal = authenticate(db, api_key)
    prefix = (split_token(api_key) or ("", ""))[0]
    token = state.sessions.create(
        principal_id=principal.id, principal=principal.name, key_prefix=prefix
    )
    audit.append(
        db,
        actor=principal.name,
        action="console.signin",
        target="console",
        details={"key": prefix, "ttl_s": state.settings.session_ttl_s},
    )
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(state.settings.session_ttl_s),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/signin")
    return response


@router.post("/signout")
def signout(*, request: Request, state: StateDep, db: DbDep, viewer: FormViewerDep) -> Response:
    """End the session (audited as ``console.signout``) and drop the cookie."""
    state.sessions.end(viewer.token)
    audit.append(db, actor=viewer.name, action="console.signout", target="console")
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
