"""Node keys: which SuperNodes may join the federation, and who was turned away.

An institution registers its node's public key (``node:register`` for its own
institution, or ``institution:manage``); the coordinator pushes every active
key to its SuperLink, which refuses any node whose key it does not know.
Registration, revocation and each refusal the coordinator sees are audited.
Only public keys are stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from privacy.errors import ConfigError, FedwardenError
from privacy.pki import check_node_public_key, fingerprint
from server.errors import ConflictError, NotFoundError
from server.store import audit, rbac, revocation
from server.store.governance import check_name, ensure_institution, find_institution
from server.store.models import Institution, NodeKey, Principal, utcnow


@dataclass(frozen=True, kw_only=True)
class NodeKeyInfo:
    """A registered node key as listings show it."""

    institution: str
    public_key: str
    fingerprint: str
    created_at: datetime
    created_by: str
    revoked: bool


def register_node_key(
    *, session: Session, actor: Principal, institution: str, public_key: str
) -> NodeKeyInfo:
    """Register ``public_key`` (one OpenSSH line) as a node of ``institution``.

    Needs ``node:register`` for the principal's own institution, or
    ``institution:manage`` (which also adds an institution that is not yet a
    member). Audited as ``node.register``.

    Raises
    ------
    ConfigError
        The key is not an ECDSA OpenSSH public key Flower accepts.
    ConflictError
        The key is registered already.
    PermissionDeniedError
        The principal may not register nodes for ``institution``.
    """
    actor_name = actor.name
    name = check_name(institution, kind="institution")
    manager = rbac.has_permission(session, principal=actor, permission="institution:manage")
    target = f"institution:{name}"
    if not manager:
        rbac.authorize(
            session, principal=actor, permission="node:register", target=target, institution=name
        )
    try:
        key = check_node_public_key(public_key)
        digest = fingerprint(key)
        if _find(session, digest) is not None:
            raise ConflictError(f"node key {digest} is registered already", fingerprint=digest)
        if manager:
            member = ensure_institution(session=session, actor_name=actor_name, name=name)
        else:
            found = find_institution(session=session, name=name)
            if found is None:  # pragma: no cover - authorize checked the membership
                raise NotFoundError(f"institution {name!r} is not a member", institution=name)
            member = found
    except FedwardenError as exc:
        raise audit.record_refusal(
            session,
            error=exc,
            actor=actor_name,
            action="node.register",
            target=target,
            outcome="error",
        ) from None
    row = NodeKey(
        institution_id=member.id, public_key=key, fingerprint=digest, created_by=actor_name
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        actor=actor_name,
        action="node.register",
        target=f"node:{digest}",
        details={"institution": name, "fingerprint": digest, "key_type": key.split()[0]},
    )
    return _info(row, name)


def revoke_node_keys(
    *, session: Session, actor: Principal, name_or_fingerprint: str
) -> list[NodeKeyInfo]:
    """Revoke one node key by fingerprint (``SHA256:...``), or every active key of an institution.

    Raises
    ------
    NotFoundError
        No key has that fingerprint and no institution that name with an active key.
    """
    if name_or_fingerprint.startswith("SHA256:"):
        return [revoke_node_key(session=session, actor=actor, fingerprint_=name_or_fingerprint)]
    member = find_institution(session=session, name=name_or_fingerprint)
    rows = []
    if member is not None:
        rows = list(
            session.scalars(
                select(NodeKey).where(
                    NodeKey.institution_id == member.id, NodeKey.revoked_at.is_(None)
                )
            )
        )
    if not rows:
        raise audit.record_refusal(
            session,
            error=NotFoundError(
                f"no node key with fingerprint or active key of an institution named "
                f"{name_or_fingerprint!r}",
                name=name_or_fingerprint,
            ),
            actor=actor.name,
            action="node.revoke",
            target=f"institution:{name_or_fingerprint}",
            outcome="error",
        )
    return [
        revoke_node_key(session=session, actor=actor, fingerprint_=row.fingerprint) for row in rows
    ]


def revoke_node_key(*, session: Session, actor: Principal, fingerprint_: str) -> NodeKeyInfo:
    """Revoke the node key with this fingerprint (same permissions as registering it)."""
    actor_name, target = actor.name, f"node:{fingerprint_}"
    row = _find(session, fingerprint_)
    if row is None:
        raise audit.record_refusal(
            session,
            error=NotFoundError(f"no node key {fingerprint_}", fingerprint=fingerprint_),
            actor=actor_name,
            action="node.revoke",
            target=target,
            outcome="error",
        )
    name = session.get_one(Institution, row.institution_id).name
    if not rbac.has_permission(session, principal=actor, permission="institution:manage"):
        rbac.authorize(
            session, principal=actor, permission="node:register", target=target, institution=name
        )
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        revocation.bump(session)
        audit.append(
            session,
            actor=actor_name,
            action="node.revoke",
            target=target,
            details={"institution": name},
        )
    return _info(row, name)


def active_node_keys(*, session: Session) -> list[NodeKeyInfo]:
    """Every registered, unrevoked node key: what the coordinator pushes to its SuperLink.

    Not a principal's read: the coordinator process itself asks, on start.
    """
    rows = session.execute(
        select(NodeKey, Institution.name)
        .join(Institution, Institution.id == NodeKey.institution_id)
        .where(NodeKey.revoked_at.is_(None))
        .order_by(NodeKey.id)
    ).all()
    return [_info(row, name) for row, name in rows]


def list_node_keys(*, session: Session, actor: Principal) -> list[NodeKeyInfo]:
    """Every node key, revoked ones included (``principal:read``)."""
    rbac.authorize(session, principal=actor, permission="principal:read", target="node-keys")
    rows = session.execute(
        select(NodeKey, Institution.name)
        .join(Institution, Institution.id == NodeKey.institution_id)
        .order_by(NodeKey.id)
    ).all()
    return [_info(row, name) for row, name in rows]


def record_node_refusal(
    *,
    session: Session,
    reason: str,
    public_key: str | None = None,
    source: str = "superlink",
    peer: str | None = None,
) -> None:
    """Audit a node the coordinator turned away (``node.refused``, outcome ``denied``).

    ``public_key`` (OpenSSH form), when the refusal names one, is fingerprinted
    and matched to a registered (perhaps revoked) key; ``peer`` is its address.
    """
    details: dict[str, str | None] = {"reason": reason, "source": source}
    if peer is not None:
        details["peer"] = peer
    target = "node:unknown"
    if public_key is not None:
        try:
            digest = fingerprint(public_key)
        except ConfigError:
            digest = None
        if digest is not None:
            target = f"node:{digest}"
            details["fingerprint"] = digest
            row = _find(session, digest)
            if row is not None:
                details["institution"] = session.get_one(Institution, row.institution_id).name
                details["revoked"] = "yes" if row.revoked_at is not None else "no"
    audit.append(
        session,
        actor="anonymous",
        action="node.refused",
        target=target,
        outcome="denied",
        details=details,
    )


def _find(session: Session, digest: str) -> NodeKey | None:
    return session.scalars(select(NodeKey).where(NodeKey.fingerprint == digest)).one_or_none()


def _info(row: NodeKey, institution: str) -> NodeKeyInfo:
    return NodeKeyInfo(
        institution=institution,
        public_key=row.public_key,
        fingerprint=row.fingerprint,
        created_at=row.created_at,
        created_by=row.created_by,
        revoked=row.revoked_at is not None,
    )
