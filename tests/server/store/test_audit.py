"""The audit chain: intact, tampered with in raw SQL, and appended to by many writers at once."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from sqlalchemy import delete, text, update

from server.errors import StoreError
from server.store import audit
from server.store.audit_key import locator_for
from server.store.engine import open_store
from server.store.models import AuditEvent, utcnow


def _append(store, count, *, actor="tester"):
    for index in range(count):
        with store.session() as session:
            audit.append(
                session,
                actor=actor,
                action="test.append",
                target=f"thing:{index}",
                details={"index": index, "epsilon": 0.1 * index, "note": "ε ≤ 1"},
            )


def _verify(store, **kwargs):
    with store.session() as session:
        return audit.verify_chain(session, **kwargs)


def _raw(store, statement, **params):
    with store.engine.begin() as connection:
        connection.execute(statement if not isinstance(statement, str) else text(statement), params)


def test_an_untouched_chain_verifies(store):
    _append(store, 9)

    report = _verify(store)

    assert report.broken is None
    assert report.events == 11  # 9, the store's creation and the genesis
    with store.session() as session:
        assert (report.head_seq, report.head_hash) == audit.head(session)


def test_events_link_to_their_predecessors(store):
    _append(store, 3)

    with store.session() as session:
        events = audit.tail(session, limit=10)

    assert events[0]["prev_hash"] == audit.GENESIS_HASH
    assert events[0]["action"] == audit.GENESIS_ACTION
    for before, after in pairwise(events):
        assert after["prev_hash"] == before["hash"]
        assert after["seq"] == before["seq"] + 1


def test_a_modified_event_is_named(store):
    _append(store, 9)

    _raw(store, "UPDATE audit_events SET details = '{\"index\": 99}' WHERE seq = 5")

    broken = _verify(store).broken
    assert broken is not None and broken.seq == 5
    assert "modified" in broken.reason


def test_a_modified_actor_is_named(store):
    _append(store, 9)

    _raw(store, "UPDATE audit_events SET actor = 'someone-else' WHERE seq = 7")

    assert _verify(store).broken.seq == 7


def test_a_deleted_event_is_named(store):
    _append(store, 9)

    _raw(store, "DELETE FROM audit_events WHERE seq = 4")

    broken = _verify(store).broken
    assert broken is not None and broken.seq == 4
    assert "missing" in broken.reason


def test_a_forged_event_is_named(store):
    _append(store, 9)
    with store.session() as session:
        head_seq, head_hash = audit.head(session)

    _raw(
        store,
        AuditEvent.__table__.insert().values(
            seq=head_seq + 1,
            time=utcnow(),
            actor="admin",
            action="role.grant",
            target="principal:mallory",
            outcome="success",
            details={"role": "admin"},
            prev_hash=head_hash,
            hash="f" * 64,
        ),
    )

    broken = _verify(store).broken
    assert broken is not None and broken.seq == head_seq + 1


def test_a_forged_event_with_a_valid_hash_breaks_the_next_link(store):
    _append(store, 9)
    with store.session() as session:
        events = {e["seq"]: e for e in audit.tail(session, limit=20)}
    forged = {**events[5], "details": {"role": "admin"}}
    forged["hash"] = audit.event_hash(forged)  # recomputed, but without the audit key

    _raw(store, "DELETE FROM audit_events WHERE seq = 5")
    _raw(store, AuditEvent.__table__.insert().values({**forged, "time": _parse(forged["time"])}))

    broken = _verify(store).broken
    assert broken is not None and broken.seq == 5
    assert "MAC" in broken.reason


def test_swapped_events_are_named(store):
    _append(store, 9)

    _raw(store, "UPDATE audit_events SET seq = -1 WHERE seq = 3")
    _raw(store, "UPDATE audit_events SET seq = 3 WHERE seq = 8")
    _raw(store, "UPDATE audit_events SET seq = 8 WHERE seq = -1")

    broken = _verify(store).broken
    assert broken is not None and broken.seq == 3


def test_reordered_times_are_named(store):
    _append(store, 9)
    with store.session() as session:
        events = {e["seq"]: e for e in audit.tail(session, limit=20)}

    _raw(store, "UPDATE audit_events SET time = :t WHERE seq = 2", t=_parse(events[6]["time"]))

    assert _verify(store).broken.seq == 2


def test_the_orm_refuses_to_change_or_delete_an_event(store):
    _append(store, 1)

    with pytest.raises(StoreError, match="append-only"), store.session() as session:
        event = session.get(AuditEvent, 2)
        event.actor = "someone-else"
        session.flush()
    with pytest.raises(StoreError, match="append-only"), store.session() as session:
        session.delete(session.get(AuditEvent, 2))
        session.flush()

    assert _verify(store).broken is None


def test_bulk_statements_through_the_orm_session_still_get_caught(store):
    _append(store, 3)

    with store.session() as session:  # an ORM-enabled UPDATE skips mapper events: verify sees it
        session.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(outcome="denied"))
        session.execute(delete(AuditEvent).where(AuditEvent.seq == 4))

    assert _verify(store).broken.seq == 2


def test_an_export_verifies_on_its_own_and_names_the_same_break(store):
    _append(store, 5)
    out = io.StringIO()
    with store.session() as session:
        count = audit.export_jsonl(session, out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]

    key = locator_for(store.engine).require_key()

    assert count == len(lines) == 7
    assert audit.verify_events(lines, key=key).broken is None
    lines[3]["outcome"] = "denied"
    assert audit.verify_events(lines, key=key).broken.seq == 4


def test_an_anchor_catches_a_log_cut_short(store):
    _append(store, 5)
    with store.session() as session:
        anchor = audit.head(session)

    _raw(store, "DELETE FROM audit_events WHERE seq = :seq", seq=anchor[0])

    report = _verify(store, anchor=anchor)
    assert report.broken is not None and report.broken.seq == anchor[0]
    assert "cut short" in report.broken.reason
    assert _verify(store).broken is None  # without the anchor the shorter chain looks whole


def test_threads_appending_at_once_extend_one_chain(store):
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            _append(store, 40, actor=f"thread-{number}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    report = _verify(store)
    assert errors == []
    assert report.broken is None
    assert report.events == 2 + 8 * 40


_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from server.store import audit
    from server.store.engine import open_store

    url, count, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    store = open_store(url, upgrade=False)
    with store.engine.connect():
        pass
    while not os.path.exists(go):
        time.sleep(0.005)
    for index in range(count):
        with store.session() as session:
            audit.append(session, actor=f"process-{os.getpid()}", action="test.append",
                         details={"index": index})
    store.dispose()
    """
)


@pytest.mark.postgres
def test_eight_processes_appending_500_events_each_extend_one_chain(postgres_url, tmp_path):
    open_store(postgres_url).dispose()  # created once, before the writers start
    go = tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, postgres_url, "500", str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(8)
    ]
    time.sleep(1.0)  # let them import and connect, then release them together
    go.touch()
    # Throughput is benchmarks/bench_audit.py's business; here the bound only stops a hang.
    outputs = [writer.communicate(timeout=600)[0] for writer in writers]

    assert [writer.returncode for writer in writers] == [0] * 8, outputs
    store = open_store(postgres_url)
    with store.session() as session:
        report = audit.verify_chain(session)
        actors = {e["actor"] for e in audit.tail(session, limit=4000)}
    store.dispose()
    assert report.broken is None
    assert report.events == 2 + 8 * 500
    assert len(actors) == 8  # every writer got its turn


def _parse(stamp):
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
