"""The console's application factory: routers, templates, static files, error pages.

Fedwarden's errors become pages in one place: no session sends the browser to
sign in, a missing permission is a 403 page (the denial is already audited by
``rbac.authorize``), an unknown run or model a 404, bad input a 400.
"""

from __future__ import annotations

import html
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from privacy.errors import ConfigError, FedwardenError
from server.console import filters
from server.console.deps import TEMPLATES, ConsoleState, render
from server.console.routers import assets, audit, auth, drift, models, overview, runs
from server.console.security import security_headers
from server.console.sessions import SessionStore
from server.console.settings import ConsoleSettings
from server.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    SignInRequiredError,
    StoreUnavailableError,
)
from server.store.engine import Store, open_store

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def create_app(settings: ConsoleSettings, *, store: Store | None = None) -> FastAPI:
    """The console over ``settings.database_url`` (or over ``store``, which the caller keeps).

    The store is opened, and migrated if needed, when the application starts.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = store is None
        if store is None:  # the audit key (and what else is sealed) opens with the keyring
            from privacy.keyring import load_keyring

            opened = open_store(settings.database_url, keyring=load_keyring())
        else:
            opened = store
        templates = Jinja2Templates(directory=str(TEMPLATES))
        filters.install(templates.env)
        app.state.console = ConsoleState(
            settings=settings,
            store=opened,
            sessions=SessionStore(ttl_s=settings.session_ttl_s, max_sessions=settings.max_sessions),
            templates=templates,
        )
        try:
            yield
        finally:
            if owned:
                opened.dispose()

    app = FastAPI(
        title="fedwarden console",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.middleware("http")(security_headers)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    for module in (assets, auth, overview, runs, models, drift, audit):
        app.include_router(module.router)
    _register_errors(app)
    return app


def create_app_from_environment() -> FastAPI:
    """For ``uvicorn --factory``: settings from ``FEDWARDEN_CONSOLE_*`` variables."""
    return create_app(ConsoleSettings())  # type: ignore[call-arg]


def _register_errors(app: FastAPI) -> None:
    async def sign_in(request: Request, exc: Exception) -> Response:
        return RedirectResponse(f"/signin?next={request.url.path}", status_code=303)

    async def failed_sign_in(request: Request, exc: Exception) -> Response:
        return auth.signin_page(request, error=str(exc), status_code=401)

    async def fedwarden_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FedwardenError)
        status = 500
        if isinstance(exc, PermissionDeniedError):
            status = 403
        elif isinstance(exc, NotFoundError):
            status = 404
        elif isinstance(exc, ConflictError):
            status = 409
        elif isinstance(exc, ConfigError):
            status = 400
        elif isinstance(exc, StoreUnavailableError):
            status = 503
        if status == 500:
            logger.error("console request %s failed: %s", request.url.path, exc)
        title = {403: "Not allowed", 404: "Not found", 409: "Conflict", 400: "Bad request"}
        if request.headers.get("x-console-fragment") == "1":
            text = html.escape(str(exc))
            return HTMLResponse(f'<p class="error" role="alert">{text}</p>', status_code=status)
        viewer = getattr(request.state, "viewer", None)
        return render(
            request,
            "error.html",
            viewer=viewer,
            status_code=status,
            title=title.get(status, "Error"),
            message=str(exc),
        )

    app.add_exception_handler(SignInRequiredError, sign_in)
    app.add_exception_handler(AuthenticationError, failed_sign_in)
    app.add_exception_handler(FedwardenError, fedwarden_error)
