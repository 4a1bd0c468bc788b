"""The coordinator's SuperLink process: Flower's own SuperLink app, its doors split in two.

Flower 1.41's ``flower-superlink`` serves its Fleet API (for SuperNodes), its
Control API (``flwr run``, ``flwr ls``) and its ServerAppIo runtime API (the
SuperExec and the ServerApp) on one port (``--host``/``--port``). Whoever
reaches that port with the CA certificate could list runs and start code on
the coordinator. This entry point builds the very same app with Flower's own
functions (``_parse_superlink_lifespan_config`` and ``create_app``, checked by
``tests/server/engine/test_superlink_entry.py``) and serves it on two sockets:

- the operator address (Flower's ``--host``/``--port``, loopback by default):
  every API; Flower's auto-started SuperExec and ``fedwarden run`` use it;
- the Fleet address (``--fleet-host``/``--fleet-port``, ours, taken off the
  command line before Flower reads it): what institutions reach; a request
  that arrived there may only use ``/v1/fleet/...`` (and ``/health``). Anything
  else gets 403 and one log line (``REFUSAL_MARK``) that the coordinator's
  ``RefusalWatcher`` audits as ``superlink.refused``.

A node whose key is revoked or unregistered while it is connected gets 401 from
Flower's node authentication with no line that names its key; ``audit_node_auth_refusals``
adds one (``NODE_REFUSAL_MARK``, with the public key the node signed with), which
``RefusalWatcher`` audits as ``node.refused`` with the key's institution.

With ``--wake-fifo FIFO`` (ours, like the Fleet flags) each reply and object a node
pushes writes a byte to that FIFO (``wake_on_replies``); the ServerApps that
``server.engine.fast_serverapp`` starts wait on it instead of polling blind, so a
SecAgg+ stage goes on as soon as its last reply is in. A wake carries nothing but its
occurrence; with several runs at once, one ServerApp may take another's wake and fall
back to its back-off poll.

It also throttles one piece of Flower's bookkeeping (``throttle_task_token_cleanup``):
its SQL state expires stale task tokens with two ``UPDATE`` statements before *every*
run-status read, and every Fleet request reads the run's status; at most once a second
is enough for tokens that live for tens of seconds, and it was a third of the
SuperLink's SQL time during a round.

Run as ``python -m server.engine.superlink_entry --fleet-host H --fleet-port P
[--wake-fifo FIFO] <flower-superlink arguments>``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from client.contract.errors import FlowerSeamError
from client.contract.polling import WakeChannel

logger = logging.getLogger(__name__)

FLEET_PREFIX = "/v1/fleet/"
OPEN_ON_FLEET = frozenset({"/health"})
REFUSAL_MARK = "fedwarden-refused"
NODE_REFUSAL_MARK = "fedwarden-node-refused"
# Flower starts legacy gRPC Control/Fleet servers (on their own ports) when these are "1".
_GRPC_SWITCHES = ("FLWR_INTERNAL_GRPC_CONTROL_API", "FLWR_INTERNAL_GRPC_FLEET_API")

ASGIApp = Any  # (scope, receive, send) -> Awaitable[None]


class FleetOnlyMiddleware:
    """Let requests that came in on the Fleet socket reach only the Fleet API.

    The socket a request came in on is ``scope["server"]``'s port (uvicorn sets
    it per connection from the listening socket's address), so the Fleet and the
    operator sockets must listen on different ports.
    """

    def __init__(self, app: ASGIApp, *, fleet_port: int) -> None:
        self.app = app
        self.fleet_port = fleet_port
        self.refused = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and self._on_fleet(scope):
            path = str(scope.get("path", ""))
            if not (path.startswith(FLEET_PREFIX) or path in OPEN_ON_FLEET):
                await self._refuse(scope, receive, send, path)
                return
        await self.app(scope, receive, send)

    def _on_fleet(self, scope: dict[str, Any]) -> bool:
        server = scope.get("server")
        return server is None or int(server[1]) == self.fleet_port

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any, path: str) -> None:
        client = scope.get("client") or ("unknown", 0)
        method = str(scope.get("method", "WEBSOCKET"))
        self.refused += 1
        logger.warning(
            "%s peer=%s method=%s path=%s", REFUSAL_MARK,
            quote(f"{client[0]}:{client[1]}", safe=":[]"), quote(method), quote(path, safe="/"),
        )  # fmt: skip
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = b'{"detail":"only the Fleet API is served on this address"}'
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


CLEANUP_MODULE = "flwr.supercore.corestate.sql_corestate"
CLEANUP_CLASS = "SqlCoreState"
CLEANUP_METHOD = "_cleanup_expired_task_tokens"
CLEANUP_INTERVAL_S = 1.0


def throttle_task_token_cleanup(interval_s: float = CLEANUP_INTERVAL_S) -> None:
    """Run Flower's ``SqlCoreState._cleanup_expired_task_tokens`` at most once per
    ``interval_s`` per state object (``FlowerSeamError`` if Flower moved it)."""
    module = importlib.import_module(CLEANUP_MODULE)
    owner = getattr(module, CLEANUP_CLASS, None)
    method = getattr(owner, CLEANUP_METHOD, None)
    if owner is None or method is None:
        raise FlowerSeamError(
            f"{CLEANUP_MODULE}.{CLEANUP_CLASS}.{CLEANUP_METHOD} is gone: the SuperLink's "
            "cleanup throttle was pinned to Flower 1.41"
        )
    if getattr(method, "_fedwarden_throttled", False):
        return
    lock = threading.Lock()

    @functools.wraps(method)
    def throttled(self: Any) -> None:
        now = time.monotonic()
        with lock:  # the time is kept on the state object itself (Flower keeps one)
            if now - getattr(self, "_fedwarden_cleaned_at", -math.inf) < interval_s:
                return
            self._fedwarden_cleaned_at = now
        method(self)

    throttled._fedwarden_throttled = True  # type: ignore[attr-defined]
    setattr(owner, CLEANUP_METHOD, throttled)


NODE_AUTH_MODULE = "flwr.superlink.routers.fleet.node_auth"
NODE_AUTH_FUNCTION = "authenticate_node"
_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def audit_node_auth_refusals() -> None:
    """Log one ``NODE_REFUSAL_MARK`` line for each Fleet request Flower's node
    authentication answers 401, naming the public key it claims (``signer=``, base64 of
    its PEM: public, and named so that secret redaction leaves it alone) and whether its
    signature verifies under that key (``verified=``: an outsider can claim any public
    key, but not sign with it) (``FlowerSeamError`` if Flower moved ``authenticate_node``)."""
    module = importlib.import_module(NODE_AUTH_MODULE)
    check = getattr(module, NODE_AUTH_FUNCTION, None)
    header = getattr(module, "FLEET_HTTP_PUBLIC_KEY_HEADER", None)
    names = ("NodeAuthMiddleware", "FLEET_HTTP_SIGNATURE_HEADER", "TIMESTAMP_HEADER")
    if check is None or header is None or not all(hasattr(module, n) for n in names):
        raise FlowerSeamError(
            f"{NODE_AUTH_MODULE}.{NODE_AUTH_FUNCTION} is gone: the audit of nodes refused "
            "mid-session was pinned to Flower 1.41"
        )
    if getattr(check, "_fedwarden_audited", False):
        return
    from fastapi import HTTPException

    @functools.wraps(check)
    def audited(request: Any) -> None:
        try:
            check(request)
        except HTTPException as exc:
            if exc.status_code == 401:
                key = str(request.headers.get(header, ""))[:1024]
                client = request.client or ("unknown", 0)
                logger.warning(
                    "%s peer=%s path=%s signer=%s verified=%s", NODE_REFUSAL_MARK,
                    quote(f"{client[0]}:{client[1]}", safe=":[]"),
                    quote(str(request.url.path)[:200], safe="/"),
                    key if key and set(key) <= _B64 else "-",
                    "yes" if _signed_by_claimed_key(request, module) else "no",
                )  # fmt: skip
            raise

    audited._fedwarden_audited = True  # type: ignore[attr-defined]
    setattr(module, NODE_AUTH_FUNCTION, audited)


def _signed_by_claimed_key(request: Any, module: Any) -> bool:
    """Whether the request's signature verifies under the public key it claims: only then
    does the refusal name that key's holder (anyone can claim a public key)."""
    import binascii
    from base64 import b64decode

    from flwr.supercore.primitives.asymmetric import bytes_to_public_key, verify_signature

    try:
        public_key = b64decode(request.headers[module.FLEET_HTTP_PUBLIC_KEY_HEADER], validate=True)
        signature = b64decode(request.headers[module.FLEET_HTTP_SIGNATURE_HEADER], validate=True)
        timestamp = request.headers[module.TIMESTAMP_HEADER]
        return bool(
            verify_signature(bytes_to_public_key(public_key), timestamp.encode("ascii"), signature)
        )
    except (KeyError, ValueError, TypeError, UnicodeError, binascii.Error):
        return False


