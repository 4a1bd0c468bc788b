"""API keys: issued once, stored only as salted hashes, and every bad key fails the same way."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from server.errors import AuthenticationError, PermissionDeniedError
from server.store import audit, keys
from server.store.governance import issue_key, revoke_key
from server.store.models import ApiKey, utcnow


def _last_event(store):
    with store.session() as session:
        return audit.tail(session, limit=1)[0]


def _authenticate(store, token):
    with store.session() as session:
        return keys.authenticate(session, token)


def test_an_issued_key_authenticates_its_principal_and_is_marked_used(store, principal_factory):
    alice, token = principal_factory("alice", "auditor")

    assert _authenticate(store, token).name == "alice"
    with store.session() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.principal_id == alice.id)).one()
    assert row.last_used_at is not None
    assert token.startswith(f"fw_{row.prefix}_")


@pytest.mark.parametrize(
    "reason", ["wrong secret", "revoked", "expired", "unknown key", "malformed", "missing"]
)
def test_a_bad_key_fails_with_one_message_and_the_reason_is_audited(
    store, admin, principal_factory, reason
):
    _, token = principal_factory("alice", "auditor")
    parts = keys.split_token(token)
    assert parts is not None
    prefix = parts[0]
    presented: str | None = token
    if reason == "wrong secret":
        presented = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    elif reason == "revoked":
        with store.session() as session:
            revoke_key(session=session, actor=admin, prefix=prefix)
    elif reason == "expired":
        with store.session() as session:
            row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one()
            row.expires_at = utcnow() - timedelta(seconds=1)
    elif reason == "unknown key":
        presented = f"fw_{'0' * 12}_{token.split('_', 2)[2]}"
    elif reason == "malformed":
        presented = "Bearer something"
    else:
        presented = None

    with pytest.raises(AuthenticationError) as caught:
        _authenticate(store, presented)

    assert str(caught.value) == (
        "authentication failed: the API key is missing, wrong, revoked or expired"
    )
    event = _last_event(store)
    assert (event["actor"], event["action"], event["outcome"]) == (
        "anonymous",
        "authenticate",
        "failure",
    )
    assert event["details"]["reason"] == reason
    if reason in {"wrong secret", "revoked", "expired"}:
        assert event["details"]["key_owner"] == "alice"


def test_a_key_with_a_lifetime_works_until_it_expires(store, admin, principal_factory):
    principal_factory("bob", "admin")
    with store.session() as session:
        token, row = issue_key(session=session, actor=admin, principal="bob", expires_days=1)

    assert _authenticate(store, token).name == "bob"
    assert timedelta(hours=23) < row.expires_at - utcnow() <= timedelta(days=1)


def test_the_secret_is_stored_nowhere(store, store_url, principal_factory):
    _, token = principal_factory("carol", "operator")
    secret = keys.split_token(token)[1]
    _authenticate(store, token)

    with store.engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            for row in connection.execute(text(f"SELECT * FROM {table}")):
                for value in row:
                    assert secret not in str(value), f"the secret is in table {table}"
    if store_url.startswith("sqlite"):
        store.dispose()
        database = Path(store_url.removeprefix("sqlite:///"))
        files = [database, database.with_name(database.name + "-wal")]
        assert database.stat().st_size > 0
        for path in files:
            if path.exists():
                assert secret.encode() not in path.read_bytes(), f"the secret is in {path}"


def test_tokens_are_unique_and_hashes_are_salted(store, admin, principal_factory):
    principal_factory("dave", "admin")
    with store.session() as session:
        first, row1 = issue_key(session=session, actor=admin, principal="dave")
        second, row2 = issue_key(session=session, actor=admin, principal="dave")

    assert first != second
    assert row1.salt != row2.salt
    assert row1.secret_hash == keys.hash_secret(keys.split_token(first)[1], salt=row1.salt)
    assert row1.secret_hash != keys.hash_secret(keys.split_token(first)[1], salt=row2.salt)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "fw_",
        "fw_abc_defghijklmnopqrstu",
        "xx_0123456789ab_defghijklmnopqrstu",
        "fw_0123456789AB_defghijklmnopqrstu",
    ],
)
def test_malformed_tokens_do_not_parse(token):
    assert keys.split_token(token) is None


def test_a_rotated_key_overlaps_the_new_one_then_expires(store, admin, principal_factory):
    from server.store.governance import rotate_key

    principal_factory("dora", "admin")  # an admin may mint keys for roles it holds
    with store.session() as session:
        old_token, old_row = issue_key(session=session, actor=admin, principal="dora")
    with store.session() as session:
        new_token, new_row, old = rotate_key(
            session=session, actor=admin, prefix=old_row.prefix, overlap_hours=2
        )

    assert _authenticate(store, new_token).name == "dora"
    assert _authenticate(store, old_token).name == "dora"  # still inside the overlap
    assert timedelta(hours=1) < old.expires_at - utcnow() <= timedelta(hours=2)
    with store.session() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.prefix == old_row.prefix)).one()
        row.expires_at = utcnow() - timedelta(seconds=1)  # the overlap has passed
        event = audit.tail(session, limit=1)[0]
    with pytest.raises(AuthenticationError):
        _authenticate(store, old_token)
    assert _authenticate(store, new_token).name == "dora"
    assert event["action"] == "key.rotate" and event["details"]["new_prefix"] == new_row.prefix
    assert new_token not in str(event)


def test_a_key_is_not_rotated_by_an_actor_lacking_its_owners_roles(store, admin, principal_factory):
    from server.store.governance import rotate_key

    _, token = principal_factory("erin", "consumer")  # enrolled by the coordinator's owner
    parts = keys.split_token(token)
    assert parts is not None
    prefix = parts[0]
    with store.session() as session, pytest.raises(PermissionDeniedError):
        rotate_key(session=session, actor=admin, prefix=prefix)
