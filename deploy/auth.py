"""Who is calling: API keys from the governance store, checked once and then cached.

Checking a key costs a salted scrypt hash (tens of milliseconds, on purpose);
the service keeps each verified key's identity and permissions for
``ttl_s`` seconds, keyed by the key's SHA-256 (never the key itself), so a
revoked key or a revoked role stops working within that time. Failed
authentications and denied permissions always reach the store's audit log.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from server.errors import AuthenticationError
from server.store import repository as repo
from server.store.engine import Store
from server.store.keys import split_token
from server.store.models import Principal
from server.store.rbac import permissions_of

SERVICE_ACTOR = "inference-service"
_MAX_CACHED = 10_000


@dataclass(frozen=True)
class Identity:
    principal: str
    principal_id: int
    key_prefix: str
    permissions: frozenset[str]


class Authenticator:
    """Turns ``Authorization: Bearer <key>`` into an ``Identity``; checks permissions."""

    def __init__(
        self, store: Store, *, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache: OrderedDict[str, tuple[float, Identity]] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, authorization: str | None) -> Identity | None:
        """The identity of a key verified less than ``ttl_s`` ago, else ``None``."""
        token = _bearer(authorization)
        if not token:
            return None
        entry = self._cache.get(hashlib.sha256(token.encode()).hexdigest())
        return entry[1] if entry is not None and entry[0] > self.clock() else None

    def identify(self, authorization: str | None) -> Identity:
        """The key's identity: from the cache, or checked against the store (audited on failure)."""
        cached = self.cached(authorization)
        if cached is not None:
            return cached
        token = _bearer(authorization)
        digest = hashlib.sha256(token.encode()).hexdigest() if token else ""
        now = self.clock()
        with self.store.session() as session:
            principal = repo.authenticate(session, token)  # audits and raises on failure
            identity = Identity(
                principal=principal.name,
                principal_id=principal.id,
                key_prefix=(split_token(token or "") or ("", ""))[0],
                permissions=permissions_of(session, principal=principal),
            )
        if self.ttl_s > 0:
            with self._lock:
                self._cache[digest] = (now + self.ttl_s, identity)
                self._cache.move_to_end(digest)
                while len(self._cache) > _MAX_CACHED:
                    self._cache.popitem(last=False)
        return identity

    def require(self, identity: Identity, permission: str, *, target: str) -> None:
        """Return if ``identity`` holds ``permission``; else audit the denial and raise."""
        if permission in identity.permissions:
            return
        with self.store.session() as session:
            principal = session.get(Principal, identity.principal_id)
            if principal is None:
                raise AuthenticationError("invalid or missing API key")
            repo.authorize(session, principal=principal, permission=permission, target=target)


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
                from server.store import audit

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