FLEET_HANDLERS_MODULE = "flwr.superlink.servicer.fleet.fleet_handlers"
FLEET_ROUTER_MODULE = "flwr.superlink.routers.fleet.router"
WAKING_HANDLERS = ("push_messages", "push_object")


def wake_on_replies(wake: WakeChannel) -> None:
    """Notify ``wake`` after each Fleet ``push_messages`` and ``push_object`` that Flower
    handled (``FlowerSeamError`` if Flower moved them)."""
    module = importlib.import_module(FLEET_HANDLERS_MODULE)
    router = importlib.import_module(FLEET_ROUTER_MODULE)
    source = inspect.getsource(router)
    for name in WAKING_HANDLERS:
        handler = getattr(module, name, None)
        if handler is None or f"fleet_handlers.{name}(" not in source:
            raise FlowerSeamError(
                f"{FLEET_HANDLERS_MODULE}.{name} is gone or no longer called by the Fleet "
                "router: the ServerApp's wake was pinned to Flower 1.41"
            )
        if getattr(handler, "_fedwarden_wakes", False):
            continue

        def waking(*args: Any, _handler: Any = handler, **kwargs: Any) -> Any:
            reply = _handler(*args, **kwargs)
            wake.notify()
            return reply

        functools.update_wrapper(waking, handler)
        waking._fedwarden_wakes = True  # type: ignore[attr-defined]
        setattr(module, name, waking)


