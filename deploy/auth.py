"""Who is calling: API keys from the governance store, revocations seen on the next request.

Checking a key costs a salted scrypt hash (tens of milliseconds, on purpose),
so the service keeps each verified key's identity and permissions, keyed by
the key's SHA-256 (never the key itself), for at most ``ttl_s`` seconds and
never past the key's expiry. Every request reads the store's revocation
generation (``server.store.revocation``: one primary-key read, no lock); when
it has moved (a key, role or node key was revoked) the whole cache is dropped,
so a revoked key or role is refused on its very next request.

Failures are cheap and counted, not written one by one: a missing or malformed
key never reaches the store, an unknown prefix never reaches scrypt, and
``FailureLimiter`` answers clients that keep failing (and everyone without a
known-good key, when failures pile up overall) with 429 and ``Retry-After``.
Failures and refusals go to the audit log as counts per interval
(``authenticate.failures``), one event per interval however many there were.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from deploy.errors import RateLimitedError
from server.errors import AuthenticationError
from server.store import audit, revocation
from server.store import repository as repo
from server.store.engine import Store
from server.store.keys import split_token
from server.store.models import ApiKey, Principal, utcnow
from server.store.rbac import permissions_of

SERVICE_ACTOR = "inference-service"
_MAX_CACHED = 10_000
_MAX_CLIENTS_REPORTED = 20


@dataclass(frozen=True)
class Identity:
    principal: str
    principal_id: int
    key_prefix: str
    permissions: frozenset[str]
    expires_at: datetime | None = None


class FailureLimiter:
    """Counts failed authentications per client and in total, and says who must wait.

    A client with ``per_client`` failures within ``window_s`` is refused (429)
    until the window ends; when more than ``total_per_s`` failures arrive in one
    second from everyone together, every request without a known-good key is
    refused until the next second. The counts since the last ``flush`` are
    written to the audit log as one event.
    """

    def __init__(
        self,
        *,
        per_client: int = 20,
        window_s: float = 10.0,
        total_per_s: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_client = per_client
        self.window_s = window_s
        self.total_per_s = total_per_s
        self.clock = clock
        self._clients: dict[str, tuple[float, int]] = {}
        self._second = (0, 0)
        self._reasons: Counter[str] = Counter()
        self._by_client: Counter[str] = Counter()
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Raise ``RateLimitedError`` if ``client`` must wait; counts the refusal."""
        now = self.clock()
        with self._lock:
            start, failures = self._clients.get(client, (now, 0))
            wait = 0.0
            if now - start < self.window_s and failures >= self.per_client:
                wait = self.window_s - (now - start)
            elif self._second[0] == int(now) and self._second[1] >= self.total_per_s:
                wait = 1.0 - (now - int(now))
            if wait <= 0:
                return
            self._reasons["rate limited"] += 1
            self._by_client[client] += 1
        raise RateLimitedError(
            "too many failed authentications; retry later",
            retry_after_s=max(1, math.ceil(wait)),
        )

    def record(self, client: str, reason: str) -> None:
        """Count one failed authentication from ``client``."""
        now = self.clock()
        with self._lock:
            start, failures = self._clients.get(client, (now, 0))
            if now - start >= self.window_s:
                start, failures = now, 0
            self._clients[client] = (start, failures + 1)
            if len(self._clients) > _MAX_CACHED:
                self._forget_old(now)
            second, count = self._second
            self._second = (int(now), count + 1 if second == int(now) else 1)
            self._reasons[reason] += 1
            self._by_client[client] += 1

    def _forget_old(self, now: float) -> None:
        for client in [c for c, (s, _) in self._clients.items() if now - s >= self.window_s]:
            del self._clients[client]

    def flush(self, store: Store, *, interval_s: float) -> int:
        """Write the counts since the last flush as one audit event; return how many."""
        with self._lock:
            reasons, clients = self._reasons, self._by_client
            self._reasons, self._by_client = Counter(), Counter()
        total = sum(reasons.values())
        if total == 0:
            return 0
        try:
            with store.session() as session:
                audit.append(
                    session,
                    actor="anonymous",
                    action="authenticate.failures",
                    target="inference-api",
                    outcome="failure",
                    details={
                        "interval_s": interval_s,
                        "total": total,
                        "by_reason": dict(reasons),
                        "top_clients": dict(clients.most_common(_MAX_CLIENTS_REPORTED)),
                        "clients": len(clients),
                    },
                )
        except Exception:
            with self._lock:  # keep the counts for the next flush
                self._reasons.update(reasons)
                self._by_client.update(clients)
            raise
        return total


