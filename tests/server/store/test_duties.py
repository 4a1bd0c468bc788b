"""Separated duties: each escalation path an admin had is closed, and promotions name the key."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from server.errors import PermissionDeniedError
from server.store import audit, governance, keys, rbac, registry
from server.store.models import ApiKey

SHA = hashlib.sha256(b"model").hexdigest()


def _last(store):
    with store.session() as session:
        return audit.tail(session, limit=1)[0]


def _roles(store, name):
    with store.session() as session:
        return rbac.roles_of(
            session, principal=governance.find_principal(session=session, name=name)
        )


def _register(store, actor):
    with store.session() as session:
        return registry.register_model_version(
            session=session,
            actor=actor,
            name="heart",
            artifact_path="m.onnx",
            artifact_sha256=SHA,
            input_schema={},
            output_labels=["no", "yes"],
            preprocessing={},
            model_spec={},
        )


def _login(store, token):
    with store.session() as session:
        return keys.authenticate(session, token)


def test_an_admin_cannot_grant_itself_a_role(store, admin):
    with pytest.raises(PermissionDeniedError, match="itself"), store.session() as session:
        governance.grant_role(session=session, actor=admin, principal=admin.name, role="operator")

    assert _roles(store, admin.name) == ["admin"]
    event = _last(store)
    assert (event["action"], event["outcome"], event["details"]["rule"]) == (
        "role.grant",
        "denied",
        "no self-grant",
    )


def test_an_admin_cannot_issue_a_key_for_an_operator(store, admin):
    with store.session() as session:
        governance.create_principal(session=session, actor=admin, name="olga", role="operator")

    with pytest.raises(PermissionDeniedError, match="operator"), store.session() as session:
        governance.issue_key(session=session, actor=admin, principal="olga")

    with store.session() as session:
        olga = governance.find_principal(session=session, name="olga")
        assert session.scalars(select(ApiKey).where(ApiKey.principal_id == olga.id)).all() == []
    assert (_last(store)["action"], _last(store)["outcome"]) == ("key.issue", "error")


def test_an_admin_cannot_arm_a_key_it_holds_with_a_role_it_lacks(store, admin):
    with store.session() as session:  # a second admin whose key the first one holds...
        governance.create_principal(session=session, actor=admin, name="bob", role="admin")
        token, _ = governance.issue_key(session=session, actor=admin, principal="bob")

    with pytest.raises(PermissionDeniedError, match="revoke that key"), store.session() as session:
        governance.grant_role(session=session, actor=admin, principal="bob", role="operator")

    assert _roles(store, "bob") == ["admin"]  # ...cannot be made an operator while it does
    bob = _login(store, token)
    with pytest.raises(PermissionDeniedError), store.session() as session:
        registry.register_model_version(
            session=session,
            actor=bob,
            name="heart",
            artifact_path="m.onnx",
            artifact_sha256=SHA,
            input_schema={},
            output_labels=[],
            preprocessing={},
            model_spec={},
        )


def test_a_grant_to_a_principal_with_an_enrolled_key_goes_through(store, admin, principal_factory):
    principal_factory("olga", "operator")

    with store.session() as session:
        governance.grant_role(session=session, actor=admin, principal="olga", role="auditor")

    assert _roles(store, "olga") == ["auditor", "operator"]


def test_a_promotion_names_the_acting_key_and_its_issuer(store, principal_factory):
    _, token = principal_factory("olga", "operator")
    olga = _login(store, token)
    _register(store, olga)

    with store.session() as session:
        keys.authenticate(session, token)
        registry.promote_model_version(
            session=session, actor=governance.find_principal(session=session, name="olga"),
            name="heart", version=1,
        )  # fmt: skip

    event = _last(store)
    assert event["action"] == "model.promote"
    assert event["details"]["via_key"] == keys.split_token(token)[0]
    assert event["details"]["key_issuer"] == governance.OWNER_ACTOR


def test_a_grant_names_the_acting_key(store, admin, principal_factory):
    _, admin_token = principal_factory("root", "admin")
    principal_factory("olga", "operator")

    with store.session() as session:
        actor = keys.authenticate(session, admin_token)
        governance.grant_role(session=session, actor=actor, principal="olga", role="auditor")

    details = _last(store)["details"]
    assert details["via_key"] == keys.split_token(admin_token)[0]
    assert details["key_issuer"] == governance.OWNER_ACTOR


def test_two_person_promotion(store, principal_factory):
    olga = principal_factory("olga", "operator")[0]
    otto = principal_factory("otto", "operator")[0]
    _register(store, olga)

    with store.session() as session:
        pending = registry.promote_model_version(
            session=session, actor=olga, name="heart", version=1, require_approval=True
        )
    with pytest.raises(PermissionDeniedError, match="another principal"), store.session() as s:
        registry.promote_model_version(
            session=s, actor=olga, name="heart", version=1, require_approval=True
        )
    with store.session() as session:
        promoted = registry.promote_model_version(
            session=session, actor=otto, name="heart", version=1, require_approval=True
        )

    assert pending is None
    assert promoted is not None and promoted.stage == "production"
    event = _last(store)
    assert (event["details"]["requested_by"], event["details"]["approved_by"]) == ("olga", "otto")


def test_api_keys_expire_in_90_days_by_default(store, admin, principal_factory):
    principal_factory("bob", "admin")

    with store.session() as session:
        _, row = governance.issue_key(session=session, actor=admin, principal="bob")
        _, forever = governance.issue_key(
            session=session, actor=admin, principal="bob", expires_days=None
        )
        listing = governance.directory(session=session, actor=admin)

    assert row.expires_at is not None and forever.expires_at is None
    bob = next(p for p in listing.principals if p.name == "bob")
    assert len(bob.key_expiry) == 3 and bob.key_expiry.count(None) == 1