@dataclass(frozen=True)
class EntryArgs:
    """Our flags, taken out of the command line before Flower reads the rest."""

    fleet_host: str
    fleet_port: int
    wake_fifo: str | None
    flower_argv: list[str]


def split_argv(argv: Sequence[str]) -> EntryArgs:
    """Our flags (``--fleet-host``, ``--fleet-port``, ``--wake-fifo``) and Flower's."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--fleet-host", required=True)
    parser.add_argument("--fleet-port", type=int, required=True)
    parser.add_argument("--wake-fifo")
    known, rest = parser.parse_known_args(list(argv))
    return EntryArgs(known.fleet_host, known.fleet_port, known.wake_fifo, rest)


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket bound to ``host:port`` (IPv6 when ``host`` has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def main(argv: Sequence[str] | None = None) -> None:
    """Serve Flower's SuperLink app on the operator and the Fleet sockets until stopped."""
    import uvicorn
    from flwr.common.logger import console_handler
    from flwr.supercore.http_logging import get_uvicorn_log_config
    from flwr.superlink.cli.flower_superlink import (
        SuperLinkLifespan,
        _parse_superlink_lifespan_config,
    )
    from flwr.superlink.main import create_app

    entry = split_argv(sys.argv[1:] if argv is None else argv)
    fleet_host, fleet_port, flower_argv = entry.fleet_host, entry.fleet_port, entry.flower_argv
    throttle_task_token_cleanup()
    audit_node_auth_refusals()
    if entry.wake_fifo:
        wake_on_replies(WakeChannel(entry.wake_fifo))
    for name in _GRPC_SWITCHES:
        os.environ.pop(name, None)
    # Flower starts its SuperExec as `flower-superexec` from PATH: this install's own.
    bin_dir = os.path.dirname(sys.executable)
    os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    sys.argv = [sys.argv[0], *flower_argv]  # Flower's parser reads sys.argv
    config = _parse_superlink_lifespan_config()
    if int(config.port) == fleet_port:
        raise SystemExit(
            f"the operator port ({config.port}) and the Fleet port ({fleet_port}) must differ"
        )
    app = FleetOnlyMiddleware(create_app(config, SuperLinkLifespan), fleet_port=fleet_port)
    sockets = [bind(config.host, int(config.port)), bind(fleet_host, fleet_port)]
    logger.info(
        "operator APIs on %s:%s; only the Fleet API on %s:%s",
        config.host, config.port, fleet_host, fleet_port,
    )  # fmt: skip
    server = uvicorn.Server(
        uvicorn.Config(
            app=app,
            reload=False,
            access_log=True,
            log_config=get_uvicorn_log_config(console_handler.level),
            ssl_keyfile=config.ssl_keyfile,
            ssl_certfile=config.ssl_certfile,
            workers=1,
        )
    )
    server.run(sockets=sockets)


if __name__ == "__main__":
    main()
