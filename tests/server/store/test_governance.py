"""Institutions, principals, grants and keys: the rules, and no partial writes."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from privacy.errors import ConfigError, UnknownNameError
from server.errors import ConflictError, NotFoundError
from server.store import audit, governance, rbac
from server.store.models import Principal


def _names(store):
    with store.session() as session:
        return set(session.scalars(select(Principal.name)))


def _last(store):
    with store.session() as session:
        return audit.tail(session, limit=1)[0]


def test_admin_init_runs_once(store, admin):
    with pytest.raises(ConflictError, match="runs once"), store.session() as session:
        governance.bootstrap_admin(session=session, name="second-admin")

    assert _names(store) == {"admin"}
    assert (_last(store)["action"], _last(store)["outcome"]) == ("admin.init", "error")


def test_an_unknown_role_leaves_no_principal_behind(store, admin):
    with pytest.raises(UnknownNameError, match="unknown role 'wizard'"), store.session() as session:
        governance.create_principal(session=session, actor=admin, name="bob", role="wizard")

    assert "bob" not in _names(store)
    event = _last(store)
    assert (event["actor"], event["action"], event["outcome"]) == (
        "admin",
        "principal.create",
        "error",
    )


def test_an_unknown_institution_is_refused(store, admin):
    with (
        pytest.raises(NotFoundError, match="no institution called 'Atlantis'"),
        store.session() as session,
    ):
        governance.create_principal(
            session=session, actor=admin, name="bob", role="institution", institution="Atlantis"
        )

    assert "bob" not in _names(store)


def test_the_institution_role_needs_an_institution(store, admin):
    with pytest.raises(ConfigError, match="tied to an institution"), store.session() as session:
        governance.create_principal(session=session, actor=admin, name="bob", role="institution")

    assert "bob" not in _names(store)


def test_names_are_unique(store, admin, principal_factory):
    principal_factory("bob", "consumer")

    with pytest.raises(ConflictError, match="exists already"), store.session() as session:
        governance.create_principal(session=session, actor=admin, name="bob", role="operator")
    with store.session() as session:
        governance.create_institution(session=session, actor=admin, name="Cleveland")
    with pytest.raises(ConflictError, match="exists already"), store.session() as session:
        governance.create_institution(session=session, actor=admin, name="Cleveland")


def test_grant_and_revoke(store, admin, principal_factory):
    bob, _ = principal_factory("bob", "consumer")

    with store.session() as session:
        governance.grant_role(session=session, actor=admin, principal="bob", role="auditor")
    with store.session() as session:
        assert rbac.roles_of(session, principal=bob) == ["auditor", "consumer"]
        governance.revoke_role(session=session, actor=admin, principal="bob", role="consumer")
    with store.session() as session:
        assert rbac.roles_of(session, principal=bob) == ["auditor"]

    with (
        pytest.raises(NotFoundError, match="no principal called 'ghost'"),
        store.session() as session,
    ):
        governance.grant_role(session=session, actor=admin, principal="ghost", role="auditor")
    assert (_last(store)["action"], _last(store)["target"]) == ("role.grant", "principal:ghost")


def test_the_last_admin_cannot_be_revoked(store, admin):
    with pytest.raises(ConflictError, match="last admin"), store.session() as session:
        governance.revoke_role(session=session, actor=admin, principal="admin", role="admin")

    with store.session() as session:
        assert rbac.roles_of(session, principal=admin) == ["admin"]


def test_listing_shows_roles_institutions_and_active_keys_only(store, admin, principal_factory):
    with store.session() as session:
        governance.create_institution(session=session, actor=admin, name="Cleveland")
    principal_factory("cleo", "institution", institution="Cleveland")
    with store.session() as session:
        cleo = governance.find_principal(session=session, name="cleo")
        _, revoked = governance._new_key(session, owner=cleo, issuer="test", expires_days=None)
        governance.revoke_key(session=session, actor=admin, prefix=revoked.prefix)

    with store.session() as session:
        found = governance.directory(session=session, actor=admin)
    listing = {p.name: p for p in found.principals}

    assert (listing["cleo"].institution, listing["cleo"].roles) == ("Cleveland", ["institution"])
    assert (
        len(listing["cleo"].active_keys) == 1 and revoked.prefix not in listing["cleo"].active_keys
    )
    assert found.institutions == ["Cleveland"]
    assert _last(store)["action"] == "directory.read"


def test_revoking_an_unknown_or_revoked_key_is_refused(store, admin, principal_factory):
    principal_factory("bob", "admin")
    with store.session() as session:
        _, row = governance.issue_key(session=session, actor=admin, principal="bob")
        governance.revoke_key(session=session, actor=admin, prefix=row.prefix)

    for prefix, phrase in ((row.prefix, "is revoked"), ("0123456789ab", "no key has prefix")):
        with pytest.raises(NotFoundError, match=phrase), store.session() as session:
            governance.revoke_key(session=session, actor=admin, prefix=prefix)


def test_the_coordinators_service_account_is_created_once(store):
    with store.session() as session:
        first = governance.service_principal(session=session)
    with store.session() as session:
        second = governance.service_principal(session=session)
        roles = rbac.roles_of(session, principal=second)

    assert first.id == second.id and first.kind == "service" and roles == ["operator"]
