"""Audited access to the audit log: verify, export, tail, and sign its head.

Reading the log is itself on the record: each call here appends an event
saying who verified, exported, read or signed it, and what they found.
"""

from __future__ import annotations

from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from server.errors import AuditChainError
from server.store import anchoring, audit, rbac
from server.store.anchoring import Receipt
from server.store.audit import ChainReport
from server.store.models import Principal

_TARGET = "audit-log"


def verify_audit_log(
    *,
    session: Session,
    actor: Principal,
    receipt: Receipt | None = None,
    public_key: str | None = None,
) -> ChainReport:
    """Walk the chain (needs ``audit:read``) and record what was found.

    A broken chain is reported, not raised, so that the finding is committed
    to the log; the caller raises ``AuditChainError`` after the commit.

    Parameters
    ----------
    receipt : Receipt, optional
        A signed receipt from ``sign_audit_head``: its signature must hold (made
        with ``public_key``, if given), and the chain must still contain its event.

    Raises
    ------
    AuditChainError
        The receipt's signature is invalid (audited as a failure).
    """
    actor_name = actor.name
    rbac.authorize(session, principal=actor, permission="audit:read", target=_TARGET)
    anchor = None
    if receipt is not None:
        try:
            anchoring.verify_receipt(receipt, public_key=public_key)
        except AuditChainError as exc:
            raise audit.record_refusal(
                session,
                error=exc,
                actor=actor_name,
                action="audit.verify",
                target=_TARGET,
                outcome="failure",
                details={"receipt_seq": receipt.seq},
            ) from None
        anchor = (receipt.seq, receipt.head_hash)
    report = audit.verify_chain(session, anchor=anchor)
    details: dict[str, Any] = {"events": report.events, "head": report.head_hash}
    if report.broken is not None:
        details["broken_seq"], details["reason"] = report.broken.seq, report.broken.reason
    audit.append(
        session,
        actor=actor_name,
        action="audit.verify",
        target=_TARGET,
        outcome="failure" if report.broken else "success",
        details=details,
    )
    return report


def export_audit_log(*, session: Session, actor: Principal, out: TextIO) -> int:
    """Write every event as JSON Lines to ``out`` (needs ``audit:read``); return the count."""
    actor_name = actor.name
    rbac.authorize(session, principal=actor, permission="audit:read", target=_TARGET)
    count = audit.export_jsonl(session, out)
    audit.append(
        session, actor=actor_name, action="audit.export", target=_TARGET, details={"events": count}
    )
    return count


def tail_audit_log(*, session: Session, actor: Principal, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` events, oldest first (needs ``audit:read``)."""
    actor_name = actor.name
    rbac.authorize(session, principal=actor, permission="audit:read", target=_TARGET)
    events = audit.tail(session, limit=limit)
    audit.append(
        session,
        actor=actor_name,
        action="audit.tail",
        target=_TARGET,
        details={"events": len(events)},
    )
    return events


def sign_audit_head(
    *, session: Session, actor: Principal, private_key: Ed25519PrivateKey
) -> Receipt:
    """Sign the log's head with the coordinator's key (needs ``audit:checkpoint``).

    The signing is recorded as the next event, after the one the receipt names.
    """
    actor_name = actor.name
    rbac.authorize(session, principal=actor, permission="audit:checkpoint", target=_TARGET)
    receipt = anchoring.checkpoint(session, private_key)
    audit.append(
        session,
        actor=actor_name,
        action="audit.checkpoint",
        target=_TARGET,
        details={"seq": receipt.seq, "head": receipt.head_hash, "public_key": receipt.public_key},
    )
    return receipt
