"""Instant revocation and cheap, rate-limited, aggregated authentication failures."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from deploy.api import create_app
from deploy.serving_model import frame_to_rows
from server.store import audit, governance, keys
from server.store import repository as repo
from tests.deploy.conftest import settings_for


@pytest.fixture
def slow_cache_client(model_store):
    """A service whose key cache would keep identities for 5 minutes, without revocations."""
    app = create_app(
        settings_for(
            model_store.url,
            auth_cache_ttl_s=300,
            auth_failures_per_client=5,
            auth_failure_window_s=120,
        )
    )
    with TestClient(app) as test_client:
        yield test_client


def _enroll(model_store, name, role="consumer", **options):
    with model_store.store.session() as session:
        return governance.enroll_principal(session=session, name=name, role=role, **options)[1]


def _predict(client, model_store, token):
    body = {"rows": frame_to_rows(model_store.test_rows.head(1), model_store.spec)}
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post("/v1/models/heart/predict", json=body, headers=headers)


def _admin(session, model_store):
    return keys.authenticate(session, model_store.keys["admin"])


def test_a_revoked_key_is_refused_on_its_very_next_request(slow_cache_client, model_store):
    token = _enroll(model_store, "rita")
    assert _predict(slow_cache_client, model_store, token).status_code == 200

    with model_store.store.session() as session:
        governance.revoke_key(
            session=session, actor=_admin(session, model_store), prefix=keys.split_token(token)[0]
        )

    assert _predict(slow_cache_client, model_store, token).status_code == 401


def test_a_revoked_role_is_refused_on_its_very_next_request(slow_cache_client, model_store):
    token = _enroll(model_store, "rolf")
    assert _predict(slow_cache_client, model_store, token).status_code == 200

    with model_store.store.session() as session:
        governance.grant_role(
            session=session, actor=_admin(session, model_store), principal="rolf", role="auditor"
        )
    with model_store.store.session() as session:
        governance.revoke_role(
            session=session, actor=_admin(session, model_store), principal="rolf", role="consumer"
        )

    assert _predict(slow_cache_client, model_store, token).status_code == 403


def test_an_expired_key_is_refused_although_it_is_cached(slow_cache_client, model_store):
    enrolled = time.monotonic()
    token = _enroll(model_store, "erin", expires_days=8.0 / 86400)  # eight seconds
    assert _predict(slow_cache_client, model_store, token).status_code == 200

    time.sleep(max(0.0, enrolled + 8.5 - time.monotonic()))

    assert _predict(slow_cache_client, model_store, token).status_code == 401


def test_failures_are_rate_limited_and_audited_as_counts(slow_cache_client, model_store):
    good = _enroll(model_store, "gina")
    assert _predict(slow_cache_client, model_store, good).status_code == 200
    before = _audit_count(model_store)

    answers = [_predict(slow_cache_client, model_store, None) for _ in range(30)]
    answers += [
        _predict(slow_cache_client, model_store, "fw_0123456789ab_" + "x" * 43) for _ in range(10)
    ]
    still_good = _predict(slow_cache_client, model_store, good)

    statuses = [answer.status_code for answer in answers]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    assert all(1 <= int(a.headers["Retry-After"]) <= 120 for a in answers[5:])
    assert still_good.status_code == 200  # a known-good key is never held back
    deadline = time.monotonic() + 20
    while True:  # flushed every 0.5 s
        new = _audit_events(model_store)[before:]
        failures = [e for e in new if e["action"] == "authenticate.failures"]
        if sum(e["details"]["total"] for e in failures) >= 40 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert 1 <= len(failures) <= 10 and len(new) <= 12  # counts, not a row per request
    assert sum(e["details"]["total"] for e in failures) == 40
    assert sum(e["details"]["by_reason"].get("rate limited", 0) for e in failures) == 35


def test_an_unknown_prefix_costs_no_scrypt(model_store, monkeypatch):
    hashed: list[str] = []
    real = keys.hash_secret
    monkeypatch.setattr(
        keys, "hash_secret", lambda secret, *, salt: hashed.append(salt) or real(secret, salt=salt)
    )

    with (
        pytest.raises(Exception, match="authentication failed"),
        model_store.store.session() as session,
    ):
        keys.authenticate(session, "fw_0123456789ab_" + "x" * 43, audit_failures=False)

    assert hashed == []


def _audit_events(model_store):
    with model_store.store.session() as session:
        return list(audit.iter_events(session))


def _audit_count(model_store):
    return len(_audit_events(model_store))


def test_the_repository_exports_the_quiet_authenticate(model_store):
    with model_store.store.session() as session:
        assert repo.authenticate(session, model_store.keys["app"]).name == "app"


def test_a_good_key_past_its_cache_entry_is_not_held_back_by_a_flood(model_store):
    app = create_app(
        settings_for(model_store.url, auth_cache_ttl_s=0.5, auth_failures_per_client=3)
    )
    token = _enroll(model_store, "gus")
    with TestClient(app) as client:
        assert _predict(client, model_store, token).status_code == 200
        flood = [_predict(client, model_store, None).status_code for _ in range(10)]
        time.sleep(0.7)  # the cache entry times out; the key was verified before

        again = _predict(client, model_store, token)

    assert flood[-1] == 429 and again.status_code == 200
