"""API keys: ``fw_<prefix>_<secret>`` tokens kept only as salted scrypt hashes.

The prefix (12 hex characters) is stored in the clear to find the key; the
secret (256 random bits) is hashed with scrypt and a per-key salt and compared
in constant time. A prefix that names no key is refused before any scrypt
(so a flood of made-up keys costs an index lookup each); that a prefix exists
is not a secret, the 256-bit secret behind it is. A token is shown once, when
it is issued, and never logged or stored. ``authenticate`` gives every failure
the same message; the specific reason (malformed, unknown, wrong, revoked,
expired) goes to the audit log.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.errors import AuthenticationError
from server.store import audit
from server.store.models import ApiKey, Principal, utcnow

logger = logging.getLogger(__name__)

TOKEN_TAG = "fw"
SCHEME = "scrypt:n=16384,r=8,p=1"
_SCRYPT = {"n": 16384, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}
_PREFIX_BYTES = 6
_SECRET_BYTES = 32
CREDENTIAL = "fedwarden.credential"
"""``session.info`` key: the key that authenticated the session's principal, for the audit log."""
_GENERIC_FAILURE = "authentication failed: the API key is missing, wrong, revoked or expired"


def new_key(*, principal: Principal, expires_at: datetime | None = None) -> tuple[str, ApiKey]:
    """A fresh token and the row that stores its hash (not yet added to a session).

    Returns
    -------
    (str, ApiKey)
        The token, to be shown to its owner once, and the row.
    """
    prefix = secrets.token_hex(_PREFIX_BYTES)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    salt = secrets.token_hex(16)
    row = ApiKey(
        principal_id=principal.id,
        prefix=prefix,
        scheme=SCHEME,
        salt=salt,
        secret_hash=hash_secret(secret, salt=salt),
        expires_at=expires_at,
    )
    return f"{TOKEN_TAG}_{prefix}_{secret}", row


def hash_secret(secret: str, *, salt: str) -> str:
    """scrypt of the secret with the given hex salt, hex-encoded."""
    return hashlib.scrypt(secret.encode("utf-8"), salt=bytes.fromhex(salt), **_SCRYPT).hex()


def split_token(token: str) -> tuple[str, str] | None:
    """``(prefix, secret)`` of a well-formed token, else ``None``."""
    tag, _, rest = token.strip().partition("_")
    prefix, _, secret = rest.partition("_")
    well_formed = (
        tag == TOKEN_TAG
        and len(prefix) == 2 * _PREFIX_BYTES
        and all(c in "0123456789abcdef" for c in prefix)
        and len(secret) >= 16
    )
    return (prefix, secret) if well_formed else None


def authenticate(session: Session, token: str | None, *, audit_failures: bool = True) -> Principal:
    """The principal that owns ``token``; otherwise audit the failure and raise.

    Parameters
    ----------
    session : Session
        The caller's transaction; on failure it is rolled back and the failed
        attempt is committed to the audit log in a transaction of its own.
    token : str or None
        The API key as presented.
    audit_failures : bool
        Write each failure to the audit log (the default). A service that
        audits failures as counts per interval passes ``False``; the failure's
        reason is then only on the error (``error.context["reason"]``).

    Raises
    ------
    AuthenticationError
        The token is missing, malformed, unknown, wrong, revoked or expired
        (one message for all; the reason is in the audit event).
    """
    fail = functools.partial(_failure, session, audited=audit_failures)
    parts = split_token(token or "")
    if parts is None:
        raise fail(reason="missing" if not token else "malformed", prefix=None)
    prefix, secret = parts
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()
    if row is None:  # no scrypt for a prefix that names no key: failures stay cheap
        raise fail(reason="unknown key", prefix=prefix)
    presented = hash_secret(secret, salt=row.salt)
    owner = session.get_one(Principal, row.principal_id)
    now = utcnow()
    if not hmac.compare_digest(presented, row.secret_hash):
        raise fail(reason="wrong secret", prefix=prefix, owner=owner.name)
    if row.revoked_at is not None:
        raise fail(reason="revoked", prefix=prefix, owner=owner.name)
    if row.expires_at is not None and row.expires_at <= now:
        raise fail(reason="expired", prefix=prefix, owner=owner.name)
    row.last_used_at = now
    session.info[CREDENTIAL] = {
        "principal": owner.name,
        "via_key": row.prefix,
        "key_issuer": row.issued_by,
    }
    return owner


def live_key_owner(session: Session, *, prefix: str) -> Principal | None:
    """The owner of the key with ``prefix`` if that key is still valid (not revoked, not
    expired), else ``None``: for sessions that were opened with the key and must end with it."""
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= utcnow():
        return None
    return session.get(Principal, row.principal_id)


def _failure(
    session: Session,
    *,
    reason: str,
    prefix: str | None,
    owner: str | None = None,
    audited: bool = True,
) -> AuthenticationError:
    logger.info("authentication failed (%s) for key prefix %s", reason, prefix)
    error = AuthenticationError(_GENERIC_FAILURE, reason=reason, prefix=prefix)
    if not audited:
        session.rollback()
        return error
    details = {"reason": reason, "prefix": prefix, "key_owner": owner}
    audit.record_refusal(
        session,
        error=error,
        actor="anonymous",
        action="authenticate",
        target=f"key:{prefix}" if prefix else None,
        outcome="failure",
        details=details,
    )
    return error
