"""Node keys in the store: registered under RBAC, audited, revoked, refusals on record."""

from __future__ import annotations

import pytest

from privacy.errors import ConfigError
from privacy.pki import fingerprint, generate_node_key
from server.errors import ConflictError, PermissionDeniedError
from server.store import audit
from server.store.governance import create_institution
from server.store.nodes import (
    active_node_keys,
    list_node_keys,
    record_node_refusal,
    register_node_key,
    revoke_node_key,
)


@pytest.fixture
def node_key(tmp_path):
    def make(name: str) -> str:
        return generate_node_key(out_dir=tmp_path, institution=name)[1]

    return make


def test_an_institution_registers_its_own_node_and_it_is_audited(
    store, admin, principal_factory, node_key
):
    with store.session() as session:
        create_institution(session=session, actor=admin, name="Hungary")
    hungary, _ = principal_factory("hu-ops", "institution", institution="Hungary")
    line = node_key("Hungary")

    with store.session() as session:
        info = register_node_key(
            session=session, actor=hungary, institution="Hungary", public_key=line
        )

    assert info.fingerprint == fingerprint(line)
    assert info.public_key == " ".join(line.split()[:2])  # the comment is not kept
    with store.session() as session:
        assert [k.fingerprint for k in active_node_keys(session=session)] == [info.fingerprint]
        event = audit.tail(session, limit=1)[0]
    assert (event["action"], event["actor"], event["target"]) == (
        "node.register",
        "hu-ops",
        f"node:{info.fingerprint}",
    )
    assert event["details"]["institution"] == "Hungary"
    assert "PRIVATE" not in str(event)


def test_an_institution_cannot_register_a_node_for_another(
    store, admin, principal_factory, node_key
):
    with store.session() as session:
        create_institution(session=session, actor=admin, name="Hungary")
        create_institution(session=session, actor=admin, name="Cleveland")
    hungary, _ = principal_factory("hu-ops", "institution", institution="Hungary")

    with store.session() as session, pytest.raises(PermissionDeniedError):
        register_node_key(
            session=session, actor=hungary, institution="Cleveland", public_key=node_key("x")
        )

    with store.session() as session:
        assert active_node_keys(session=session) == []
        event = audit.tail(session, limit=1)[0]
    assert (event["action"], event["outcome"]) == ("authorize", "denied")


def test_an_operator_cannot_register_nodes(store, principal_factory, node_key):
    operator, _ = principal_factory("op", "operator")

    with store.session() as session, pytest.raises(PermissionDeniedError):
        register_node_key(
            session=session, actor=operator, institution="VA", public_key=node_key("VA")
        )


def test_an_admin_registers_a_node_and_brings_the_institution_in(store, admin, node_key):
    with store.session() as session:
        register_node_key(session=session, actor=admin, institution="VA", public_key=node_key("VA"))

    with store.session() as session:
        keys = list_node_keys(session=session, actor=admin)
    assert [(k.institution, k.revoked) for k in keys] == [("VA", False)]


def test_a_key_is_registered_once_and_a_malformed_one_never(store, admin, node_key):
    line = node_key("VA")
    with store.session() as session:
        register_node_key(session=session, actor=admin, institution="VA", public_key=line)

    with store.session() as session, pytest.raises(ConflictError):
        register_node_key(session=session, actor=admin, institution="VA", public_key=line)
    with store.session() as session, pytest.raises(ConfigError):
        register_node_key(session=session, actor=admin, institution="VA", public_key="ssh-rsa AAAA")

    with store.session() as session:
        actions = [(e["action"], e["outcome"]) for e in audit.tail(session, limit=2)]
        assert len(active_node_keys(session=session)) == 1
    assert actions == [("node.register", "error"), ("node.register", "error")]


def test_a_revoked_key_is_no_longer_active_and_its_refusal_names_it(store, admin, node_key):
    line = node_key("VA")
    with store.session() as session:
        info = register_node_key(session=session, actor=admin, institution="VA", public_key=line)
    with store.session() as session:
        revoke_node_key(session=session, actor=admin, fingerprint_=info.fingerprint)

    with store.session() as session:
        assert active_node_keys(session=session) == []
        record_node_refusal(session=session, reason="No SuperNode found", public_key=line)
        record_node_refusal(session=session, reason="TLS handshake failed")
        refused, anonymous = audit.tail(session, limit=2)

    assert (refused["action"], refused["outcome"], refused["target"]) == (
        "node.refused",
        "denied",
        f"node:{info.fingerprint}",
    )
    assert refused["details"]["institution"] == "VA"
    assert refused["details"]["revoked"] == "yes"
    assert anonymous["target"] == "node:unknown"
    with store.session() as session:
        assert audit.verify_chain(session).broken is None


def test_revoking_by_institution_name_revokes_its_keys_and_raises_the_generation(
    store, admin, node_key
):
    from server.errors import NotFoundError
    from server.store import revocation
    from server.store.nodes import revoke_node_keys

    with store.session() as session:
        register_node_key(
            session=session, actor=admin, institution="Namur", public_key=node_key("Namur")
        )
        before = revocation.current(session)

    with store.session() as session:
        revoked = revoke_node_keys(session=session, actor=admin, name_or_fingerprint="Namur")
    with store.session() as session, pytest.raises(NotFoundError, match="Namur"):
        revoke_node_keys(session=session, actor=admin, name_or_fingerprint="Namur")

    assert [info.institution for info in revoked] == ["Namur"]
    with store.session() as session:
        assert active_node_keys(session=session) == []
    assert revocation.read_generation(store.engine) == before + 1
