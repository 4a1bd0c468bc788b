"""Who may act: institutions, principals, role grants and API keys.

Every function takes the caller's session and the acting principal, checks
the permission the change needs, and records the change in the audit log in
the same transaction. A refusal (missing permission, unknown name, a rule
broken) rolls the transaction back, is audited on its own, and raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from privacy.errors import ConfigError, FedwardenError
from server.errors import ConflictError, NotFoundError, PermissionDeniedError
from server.store import audit, keys, rbac, revocation
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
OWNER_ACTOR = "coordinator-owner"
DEFAULT_KEY_LIFETIME_DAYS = 90.0


@dataclass(frozen=True, kw_only=True)
class PrincipalSummary:
    """A principal as listings show it (no key material)."""

    name: str
    kind: str
    institution: str | None
    roles: list[str]
    active_keys: list[str]
    key_expiry: list[datetime | None]


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
    if principal == actor_name:
        raise audit.record_refusal(
            session,
            error=PermissionDeniedError(
                f"principal {actor_name!r} cannot grant a role to itself; another admin must",
                principal=actor_name,
                permission="principal:manage",
                target=target,
            ),
            actor=actor_name,
            action="role.grant",
            target=target,
            details={"role": role, "rule": "no self-grant"},
        )
    try:
        grantee = _principal(session, principal)
        if role in rbac.roles_of(session, principal=grantee):
            raise ConflictError(f"principal {principal!r} holds role {role!r} already")
        _check_key_issuers(session, grantee=grantee, role=role, actor_name=actor_name)
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
        revocation.bump(session)
    except FedwardenError as exc:
        raise _refused(
            session, exc, actor=actor_name, action="role.revoke", target=target, role=role
        ) from None
    audit.append(
        session, actor=actor_name, action="role.revoke", target=target, details={"role": role}
    )


def issue_key(
    *,
    session: Session,
    actor: Principal,
    principal: str,
    expires_days: float | None = DEFAULT_KEY_LIFETIME_DAYS,
) -> tuple[str, ApiKey]:
    """A new API key for ``principal`` (needs ``key:manage``); the token is returned once.

    A key is a role's power in the bearer's hand: it is refused for another
    principal that holds a role the issuer does not (an admin cannot mint an
    operator's key and promote with it). Such principals get their first key
    through ``enroll_principal``, by the coordinator's owner.

    Parameters
    ----------
    expires_days : float or None
        The key's lifetime: 90 days by default, ``None`` for a key that never expires.

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
        _check_separated_duties(session, actor=actor, owner=owner, target=target)
    except FedwardenError as exc:
        raise _refused(session, exc, actor=actor_name, action="key.issue", target=target) from None
    token, row = _new_key(session, owner=owner, issuer=actor_name, expires_days=expires_days)
    audit.append(
        session,
        actor=actor_name,
        action="key.issue",
        target=target,
        details={"prefix": row.prefix, "expires_at": row.expires_at},
    )
    return token, row


def enroll_principal(
    *,
    session: Session,
    name: str,
    role: str,
    kind: str = "person",
    institution: str | None = None,
    expires_days: float | None = DEFAULT_KEY_LIFETIME_DAYS,
) -> tuple[Principal, str]:
    """Create a principal with one role and its first key, as the coordinator's owner.

    No API key acts here: the caller has shown it runs as the coordinator's
    owner (``fedwarden admin enroll`` needs the store's audit key), who may
    hand out any role. Audited as ``coordinator-owner``.

    Returns
    -------
    (Principal, str)
        The principal and its token, to be shown once.
    """
    target = f"principal:{name}"
    try:
        name = check_name(name, kind="principal")
        if kind not in PRINCIPAL_KINDS:
            raise ConfigError(f"principal kind must be one of {', '.join(PRINCIPAL_KINDS)}")
        if expires_days is not None and not expires_days > 0:
            raise ConfigError(f"a key's lifetime must be > 0 days, got {expires_days}")
        if find_principal(session=session, name=name) is not None:
            raise ConflictError(f"principal {name!r} exists already", principal=name)
        member = _institution(session, institution) if institution is not None else None
        principal = Principal(name=name, kind=kind, institution_id=member.id if member else None)
        session.add(principal)
        session.flush()
        _grant(session, actor_name=OWNER_ACTOR, principal=principal, role=role)
    except FedwardenError as exc:
        raise _refused(
            session, exc, actor=OWNER_ACTOR, action="principal.enroll", target=target
        ) from None
    token, row = _new_key(session, owner=principal, issuer=OWNER_ACTOR, expires_days=expires_days)
    audit.append(
        session,
        actor=OWNER_ACTOR,
        action="principal.enroll",
        target=target,
        details={
            "kind": kind,
            "institution": institution,
            "role": role,
            "prefix": row.prefix,
            "expires_at": row.expires_at,
        },
    )
    return principal, token


def _check_separated_duties(
    session: Session, *, actor: Principal, owner: Principal, target: str
) -> None:
    """Refuse a key for ``owner`` minted by an ``actor`` who lacks one of ``owner``'s roles."""
    if owner.id == actor.id:
        return
    beyond = sorted(
        set(rbac.roles_of(session, principal=owner)) - set(rbac.roles_of(session, principal=actor))
    )
    if beyond:
        raise PermissionDeniedError(
            f"principal {actor.name!r} cannot issue a key for {owner.name!r}, which holds "
            f"role(s) {', '.join(beyond)} that {actor.name!r} does not; its key comes "
            "from `fedwarden admin enroll` on the coordinator",
            principal=actor.name,
            permission="key:manage",
            target=target,
        )


def _new_key(
    session: Session, *, owner: Principal, issuer: str, expires_days: float | None
) -> tuple[str, ApiKey]:
    expires = utcnow() + timedelta(days=expires_days) if expires_days is not None else None
    token, row = keys.new_key(principal=owner, expires_at=expires)
    row.issued_by = issuer
    session.add(row)
    session.flush()
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
    revocation.bump(session)
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
    more, then expires (needs ``key:manage``; audited as ``key.rotate``). As with
    ``issue_key``, an actor cannot rotate the key of a principal holding a role it lacks.

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
        owner = session.get_one(Principal, old.principal_id)
        _check_separated_duties(session, actor=actor, owner=owner, target=target)
    except FedwardenError as exc:
        raise _refused(session, exc, actor=actor_name, action="key.rotate", target=target) from None
    now = utcnow()
    if expires_days is None and old.expires_at is not None and old.created_at is not None:
        expires_days = max((old.expires_at - old.created_at).total_seconds() / 86400, 1.0)
    token, row = _new_key(session, owner=owner, issuer=actor_name, expires_days=expires_days)
    expires = row.expires_at
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
    token, row = _new_key(
        session, owner=admin, issuer=SYSTEM_ACTOR, expires_days=DEFAULT_KEY_LIFETIME_DAYS
    )
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
        active = session.execute(
            select(ApiKey.prefix, ApiKey.expires_at)
            .where(ApiKey.principal_id == principal.id, ApiKey.revoked_at.is_(None))
            .where((ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > now))
            .order_by(ApiKey.created_at)
        )
        rows = list(active)
        summaries.append(
            PrincipalSummary(
                name=principal.name,
                kind=principal.kind,
                institution=institutions.get(principal.institution_id or -1),
                roles=rbac.roles_of(session, principal=principal),
                active_keys=[row.prefix for row in rows],
                key_expiry=[row.expires_at for row in rows],
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


def _check_key_issuers(session: Session, *, grantee: Principal, role: str, actor_name: str) -> None:
    """Refuse a grant that would give a key more power than the principal who issued it holds.

    Otherwise an admin could issue a key for a fresh admin, grant that admin
    ``operator`` and act as an operator with the key it holds.
    """
    issuers = set(
        session.scalars(
            select(ApiKey.issued_by).where(
                ApiKey.principal_id == grantee.id, ApiKey.revoked_at.is_(None)
            )
        )
    )
    for issuer in sorted(name for name in issuers if name is not None):
        if issuer in (OWNER_ACTOR, SYSTEM_ACTOR, grantee.name):
            continue
        holder = find_principal(session=session, name=issuer)
        if holder is None or role not in rbac.roles_of(session, principal=holder):
            raise PermissionDeniedError(
                f"cannot grant {role!r} to {grantee.name!r}: it holds an API key issued by "
                f"{issuer!r}, who does not hold {role!r}; revoke that key first",
                principal=actor_name,
                permission="principal:manage",
                target=f"principal:{grantee.name}",
            )


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
