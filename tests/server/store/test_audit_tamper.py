"""Held-out tamper kinds against the keyed audit chain, done as a database writer would.

Every tamper here has raw SQL access to the store, and knows the chain's format
(so it recomputes SHA-256 links), but not the audit key kept outside the store.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from server.store import anchoring, audit
from server.store.audit_key import locator_for
from server.store.engine import open_store
from server.store.models import AuditEvent
from server.store.settings import StoreSettings


def _append(store, count, *, actor="tester"):
    for index in range(count):
        with store.session() as session:
            audit.append(session, actor=actor, action="test.append", details={"index": index})


def _verify(store, **kwargs):
    with store.session() as session:
        return audit.verify_chain(session, **kwargs)


def _events(store):
    with store.session() as session:
        return list(audit.iter_events(session))


def _rewrite(store, events, *, from_seq=1):
    """Replace the log with ``events``, links from ``from_seq`` on recomputed without the key."""
    rows, prev = [], audit.GENESIS_HASH
    for seq, original in enumerate(events, start=1):
        if seq < from_seq:
            rows.append({**original, "time": _parse(original["time"])})
            prev = original["hash"]
            continue
        event = {**original, "seq": seq, "prev_hash": prev}
        event["hash"] = prev = audit.event_hash(event)
        rows.append({**event, "time": _parse(event["time"])})
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_events"))
        if rows:
            connection.execute(AuditEvent.__table__.insert(), rows)


def _raw(store, statement, **params):
    with store.engine.begin() as connection:
        connection.execute(text(statement), params)


def _parse(stamp):
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@pytest.fixture
def logged(store):
    _append(store, 12)
    assert _verify(store).broken is None
    return store


def test_an_edit_fails(logged):
    _raw(logged, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 6")

    assert _verify(logged).broken.seq == 6


def test_a_deletion_fails(logged):
    _raw(logged, "DELETE FROM audit_events WHERE seq = 7")

    assert _verify(logged).broken.seq == 7


def test_a_reorder_fails(logged):
    _raw(logged, "UPDATE audit_events SET seq = -1 WHERE seq = 4")
    _raw(logged, "UPDATE audit_events SET seq = 4 WHERE seq = 9")
    _raw(logged, "UPDATE audit_events SET seq = 9 WHERE seq = -1")

    assert _verify(logged).broken.seq == 4


def test_an_insert_with_the_chain_recomputed_fails(logged):
    events = _events(logged)
    forged = {**events[5], "actor": "admin", "action": "role.grant", "details": {"role": "admin"}}

    _rewrite(logged, [*events[:6], forged, *events[6:]], from_seq=7)

    broken = _verify(logged).broken
    assert broken is not None and broken.seq == 7 and "MAC" in broken.reason


def test_an_erase_and_renumber_fails(logged):
    events = _events(logged)
    kept = [event for event in events if event["seq"] not in (3, 4, 5, 8)]

    _rewrite(logged, kept, from_seq=3)

    broken = _verify(logged).broken
    assert broken is not None and broken.seq == 3 and "MAC" in broken.reason


def test_an_erase_and_renumber_of_the_unkeyed_links_only_fails(logged):
    """Renumbering without recomputing: the MACs cover seq and the previous hash."""
    _raw(logged, "DELETE FROM audit_events WHERE seq = 5")
    for seq in range(6, 15):
        _raw(logged, "UPDATE audit_events SET seq = :new WHERE seq = :old", new=seq - 1, old=seq)

    assert _verify(logged).broken.seq == 5


def test_an_empty_log_fails(logged):
    _raw(logged, "DELETE FROM audit_events")

    broken = _verify(logged).broken
    assert broken is not None and "empty" in broken.reason


def test_a_log_recreated_without_a_genesis_fails(logged):
    events = [event for event in _events(logged) if event["action"] != audit.GENESIS_ACTION]

    _rewrite(logged, events)

    broken = _verify(logged).broken
    assert broken is not None and "genesis" in broken.reason


def test_truncation_after_the_last_receipt_fails_with_the_pinned_key(logged, tmp_path):
    signing = tmp_path / "coordinator.pem"
    pinned = anchoring.generate_signing_key(signing)
    with logged.session() as session:
        receipt = anchoring.checkpoint(session, anchoring.load_signing_key(signing))
    _append(logged, 3)

    _raw(logged, "DELETE FROM audit_events WHERE seq >= :seq", seq=receipt.seq - 2)

    anchoring.verify_receipt(receipt, public_key=pinned)
    broken = _verify(logged, anchor=(receipt.seq, receipt.head_hash)).broken
    assert broken is not None and "cut short" in broken.reason


def test_truncation_past_an_automatic_checkpoint_fails_without_a_receipt(store_url, tmp_path):
    settings = StoreSettings.load(store_url).model_copy(
        update={"audit_checkpoint_every": 5, "audit_key_file": str(tmp_path / "audit.key")}
    )
    store = open_store(settings)
    _append(store, 20)
    checkpoints = audit.read_checkpoints(tmp_path / "audit.key.checkpoints.jsonl")
    assert [line["seq"] for line in checkpoints] == [2, 7, 12, 17]

    _raw(store, "DELETE FROM audit_events WHERE seq >= 15")

    broken = _verify(store).broken
    store.dispose()
    assert broken is not None and broken.seq == 12 + 5 and "cut short" in broken.reason


def test_an_edited_checkpoint_file_fails(store_url, tmp_path):
    key_file = tmp_path / "audit.key"
    settings = StoreSettings.load(store_url).model_copy(
        update={"audit_checkpoint_every": 3, "audit_key_file": str(key_file)}
    )
    store = open_store(settings)
    _append(store, 8)
    lines = key_file.with_name("audit.key.checkpoints.jsonl")
    lines.write_text(lines.read_text().replace('"seq": 5', '"seq": 50'))

    broken = _verify(store).broken
    store.dispose()
    assert broken is not None and "checkpoints file" in broken.reason


def test_a_log_keyed_with_another_key_fails(logged, tmp_path):
    locator = locator_for(logged.engine)
    genuine = locator.key
    locator.key = None
    locator.path = tmp_path / "other.key"
    other = locator.create_key()
    assert other.key_id != genuine.key_id

    broken = _verify(logged).broken
    assert broken is not None and broken.seq == 1


def test_a_store_from_before_keyed_chains_is_keyed_on_its_next_event(store_url, tmp_path):
    store = open_store(store_url)
    legacy = [
        {
            "seq": 0,
            "time": "2026-01-01T00:00:00.000000Z",
            "actor": "system",
            "action": "store.upgrade",
            "target": "store",
            "outcome": "success",
            "details": {"index": index},
            "prev_hash": "",
        }
        for index in range(3)
    ]
    _rewrite(store, legacy)  # as an older fedwarden wrote it: SHA-256 links, no genesis
    store.dispose()
    settings = StoreSettings.load(store_url).model_copy(
        update={"audit_key_file": str(tmp_path / "new.key")}
    )

    reopened = open_store(settings)
    _append(reopened, 2)
    events = _events(reopened)
    report = _verify(reopened)
    prefix, prev = [], audit.GENESIS_HASH
    for original in events[:3]:  # the unkeyed prefix edited and its links recomputed
        event = {**original, "details": {"index": 9}, "prev_hash": prev}
        event["hash"] = prev = audit.event_hash(event)
        prefix.append(event)
    _rewrite(reopened, [*prefix, *events[3:]], from_seq=99)
    tampered = _verify(reopened).broken
    reopened.dispose()

    assert report.broken is None and report.events == 6
    assert events[3]["action"] == audit.GENESIS_ACTION
    assert events[3]["details"]["unkeyed_events"] == 3
    assert tampered is not None and tampered.seq == 4  # the genesis pins the unkeyed prefix


def test_a_missing_key_refuses_to_write_a_keyed_log(store_url, tmp_path):
    key_file = tmp_path / "audit.key"
    settings = StoreSettings.load(store_url).model_copy(update={"audit_key_file": str(key_file)})
    open_store(settings).dispose()
    key_file.unlink()

    from privacy.errors import ConfigError

    store = open_store(settings, upgrade=False)
    with pytest.raises(ConfigError, match=r"audit key .* is missing"):
        _append(store, 1)
    store.dispose()
    assert not key_file.exists()  # never a fresh key for a log that has a genesis
