"""The inference service's app factory: FastAPI over onnxruntime, keys from the store.

``create_app(settings)`` builds everything once (store, models, key cache,
metrics) and tears it down on shutdown. fedwarden's errors become JSON
responses in one place (``register_error_handlers``); no client input can
produce a 5xx.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from deploy.errors import InvalidRequestError, ServingError
from deploy.metrics import ServiceMetrics
from deploy.routes import health_router, models_router
from deploy.service import Service
from deploy.settings import ServeSettings
from privacy.errors import ConfigError, FedwardenError
from privacy.redaction import install_log_redaction
from server.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    StoreUnavailableError,
)
from server.store.engine import Store

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATUS: list[tuple[type[FedwardenError], int, str]] = [
    (AuthenticationError, 401, "unauthenticated"),
    (PermissionDeniedError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (ConfigError, 422, "invalid"),
    (StoreUnavailableError, 503, "unavailable"),
    (ServingError, 503, "unavailable"),
]


def create_app(settings: ServeSettings | None = None, *, store: Store | None = None) -> FastAPI:
    """The inference API; ``store`` (tests) replaces the one named by the settings."""
    install_log_redaction()  # no key, token or password reaches a log line
    settings = settings or ServeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service.build(settings, store=store)
        service.start()
        app.state.service = service
        app.state.metrics = service.metrics
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="fedwarden inference API",
        version="1.0",
        description=(
            "Predictions from models trained by a fedwarden federation. Rows go in by "
            "feature name, in the schema's own units; `GET /v1/models` lists the features. "
            "Authenticate with `Authorization: Bearer <API key>`."
        ),
        lifespan=lifespan,
    )
    app.include_router(models_router)
    app.include_router(health_router)
    register_error_handlers(app)
    app.add_middleware(Instrumentation, max_body_bytes=settings.max_body_bytes)  # type: ignore[arg-type]
    return app


def create_app_from_environment() -> FastAPI:
    """Factory for uvicorn workers (``deploy.api:create_app_from_environment``)."""
    return create_app(ServeSettings())


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


def register_error_handlers(app: FastAPI) -> None:
    """fedwarden's errors (and malformed bodies) as JSON ``{"error": {code, message}}``."""

    async def fedwarden_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, InvalidRequestError):
            return error_response(exc.status_code, "invalid_request", exc.message)
        assert isinstance(exc, FedwardenError)
        for kind, status, code in STATUS:
            if isinstance(exc, kind):
                return error_response(status, code, exc.message)
        logger.error("unexpected fedwarden error on %s: %s", request.url.path, exc)
        return error_response(500, "internal", "internal error")

    async def malformed(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(problems) or "malformed request")

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The frames, not the exception's message: it may quote the request's rows.
        frames = "".join(traceback.format_tb(exc.__traceback__))
        logger.error(
            "unhandled %s on %s:\n%s", type(exc).__name__, request.url.path, frames.rstrip()
        )
        return error_response(500, "internal", "internal error")

    app.add_exception_handler(FedwardenError, fedwarden_error)
    app.add_exception_handler(RequestValidationError, malformed)
    app.add_exception_handler(Exception, unexpected)


class _BodyTooLargeError(Exception):
    pass


class Instrumentation:
    """Pure ASGI middleware: refuses bodies over the limit (413) and records metrics."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = {"code": 500, "started": False}
        declared = _content_length(scope)

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(scope, counted_send)
        else:
            seen = 0

            async def limited_receive() -> Message:
                nonlocal seen
                message = await receive()
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise _BodyTooLargeError
                return message

            try:
                await self.app(scope, limited_receive, counted_send)
            except _BodyTooLargeError:
                if not status["started"]:
                    await self._too_large(scope, counted_send)
        self._observe(scope, int(status["code"]), time.perf_counter() - began)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "too_large",
                    "message": f"request body over {self.max_body_bytes} bytes",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        app = scope.get("app")
        metrics: ServiceMetrics | None = getattr(getattr(app, "state", None), "metrics", None)
        if metrics is None:
            return
        route = getattr(scope.get("route"), "path", "unmatched")
        metrics.requests.labels(
            route=route, method=scope.get("method", ""), status=str(status)
        ).inc()
        metrics.latency.labels(route=route).observe(seconds)
        if status >= 400:
            metrics.errors.labels(route=route, status=str(status)).inc()


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
