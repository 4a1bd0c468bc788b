"""Every role against every permission, allowed and denied; denials are audited."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from privacy.errors import ConfigError, UnknownNameError
from server.errors import PermissionDeniedError
from server.store import audit, rbac
from server.store.engine import open_store
from server.store.governance import bootstrap_admin, create_institution, create_principal
from server.store.models import Institution

# The policy, written out independently of rbac.py: a change there must change this too.
EXPECTED = {
    "admin": "principal:read principal:manage key:manage institution:manage run:read model:read "
    "audit:checkpoint",
    "operator": "run:start run:stop run:read model:register model:promote model:read ledger:read "
    "audit:checkpoint feedback",
    "institution": "run:join ledger:read-own node:register",
    "auditor": "audit:read run:read model:read ledger:read principal:read",
    "consumer": "predict feedback",
}
ISSUE_PERMISSIONS = {
    "run:start",
    "run:stop",
    "run:read",
    "model:register",
    "model:promote",
    "model:read",
    "audit:read",
    "audit:checkpoint",
    "ledger:read",
    "ledger:read-own",
    "principal:manage",
    "key:manage",
    "institution:manage",
    "node:register",
    "predict",
}
CELLS = [(role, permission) for role in sorted(EXPECTED) for permission in sorted(rbac.PERMISSIONS)]


@pytest.fixture(scope="module")
def matrix(module_store_url):
    """A store with one principal per role, all of them at Cleveland."""
    store = open_store(module_store_url)
    with store.session() as session:
        admin, _ = bootstrap_admin(session=session)
        create_institution(session=session, actor=admin, name="Cleveland")
        create_institution(session=session, actor=admin, name="Hungary")
        principals = {
            role: create_principal(
                session=session, actor=admin, name=f"{role}-1", role=role, institution="Cleveland"
            )
            for role in EXPECTED
        }
    yield store, principals
    store.dispose()


def test_the_policy_covers_the_issues_permissions_and_roles():
    assert set(rbac.ROLES) == set(EXPECTED)
    assert set(rbac.PERMISSIONS) >= ISSUE_PERMISSIONS
    assert {role: set(names.split()) for role, names in EXPECTED.items()} == {
        role: set(names) for role, names in rbac.ROLE_PERMISSIONS.items()
    }


@pytest.mark.parametrize(("role", "permission"), CELLS, ids=[f"{r}-{p}" for r, p in CELLS])
def test_role_against_permission(matrix, role, permission):
    store, principals = matrix
    principal = principals[role]
    allowed = permission in EXPECTED[role].split()
    own = "Cleveland" if permission in rbac.INSTITUTION_SCOPED else None

    with store.session() as session:
        seq_before, _ = audit.head(session)
    if allowed:
        with store.session() as session:
            rbac.authorize(session, principal=principal, permission=permission, institution=own)
    else:
        denied = pytest.raises(PermissionDeniedError, match=f"lacks permission '{permission}'")
        with denied, store.session() as session:
            rbac.authorize(
                session,
                principal=principal,
                permission=permission,
                target="thing:1",
                institution=own,
            )

    with store.session() as session:
        new_events = [e for e in audit.tail(session, limit=5) if e["seq"] > seq_before]
    if allowed:
        assert new_events == []
    else:
        assert [(e["actor"], e["action"], e["outcome"], e["target"]) for e in new_events] == [
            (principal.name, "authorize", "denied", "thing:1")
        ]
        assert new_events[0]["details"]["permission"] == permission


@pytest.mark.parametrize("permission", sorted(rbac.INSTITUTION_SCOPED))
def test_scoped_permissions_hold_for_the_own_institution_only(matrix, permission):
    store, principals = matrix
    member = principals["institution"]

    with store.session() as session:
        assert rbac.has_permission(
            session, principal=member, permission=permission, institution="Cleveland"
        )
        assert not rbac.has_permission(
            session, principal=member, permission=permission, institution="Hungary"
        )
    denied = pytest.raises(PermissionDeniedError, match="for institution 'Hungary'")
    with denied, store.session() as session:
        rbac.authorize(session, principal=member, permission=permission, institution="Hungary")


def test_a_scoped_permission_needs_an_institution(matrix):
    store, principals = matrix

    with store.session() as session, pytest.raises(ConfigError, match="institution-scoped"):
        rbac.has_permission(
            session, principal=principals["institution"], permission="ledger:read-own"
        )


def test_an_unknown_permission_is_a_loud_error(matrix):
    store, principals = matrix

    with store.session() as session, pytest.raises(UnknownNameError, match="unknown permission"):
        rbac.authorize(session, principal=principals["admin"], permission="run:delete")


def test_a_denial_discards_the_callers_work_but_stays_on_record(matrix):
    store, principals = matrix
    consumer = principals["consumer"]

    with pytest.raises(PermissionDeniedError), store.session() as session:
        session.add(Institution(name="Written-Before-The-Denial"))
        session.flush()
        rbac.authorize(session, principal=consumer, permission="institution:manage")

    with store.session() as session:
        names = set(session.scalars(select(Institution.name)))
        last = audit.tail(session, limit=1)[0]
    assert "Written-Before-The-Denial" not in names
    assert (last["actor"], last["outcome"]) == (consumer.name, "denied")
