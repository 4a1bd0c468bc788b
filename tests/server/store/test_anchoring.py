"""Signed receipts of the audit log's head, and the coordinator's key file."""

from __future__ import annotations

import base64
import dataclasses
import stat
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from privacy.errors import ConfigError
from server.errors import AuditChainError
from server.store import anchoring, audit
from server.store.models import AuditEvent


@pytest.fixture
def key_path(tmp_path):
    path = tmp_path / "coordinator.pem"
    anchoring.generate_signing_key(path)
    return path


def _append(store, count):
    for index in range(count):
        with store.session() as session:
            audit.append(session, actor="tester", action="test.append", details={"i": index})


def test_the_key_file_is_private_and_never_overwritten(key_path):
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="never overwritten"):
        anchoring.generate_signing_key(key_path)


def test_a_key_readable_by_others_is_refused(key_path):
    key_path.chmod(0o644)

    with pytest.raises(ConfigError, match="readable by others"):
        anchoring.load_signing_key(key_path)


def test_a_file_that_is_not_a_key_is_refused(tmp_path):
    path = tmp_path / "not-a-key.pem"
    path.write_text("hello")
    path.chmod(0o600)

    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        anchoring.load_signing_key(path)


def test_a_receipt_signs_the_head_and_verifies(store, key_path):
    _append(store, 3)
    key = anchoring.load_signing_key(key_path)

    with store.session() as session:
        receipt = anchoring.checkpoint(session, key)
        head = audit.head(session)

    assert (receipt.seq, receipt.head_hash) == head
    assert receipt.public_key == anchoring.public_key_hex(key.public_key())
    anchoring.verify_receipt(receipt, public_key=receipt.public_key)
    assert anchoring.Receipt.from_json(receipt.to_json()) == receipt


def test_a_forged_or_foreign_receipt_is_refused(store, key_path, tmp_path):
    key = anchoring.load_signing_key(key_path)
    with store.session() as session:
        receipt = anchoring.checkpoint(session, key)
    other_path = tmp_path / "other.pem"
    other_public = anchoring.generate_signing_key(other_path)

    moved = dataclasses.replace(receipt, seq=receipt.seq + 1)
    with pytest.raises(AuditChainError, match="invalid signature"):
        anchoring.verify_receipt(moved, public_key=receipt.public_key)
    garbled = dataclasses.replace(receipt, signature=base64.b64encode(b"x" * 64).decode())
    with pytest.raises(AuditChainError, match="invalid signature"):
        anchoring.verify_receipt(garbled, public_key=receipt.public_key)
    with pytest.raises(AuditChainError, match="another key"):
        anchoring.verify_receipt(receipt, public_key=other_public)


def test_a_rewritten_log_no_longer_holds_the_receipt(store, key_path):
    _append(store, 3)
    with store.session() as session:
        receipt = anchoring.checkpoint(session, anchoring.load_signing_key(key_path))

    # Rewrite the whole log consistently: every hash recomputed, so the chain alone looks whole.
    with store.session() as session:
        events = audit.tail(session, limit=100)
    rewritten, prev = [], audit.GENESIS_HASH
    for original in events:
        event = {**original, "actor": "rewritten", "prev_hash": prev}
        event["hash"] = prev = audit.event_hash(event)
        rewritten.append({**event, "time": _parse(event["time"])})
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_events"))
        connection.execute(AuditEvent.__table__.insert(), rewritten)

    with store.session() as session:
        assert audit.verify_chain(session).broken is not None  # no genesis under the key
        broken = audit.verify_chain(session, anchor=(receipt.seq, receipt.head_hash)).broken
    assert broken is not None and broken.seq == 1


def test_a_malformed_receipt_is_a_config_error():
    with pytest.raises(ConfigError, match="not an audit receipt"):
        anchoring.Receipt.from_json('{"seq": "x"}')


def _parse(stamp):
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
