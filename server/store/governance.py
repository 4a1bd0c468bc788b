"""Who may act: institutions, principals, role grants and API keys.

Every function takes the caller's session and the acting principal, checks
the permission the change needs, and records the change in the audit log in
the same transaction. A refusal (missing permission, unknown name, a rule
broken) rolls the transaction back, is audited on its own, and raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from privacy.errors import ConfigError, FedwardenError
from server.errors import ConflictError, NotFoundError
from server.store import audit, keys, rbac
from server.store.models import (
    PRINCIPAL_KINDS,
    ApiKey,
    Grant,
    Institution,
    Principal,
    Role,
    utcnow,
)

SYSTEM_ACTOR = "system"


@dataclass(frozen=True, kw_only=True)
class PrincipalSummary:
    """A principal as listings show it (no key material)."""

    name: str
    kind: str
    institution: str | None
    roles: list[str]
    active_keys: list[str]


@dataclass(frozen=True, kw_only=True)
class Directory:
    """The federation's members and principals, as ``admin list`` shows them."""

    institutions: list[str]
    principals: list[PrincipalSummary]


def check_name(name: str, *, kind: str) -> str:
    """A stripped name of 1 to 200 printable characters, or ``ConfigError``."""
    cleaned = name.strip()
    if not cleaned or len(cleaned) > 200 or not cleaned.isprintable():
        raise ConfigError(f"{kind} name must be 1 to 200 printable characters, got {name!r}")
    return cleaned


def find_principal(*, session: Session, name: str) -> Principal | None:
    """The principal called ``name``, if any."""
    return session.scalars(select(Principal).where(Principal.name == name)).one_or_none()


def find_institution(*, session: Session, name: str) -> Institution | None:
    """The institution called ``name``, if any."""
    return session.scalars(select(Institution).where(Institution.name == name)).one_or_none()


def create_institution(*, session: Session, actor: Principal, name: str) -> Institution:
    """Add an institution to the federation (needs ``institution:manage``)."""
    actor_name, target = actor.name, f"institution:{name}"
    rbac.authorize(session, principal=actor, permission="institution:manage", target=target)
    try:
        name = check_name(name, kind="institution")
        if find_institution(session=session, name=name) is not None:
            raise ConflictError(f"institution {name!r} exists already", institution=name)
    except FedwardenError as exc:
        raise _refused(
            session, exc, actor=actor_name, action="institution.create", target=target
        ) from None
    return ensure_institution(session=session, actor_name=actor_name, name=name)


def ensure_institution(*, session: Session, actor_name: str, name: str) -> Institution:
    """The institution called ``name``, created (and audited) if it is new.

    For callers that have already authorized the action that brings it in
    (starting a run that it joins).
    """
    found = find_institution(session=session, name=name)
    if found is not None:
        return found
    institution = Institution(name=check_name(name, kind="institution"))
    session.add(institution)
    session.flush()
    audit.append(
        session,
        actor=actor_name,
        action="institution.create",
        target=f"institution:{institution.name}",
    )
    return institution


def create_principal(
    *,
    session: Session,
    actor: Principal,
    name: str,
    role: str,
    kind: str = "person",
    institution: str | None = None,
) -> Principal:
    """Create a person or service account with one role (needs ``principal:manage``).

    Raises
    ------
    ConfigError
        Bad name or kind, unknown role, or the ``institution`` role without an institution.
    NotFoundError
        ``institution`` is not a member.
    ConflictError
        A principal of that name exists.
    """
    actor_name, target = actor.name, f"principal:{name}"
    rbac.authorize(session, principal=actor, permission="principal:manage", target=target)
    try:
        name = check_name(name, kind="principal")
        if kind not in PRINCIPAL_KINDS:
            raise ConfigError(f"principal kind must be one of {', '.join(PRINCIPAL_KINDS)}")
        if find_principal(session=session, name=name) is not None:
            raise ConflictError(f"principal {name!r} exists already", principal=name)
        member = _institution(session, institution) if institution is not None else None
        principal = Principal(name=name, kind=kind, institution_id=member.id if member else None)
        session.add(principal)
        session.flush()
        _grant(session, actor_name=actor_name, principal=principal, role=role)
    except FedwardenError as exc:
        raise _refused(
            session, exc, actor=actor_name, action="principal.create", target=target
        ) from None
    audit.append(
        session,
        actor=actor_name,
        action="principal.create",
        target=target,
        details={"kind": kind, "institution": institution, "role": role},
    )
    return principal


