"""Roles, named permissions, and the one function that checks them.

A principal's permissions are those of the roles granted to it, read from the
store (the built-in roles below are written there by the first migration).
Institution-scoped permissions (``ledger:read-own``, ``node:register``,
``run:join``) only count for the principal's own institution. ``authorize``
raises ``PermissionDeniedError`` and puts the denial on the audit record in a
transaction of its own.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from privacy.errors import ConfigError, UnknownNameError
from server.errors import PermissionDeniedError
from server.store import audit
from server.store.models import Grant, Institution, Permission, Principal, Role, RolePermission

PERMISSIONS: dict[str, str] = {
    "run:start": "start a federated training run",
    "run:stop": "stop a running run",
    "run:read": "read runs, rounds and their metrics",
    "run:join": "take part in runs for one's own institution",
    "model:register": "register a trained model version",
    "model:promote": "promote a model version to production",
    "model:read": "read model versions and their lineage",
    "audit:read": "read, export and verify the audit log",
    "audit:checkpoint": "sign the audit log's head with the coordinator's key",
    "ledger:read": "read every institution's privacy ledger",
    "ledger:read-own": "read one's own institution's privacy ledger",
    "principal:read": "list institutions, principals, roles and keys",
    "principal:manage": "create principals, grant and revoke roles",
    "key:manage": "issue and revoke API keys",
    "institution:manage": "add institutions to the federation",
    "node:register": "register a node for one's own institution",
    "predict": "call the inference API",
    "feedback": "report the true outcomes of served predictions",
}

INSTITUTION_SCOPED: frozenset[str] = frozenset({"run:join", "ledger:read-own", "node:register"})

ROLES: dict[str, str] = {
    "admin": "manages principals, roles, keys and institutions",
    "operator": "starts and stops runs, registers and promotes models",
    "institution": "joins runs for its own institution and reads its own ledger",
    "auditor": "reads everything, changes nothing",
    "consumer": "calls the inference API",
}

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(
        {
            "principal:read",
            "principal:manage",
            "key:manage",
            "institution:manage",
            "run:read",
            "model:read",
            "audit:checkpoint",
        }
    ),
    "operator": frozenset(
        {
            "run:start",
            "run:stop",
            "run:read",
            "model:register",
            "model:promote",
            "model:read",
            "ledger:read",
            "audit:checkpoint",
            "feedback",
        }
    ),
    "institution": frozenset({"run:join", "ledger:read-own", "node:register"}),
    "auditor": frozenset({"audit:read", "run:read", "model:read", "ledger:read", "principal:read"}),
    "consumer": frozenset({"predict", "feedback"}),
}


def check_role(role: str) -> str:
    """``role`` if it is a built-in role; ``UnknownNameError`` otherwise."""
    if role not in ROLES:
        raise UnknownNameError("role", role, ROLES)
    return role


def permissions_of(session: Session, *, principal: Principal) -> frozenset[str]:
    """Every permission the principal holds through its roles (scoping not applied)."""
    names = session.scalars(
        select(Permission.name)
        .join(RolePermission, RolePermission.permission_id == Permission.id)
        .join(Grant, Grant.role_id == RolePermission.role_id)
        .where(Grant.principal_id == principal.id)
    )
    return frozenset(names)


def roles_of(session: Session, *, principal: Principal) -> list[str]:
    """The names of the roles granted to the principal, sorted."""
    names = session.scalars(
        select(Role.name)
        .join(Grant, Grant.role_id == Role.id)
        .where(Grant.principal_id == principal.id)
    )
    return sorted(names)


def has_permission(
    session: Session,
    *,
    principal: Principal,
    permission: str,
    institution: str | None = None,
) -> bool:
    """Whether ``principal`` may use ``permission`` (on ``institution``, if it is scoped).

    Raises
    ------
    UnknownNameError
        ``permission`` is not a known permission (a programming error).
    ConfigError
        ``permission`` is institution-scoped and no ``institution`` was named.
    """
    if permission not in PERMISSIONS:
        raise UnknownNameError("permission", permission, PERMISSIONS)
    if permission not in permissions_of(session, principal=principal):
        return False
    if permission not in INSTITUTION_SCOPED:
        return True
    if institution is None:
        raise ConfigError(f"{permission!r} is institution-scoped: name the institution")
    if principal.institution_id is None:
        return False
    own = session.get(Institution, principal.institution_id)
    return own is not None and own.name == institution


def authorize(
    session: Session,
    *,
    principal: Principal,
    permission: str,
    target: str | None = None,
    institution: str | None = None,
) -> None:
    """Let the action go on, or deny it: roll back, audit the denial, raise.

    Parameters
    ----------
    session : Session
        The caller's transaction. On denial it is rolled back (nothing written
        in it survives) and the denial is committed in a transaction of its own.
    principal : Principal
        Who asks.
    permission : str
        The permission the action needs (``model:promote``).
    target : str, optional
        What the action concerns, for the audit record (``model:heart@3``).
    institution : str, optional
        The institution the action concerns; required for institution-scoped
        permissions, which only hold for the principal's own institution.

    Raises
    ------
    PermissionDeniedError
        The principal lacks the permission (or it is scoped to another institution).
    """
    if has_permission(session, principal=principal, permission=permission, institution=institution):
        return
    scope = f" for institution {institution!r}" if institution is not None else ""
    error = PermissionDeniedError(
        f"principal {principal.name!r} lacks permission {permission!r}{scope}",
        principal=principal.name,
        permission=permission,
        target=target,
    )
    raise audit.record_refusal(
        session,
        error=error,
        actor=principal.name,
        action="authorize",
        target=target,
        outcome="denied",
        details={"permission": permission, "institution": institution},
    )