class Authenticator:
    """Turns ``Authorization: Bearer <key>`` into an ``Identity``; checks permissions."""

    def __init__(
        self,
        store: Store,
        *,
        ttl_s: float,
        limiter: FailureLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.clock = clock
        self.limiter = limiter or FailureLimiter()
        self._cache: OrderedDict[str, tuple[float, Identity]] = OrderedDict()
        self._good: OrderedDict[str, None] = OrderedDict()  # keys once verified, past the TTL
        self._generation: int | None = None
        self._lock = threading.Lock()

    def known(self, authorization: str | None) -> bool:
        """Whether this key was verified before and not refused since (no store access).

        Such a key is never rate-limited: a good client sharing an address with a
        flood keeps working when its cache entry times out.
        """
        token = _bearer(authorization)
        return bool(token) and _digest(token or "") in self._good

    def screen(self, authorization: str | None, *, client: str = "unknown") -> None:
        """The checks that need no store: known-good keys pass, the rest are rate-limited and
        a missing or malformed key is refused, all without leaving the event loop.

        Raises
        ------
        RateLimitedError, AuthenticationError
            As ``identify``.
        """
        if self.known(authorization):
            return
        token = _bearer(authorization)
        self.limiter.check(client)
        if not token or split_token(token) is None:
            self.limiter.record(client, "missing" if not token else "malformed")
            raise AuthenticationError("authentication failed: the API key is missing or malformed")

    def identify(self, authorization: str | None, *, client: str = "unknown") -> Identity:
        """The key's identity, with revocations up to this instant applied.

        Raises
        ------
        RateLimitedError
            The client (or everyone) failed too often; nothing was checked.
        AuthenticationError
            The key is missing, malformed, unknown, wrong, revoked or expired.
        """
        token = _bearer(authorization)
        digest = _digest(token) if token else ""
        if digest and digest in self._cache:
            self._sync_generation()
            identity = self._cached(digest)
            if identity is not None:
                return identity
        if not self.known(authorization):
            self.limiter.check(client)
        if not token or split_token(token) is None:
            self.limiter.record(client, "missing" if not token else "malformed")
            raise AuthenticationError("authentication failed: the API key is missing or malformed")
        generation = self._sync_generation()
        try:
            with self.store.session() as session:
                principal = repo.authenticate(session, token, audit_failures=False)
                prefix = (split_token(token) or ("", ""))[0]
                row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one()
                identity = Identity(
                    principal=principal.name,
                    principal_id=principal.id,
                    key_prefix=prefix,
                    permissions=permissions_of(session, principal=principal),
                    expires_at=row.expires_at,
                )
        except AuthenticationError as exc:
            with self._lock:
                self._good.pop(digest, None)  # revoked or expired: rate-limited from now on
            self.limiter.record(client, str(exc.context.get("reason", "failed")))
            raise
        with self._lock:
            self._good[digest] = None
            self._good.move_to_end(digest)
            while len(self._good) > _MAX_CACHED:
                self._good.popitem(last=False)
        if self.ttl_s > 0:
            with self._lock:
                if self._generation == generation:  # not if a revocation came meanwhile
                    self._cache[digest] = (self.clock() + self.ttl_s, identity)
                    self._cache.move_to_end(digest)
                    while len(self._cache) > _MAX_CACHED:
                        self._cache.popitem(last=False)
        return identity

    def _cached(self, digest: str) -> Identity | None:
        with self._lock:
            entry = self._cache.get(digest)
            if entry is None:
                return None
            deadline, identity = entry
            expired = identity.expires_at is not None and identity.expires_at <= utcnow()
            if deadline <= self.clock() or expired:
                del self._cache[digest]
                return None
            return identity

    def _sync_generation(self) -> int:
        """Read the store's revocation generation; drop the cache if it moved."""
        generation = revocation.read_generation(self.store.engine)
        with self._lock:
            if generation != self._generation:
                self._cache.clear()
                self._generation = generation
        return generation

    def require(self, identity: Identity, permission: str, *, target: str) -> None:
        """Return if ``identity`` holds ``permission``; else audit the denial and raise."""
        if permission in identity.permissions:
            return
        with self.store.session() as session:
            principal = session.get(Principal, identity.principal_id)
            if principal is None:
                raise AuthenticationError("invalid or missing API key")
            repo.authorize(session, principal=principal, permission=permission, target=target)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else authorization


class UsageCounter:
    """Successful predictions per API key, written to the audit log in batches."""

    def __init__(self) -> None:
        self._requests: Counter[str] = Counter()
        self._rows: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, identity: Identity, *, rows: int) -> None:
        with self._lock:
            self._requests[identity.key_prefix] += 1
            self._rows[identity.key_prefix] += rows

    def pending(self) -> int:
        """Requests counted since the last flush."""
        with self._lock:
            return sum(self._requests.values())

    def flush(self, store: Store) -> int:
        """Write the counts since the last flush as one audit event; return requests counted."""
        with self._lock:
            requests, rows = self._requests, self._rows
            self._requests, self._rows = Counter(), Counter()
        if not requests:
            return 0
        usage = {
            prefix: {"requests": requests[prefix], "rows": rows[prefix]} for prefix in requests
        }
        try:
            with store.session() as session:
                audit.append(
                    session,
                    actor=SERVICE_ACTOR,
                    action="predict.usage",
                    target="inference-api",
                    details={"keys": usage},
                )
        except Exception:
            with self._lock:  # keep the counts for the next flush
                self._requests.update(requests)
                self._rows.update(rows)
            raise
        return sum(requests.values())
