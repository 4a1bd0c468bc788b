"""The inference service's app factory: FastAPI over onnxruntime, keys from the store.

``create_app(settings)`` builds everything once (store, models, key cache,
metrics) and tears it down on shutdown. fedwarden's errors become JSON
responses in one place (``register_error_handlers``); no client input can
produce a 5xx.
"""

from __future__ import annotations

import functools
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
from starlette.exceptions import HTTPException as StarletteHTTPException

from deploy.docs import mount_docs
from deploy.errors import InvalidRequestError, RateLimitedError, ServingError
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
    (RateLimitedError, 429, "rate_limited"),
    (AuthenticationError, 401, "unauthenticated"),
    (PermissionDeniedError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (ConfigError, 422, "invalid"),
    (StoreUnavailableError, 503, "unavailable"),
    (ServingError, 503, "unavailable"),
]


_MAX_SERIES = 4096  # labelled metric series kept looked-up (routes × methods × statuses)

HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated",
              403: "forbidden", 413: "too_large"}  # fmt: skip


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

    _redact_access_log()
    docs = settings.public_docs
    app = FastAPI(
        docs_url=None,  # served from the package's own Swagger UI files (deploy.docs)
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        title="fedwarden inference API",
        version="1.0",
        description=(
            "Predictions from models trained by a fedwarden federation. Rows go in by "
            "feature name, in the schema's own units; `GET /v1/models` lists the features. "
            "Authenticate with `Authorization: Bearer <API key>`."
        ),
        lifespan=lifespan,
    )
    if docs:
        mount_docs(app)
    app.include_router(models_router)
    app.include_router(health_router)
    register_error_handlers(app)
    app.add_middleware(AuthScreen)  # type: ignore[arg-type]
    app.add_middleware(Instrumentation, max_body_bytes=settings.max_body_bytes)  # type: ignore[arg-type]
    return app


class RedactQuery(logging.Filter):
    """Drops query strings from uvicorn's access log: a key sent as ``?api_key=`` (refused
    anyway) must not land in a log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, question, _ = args[2].partition("?")
            if question:
                record.args = (*args[:2], f"{path}?[redacted]", *args[3:])
        return True


def _redact_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQuery) for f in access.filters):
        access.addFilter(RedactQuery())


def create_app_from_environment() -> FastAPI:
    """Factory for uvicorn workers (``deploy.api:create_app_from_environment``)."""
    return create_app(ServeSettings())


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


def register_error_handlers(app: FastAPI) -> None:
    """fedwarden's errors (and malformed bodies) as JSON ``{"error": {code, message}}``."""

    async def fedwarden_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, InvalidRequestError):
            return error_response(exc.status_code, exc.code, exc.message)
        assert isinstance(exc, FedwardenError)
        for kind, status, code in STATUS:
            if isinstance(exc, kind):
                response = error_response(status, code, exc.message)
                if isinstance(exc, RateLimitedError):
                    response.headers["Retry-After"] = str(exc.retry_after_s)
                return response
        logger.error("unexpected fedwarden error on %s: %s", request.url.path, exc)
        return error_response(500, "internal", "internal error")

    async def malformed(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = []
        if any(error.get("type") == "json_invalid" for error in exc.errors()):
            return error_response(422, "invalid_request", "body: not valid JSON")
        for error in exc.errors()[:5]:
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(problems) or "malformed request")

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's own answers (no such route, method not allowed) in the same format.
        assert isinstance(exc, StarletteHTTPException)
        code = HTTP_CODES.get(exc.status_code, "error")
        response = error_response(exc.status_code, code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The frames, not the exception's message: it may quote the request's rows.
        frames = "".join(traceback.format_tb(exc.__traceback__))
        logger.error(
            "unhandled %s on %s:\n%s", type(exc).__name__, request.url.path, frames.rstrip()
        )
        return error_response(500, "internal", "internal error")

    app.add_exception_handler(FedwardenError, fedwarden_error)
    app.add_exception_handler(RequestValidationError, malformed)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


class Instrumentation:
    """Pure ASGI middleware: refuses bodies over the limit (413) and records metrics."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._cache: dict[tuple[int, str, str, int], tuple[Any, Any, Any]] = {}

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
            # A body without a length (chunked) is counted as it arrives; past the limit the
            # app is handed an end of body, and whatever it answers is replaced by a 413.
            seen, overflow = 0, False

            async def limited_receive() -> Message:
                nonlocal seen, overflow
                if overflow:
                    return {"type": "http.request", "body": b"", "more_body": False}
                message = await receive()
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    overflow = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                return message

            async def guarded_send(message: Message) -> None:
                if not overflow:
                    await counted_send(message)
                elif message["type"] == "http.response.start":
                    await self._too_large(scope, counted_send)

            await self.app(scope, limited_receive, guarded_send)
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
        requests, latency, errors = self._series(metrics, route, scope.get("method", ""), status)
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def _series(
        self, metrics: ServiceMetrics, route: str, method: str, status: int
    ) -> tuple[Any, Any, Any]:
        """The labelled series of one (route, method, status), looked up once: under a flood
        of refused requests ``labels()`` was most of the cost of counting them."""
        key = (id(metrics), route, method, status)
        series = self._cache.get(key)
        if series is None:
            code = str(status)
            series = (
                metrics.requests.labels(route=route, method=method, status=code),
                metrics.latency.labels(route=route),
                metrics.errors.labels(route=route, status=code) if status >= 400 else None,
            )
            if len(self._cache) < _MAX_SERIES:
                self._cache[key] = series
        return series


class AuthScreen:
    """Pure ASGI middleware: refuses missing, malformed and rate-limited keys before routing.

    Under a flood of keyless or wrong-key requests each refusal costs a header
    parse and a counter, not FastAPI's routing, dependencies and exception
    handlers; what passes is checked again, fully, by the route's dependency.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = getattr(getattr(scope.get("app"), "state", None), "service", None)
        if scope["type"] != "http" or service is None or not _protected(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        authorization = next(
            (v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"authorization"),
            None,
        )
        client = scope.get("client")
        try:
            service.authenticator.screen(authorization, client=client[0] if client else "unknown")
        except RateLimitedError as exc:
            await _send_error(send, 429, "rate_limited", exc.message, exc.retry_after_s)
            return
        except AuthenticationError as exc:
            await _send_error(send, 401, "unauthenticated", exc.message, None)
            return
        await self.app(scope, receive, send)


def _protected(path: str) -> bool:
    return path.startswith("/v1/")


async def _send_error(
    send: Send, status: int, code: str, message: str, retry_after_s: int | None
) -> None:
    headers, body = _refusal(status, code, message, retry_after_s)
    # fresh message dicts: a middleware may add headers to what it forwards
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


@functools.lru_cache(maxsize=256)
def _refusal(
    status: int, code: str, message: str, retry_after_s: int | None
) -> tuple[tuple[tuple[bytes, bytes], ...], bytes]:
    """The headers and body of one refusal, built once per kind (a flood repeats them)."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if retry_after_s is not None:
        headers.append((b"retry-after", str(retry_after_s).encode()))
    return tuple(headers), body


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