def grant_role(*, session: Session, actor: Principal, principal: str, role: str) -> None:
    """Grant ``role`` to ``principal`` (needs ``principal:manage``)."""
    actor_name, target = actor.name, f"principal:{principal}"
    rbac.authorize(session, principal=actor, permission="principal:manage", target=target)
    try:
        grantee = _principal(session, principal)
        if role in rbac.roles_of(session, principal=grantee):
            raise ConflictError(f"principal {principal!r} holds role {role!r} already")
        _grant(session, actor_name=actor_name, principal=grantee, role=role)
    except FedwardenError as exc:
        raise _refused(
            session, exc, actor=actor_name, action="role.grant", target=target, role=role
        ) from None
    audit.append(
        session, actor=actor_name, action="role.grant", target=target, details={"role": role}
    )


def revoke_role(*, session: Session, actor: Principal, principal: str, role: str) -> None:
    """Take ``role`` from ``principal`` (needs ``principal:manage``); the last admin stays."""
    actor_name, target = actor.name, f"principal:{principal}"
    rbac.authorize(session, principal=actor, permission="principal:manage", target=target)
    try:
        holder = _principal(session, principal)
        role_row = _role(session, role)
        grant = session.get(Grant, (holder.id, role_row.id))
        if grant is None:
            raise NotFoundError(f"principal {principal!r} does not hold role {role!r}")
        if role == "admin" and _count_holders(session, role_row) <= 1:
            raise ConflictError("cannot revoke the last admin; grant admin to another first")
        session.delete(grant)
        session.flush()
    except FedwardenError as exc:
        raise _refused(
            session, exc, actor=actor_name, action="role.revoke", target=target, role=role
        ) from None
    audit.append(
        session, actor=actor_name, action="role.revoke", target=target, details={"role": role}
    )


def issue_key(
    *, session: Session, actor: Principal, principal: str, expires_days: float | None = None
) -> tuple[str, ApiKey]:
    """A new API key for ``principal`` (needs ``key:manage``); the token is returned once.

    Returns
    -------
    (str, ApiKey)
        The token (show it once, never store it) and the stored row.
    """
    actor_name, target = actor.name, f"principal:{principal}"
    rbac.authorize(session, principal=actor, permission="key:manage", target=target)
    try:
        owner = _principal(session, principal)
        if expires_days is not None and not expires_days > 0:
            raise ConfigError(f"a key's lifetime must be > 0 days, got {expires_days}")
    except FedwardenError as exc:
        raise _refused(session, exc, actor=actor_name, action="key.issue", target=target) from None
    expires = utcnow() + timedelta(days=expires_days) if expires_days is not None else None
    token, row = keys.new_key(principal=owner, expires_at=expires)
    session.add(row)
    session.flush()
    audit.append(
        session,
        actor=actor_name,
        action="key.issue",
        target=target,
        details={"prefix": row.prefix, "expires_at": expires},
    )
    return token, row


def revoke_key(*, session: Session, actor: Principal, prefix: str) -> ApiKey:
    """Revoke the key with ``prefix`` (needs ``key:manage``); it stops working at once."""
    actor_name, target = actor.name, f"key:{prefix}"
    rbac.authorize(session, principal=actor, permission="key:manage", target=target)
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()
    if row is None or row.revoked_at is not None:
        state = "no key has" if row is None else "the key with"
        error = NotFoundError(f"{state} prefix {prefix!r}" + ("" if row is None else " is revoked"))
        raise _refused(session, error, actor=actor_name, action="key.revoke", target=target)
    row.revoked_at = utcnow()
    owner = session.get_one(Principal, row.principal_id)
    audit.append(
        session, actor=actor_name, action="key.revoke", target=target, details={"owner": owner.name}
    )
    return row


def rotate_key(
    *,
    session: Session,
    actor: Principal,
    prefix: str,
    overlap_hours: float = 24.0,
    expires_days: float | None = None,
) -> tuple[str, ApiKey, ApiKey]:
    """A new key for the owner of key ``prefix``; the old one keeps working ``overlap_hours``
    more, then expires (needs ``key:manage``; audited as ``key.rotate``).

    Returns
    -------
    (str, ApiKey, ApiKey)
        The new token (show it once), its row, and the old key's row.
    """
    actor_name, target = actor.name, f"key:{prefix}"
    rbac.authorize(session, principal=actor, permission="key:manage", target=target)
    old = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()
    try:
        if old is None or old.revoked_at is not None:
            raise NotFoundError(f"no usable key has prefix {prefix!r}", prefix=prefix)
        if not overlap_hours >= 0:
            raise ConfigError(f"the overlap must be >= 0 hours, got {overlap_hours}")
        if expires_days is not None and not expires_days > 0:
            raise ConfigError(f"a key's lifetime must be > 0 days, got {expires_days}")
    except FedwardenError as exc:
        raise _refused(session, exc, actor=actor_name, action="key.rotate", target=target) from None
    now = utcnow()
    owner = session.get_one(Principal, old.principal_id)
    if expires_days is None and old.expires_at is not None and old.created_at is not None:
        expires_days = max((old.expires_at - old.created_at).total_seconds() / 86400, 1.0)
    expires = now + timedelta(days=expires_days) if expires_days is not None else None
    token, row = keys.new_key(principal=owner, expires_at=expires)
    session.add(row)
    cutoff = now + timedelta(hours=overlap_hours)
    if old.expires_at is None or old.expires_at > cutoff:
        old.expires_at = cutoff
    session.flush()
    audit.append(
        session,
        actor=actor_name,
        action="key.rotate",
        target=target,
        details={
            "owner": owner.name,
            "new_prefix": row.prefix,
            "old_expires_at": old.expires_at,
            "expires_at": expires,
        },
    )
    return token, row, old


