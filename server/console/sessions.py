"""Signed-in console sessions, kept in this process and found by a hash of their cookie.

Signing in exchanges an API key for a random session token: the browser holds
the token in an HTTP-only cookie, the server keeps only its SHA-256 with the
principal, the key's prefix, an expiry and the session's anti-forgery (CSRF)
token. Nothing here is written to the store, so a restart signs everyone out,
and a leaked database holds no session. The API key itself is never kept.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "fw_console"
SIGNIN_COOKIE = "fw_console_signin"


@dataclass(frozen=True, kw_only=True)
class ConsoleSession:
    """Who is signed in, with which key, until when, and the token their forms carry."""

    principal_id: int
    principal: str
    key_prefix: str
    csrf: str
    expires: float


def digest(token: str) -> str:
    """The SHA-256 (hex) under which a session token is kept."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens; ``False`` if either is missing."""
    return bool(a) and bool(b) and secrets.compare_digest(str(a), str(b))


class SessionStore:
    """Live sessions by token hash, the oldest dropped beyond ``max_sessions``."""

    def __init__(
        self, *, ttl_s: float, max_sessions: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.clock = clock
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, *, principal_id: int, principal: str, key_prefix: str) -> str:
        """Start a session; return the token for the cookie (shown to nobody else)."""
        token = secrets.token_urlsafe(32)
        session = ConsoleSession(
            principal_id=principal_id,
            principal=principal,
            key_prefix=key_prefix,
            csrf=secrets.token_urlsafe(32),
            expires=self.clock() + self.ttl_s,
        )
        with self._lock:
            self._sessions[digest(token)] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return token

    def get(self, token: str | None) -> ConsoleSession | None:
        """The live session of ``token``; an expired one is dropped."""
        if not token:
            return None
        key = digest(token)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and session.expires <= self.clock():
                del self._sessions[key]
                return None
        return session

    def end(self, token: str | None) -> ConsoleSession | None:
        """Sign out: forget the session; return it if there was one."""
        if not token:
            return None
        with self._lock:
            return self._sessions.pop(digest(token), None)