def bootstrap_admin(*, session: Session, name: str = "admin") -> tuple[Principal, str]:
    """Create the first admin and its key; refused once any admin exists.

    Returns
    -------
    (Principal, str)
        The admin and its token, to be shown once.
    """
    target = f"principal:{name}"
    try:
        name = check_name(name, kind="principal")
        if _count_holders(session, _role(session, "admin")) > 0:
            raise ConflictError("the store has an admin already; `admin init` runs once")
        if find_principal(session=session, name=name) is not None:
            raise ConflictError(f"principal {name!r} exists already", principal=name)
    except FedwardenError as exc:
        raise _refused(
            session, exc, actor=SYSTEM_ACTOR, action="admin.init", target=target
        ) from None
    admin = Principal(name=name, kind="person", institution_id=None)
    session.add(admin)
    session.flush()
    _grant(session, actor_name=SYSTEM_ACTOR, principal=admin, role="admin")
    token, row = keys.new_key(principal=admin)
    session.add(row)
    session.flush()
    audit.append(
        session,
        actor=SYSTEM_ACTOR,
        action="admin.init",
        target=target,
        details={"prefix": row.prefix},
    )
    return admin, token


def service_principal(*, session: Session, name: str = "coordinator") -> Principal:
    """The coordinator's own service account (an ``operator``), created on first use."""
    found = find_principal(session=session, name=name)
    if found is not None:
        return found
    principal = Principal(name=name, kind="service", institution_id=None)
    session.add(principal)
    session.flush()
    _grant(session, actor_name=SYSTEM_ACTOR, principal=principal, role="operator")
    audit.append(
        session,
        actor=SYSTEM_ACTOR,
        action="principal.create",
        target=f"principal:{name}",
        details={"kind": "service", "institution": None, "role": "operator"},
    )
    return principal


def directory(*, session: Session, actor: Principal) -> Directory:
    """Every institution and principal, with roles and active key prefixes (``principal:read``).

    An audited read.
    """
    actor_name = actor.name
    rbac.authorize(session, principal=actor, permission="principal:read", target="directory")
    institutions = {i.id: i.name for i in session.scalars(select(Institution))}
    now = utcnow()
    summaries = []
    for principal in session.scalars(select(Principal).order_by(Principal.name)):
        active = session.scalars(
            select(ApiKey.prefix)
            .where(ApiKey.principal_id == principal.id, ApiKey.revoked_at.is_(None))
            .where((ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > now))
            .order_by(ApiKey.created_at)
        )
        summaries.append(
            PrincipalSummary(
                name=principal.name,
                kind=principal.kind,
                institution=institutions.get(principal.institution_id or -1),
                roles=rbac.roles_of(session, principal=principal),
                active_keys=list(active),
            )
        )
    audit.append(
        session,
        actor=actor_name,
        action="directory.read",
        target="directory",
        details={"institutions": len(institutions), "principals": len(summaries)},
    )
    return Directory(institutions=sorted(institutions.values()), principals=summaries)


def _grant(session: Session, *, actor_name: str, principal: Principal, role: str) -> None:
    role_row = _role(session, role)
    if role == "institution" and principal.institution_id is None:
        raise ConfigError("the institution role needs a principal tied to an institution")
    session.add(Grant(principal_id=principal.id, role_id=role_row.id, granted_by=actor_name))
    session.flush()


def _role(session: Session, name: str) -> Role:
    rbac.check_role(name)
    return session.scalars(select(Role).where(Role.name == name)).one()


def _principal(session: Session, name: str) -> Principal:
    found = find_principal(session=session, name=name)
    if found is None:
        raise NotFoundError(f"no principal called {name!r}", principal=name)
    return found


def _institution(session: Session, name: str) -> Institution:
    found = find_institution(session=session, name=name)
    if found is None:
        raise NotFoundError(f"no institution called {name!r}", institution=name)
    return found


def _count_holders(session: Session, role: Role) -> int:
    return session.scalar(select(func.count()).where(Grant.role_id == role.id)) or 0


def _refused(
    session: Session, error: FedwardenError, *, actor: str, action: str, target: str, **details: str
) -> FedwardenError:
    return audit.record_refusal(
        session,
        error=error,
        actor=actor,
        action=action,
        target=target,
        outcome="error",
        details=details,
    )
