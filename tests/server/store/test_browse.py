"""Paged reads for screens (``server.store.browse``) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from privacy.errors import ConfigError
from server.errors import PermissionDeniedError
from server.store import audit, browse
from server.store.engine import Store
from server.store.models import AuditEvent, utcnow
from server.store.runs import start_run


def test_runs_come_in_pages_newest_first_with_round_counts(store: Store, principal_factory) -> None:  # type: ignore[no-untyped-def]
    ops, _ = principal_factory("ops", "operator")
    with store.session() as session:
        for n in range(5):
            run = start_run(session=session, actor=ops, name=f"run-{n}", config={"strategy": "fedavg"},
                            institutions=["A", "B"])
            run.started_at = utcnow() + timedelta(minutes=n)

    with store.session() as session:
        first = browse.list_runs(session=session, actor=ops, limit=2)
        last = browse.list_runs(session=session, actor=ops, limit=2, offset=4)

    assert first.total == 5 and [r.name for r in first.runs] == ["run-4", "run-3"]
    assert [r.name for r in last.runs] == ["run-0"] and last.runs[0].rounds == 0
    with store.session() as session, pytest.raises(ConfigError):
        browse.list_runs(session=session, actor=ops, limit=0)


def test_the_audit_log_pages_by_sequence_and_filters(store: Store, principal_factory) -> None:  # type: ignore[no-untyped-def]
    eve, _ = principal_factory("eve", "auditor")
    with store.session() as session:
        for n in range(30):
            audit.append(session, actor=("alice", "bob")[n % 2], action=("x.read", "x.write")[n % 3 == 0],
                         target=f"t:{n}")

    with store.session() as session:
        page1 = browse.audit_page(session=session, actor=eve, where=browse.AuditFilter(actor="alice"), limit=10)
        page2 = browse.audit_page(session=session, actor=eve, where=browse.AuditFilter(actor="alice"),
                                  before=page1.next_before, limit=10)
        writes = browse.audit_page(session=session, actor=eve,
                                   where=browse.AuditFilter(actor="bob", action="x.write"), limit=50)
        future = browse.audit_page(session=session, actor=eve,
                                   where=browse.AuditFilter(since=utcnow() + timedelta(days=1)), limit=50)

    seqs = [e["seq"] for e in page1.events + page2.events]
    assert len(page1.events) == 10 and len(page2.events) == 5 and page2.next_before is None
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 15
    assert {e["actor"] for e in page1.events + page2.events} == {"alice"}
    assert {(e["actor"], e["action"]) for e in writes.events} == {("bob", "x.write")} and len(writes.events) == 5
    assert future.events == []
    with store.session() as session:
        browsed = session.scalars(select(AuditEvent).where(AuditEvent.action == "audit.browse")).all()
    assert len(browsed) == 4 and browsed[0].details["actor"] == "alice"


def test_reads_are_refused_and_audited_without_the_permission(store: Store, principal_factory) -> None:  # type: ignore[no-untyped-def]
    app, _ = principal_factory("app", "consumer")
    ops, _ = principal_factory("ops", "operator")

    for read in (
        lambda s: browse.list_runs(session=s, actor=app),
        lambda s: browse.institutions(session=s, actor=app),
        lambda s: browse.drift_heads(session=s, actor=app),
        lambda s: browse.audit_page(session=s, actor=ops, where=browse.AuditFilter()),
    ):
        with store.session() as session, pytest.raises(PermissionDeniedError):
            read(session)

    with store.session() as session:
        denials = session.scalars(select(AuditEvent).where(AuditEvent.action == "authorize")).all()
    assert [d.outcome for d in denials] == ["denied"] * 4


def test_institutions_show_node_keys_only_to_those_who_may_read_them(store: Store, principal_factory) -> None:  # type: ignore[no-untyped-def]
    ops, _ = principal_factory("ops", "operator")
    eve, _ = principal_factory("eve", "auditor")
    with store.session() as session:
        start_run(session=session, actor=ops, name="r", config={}, institutions=["Hungary"])

    with store.session() as session:
        seen_by_ops = browse.institutions(session=session, actor=ops)
        seen_by_eve = browse.institutions(session=session, actor=eve)

    assert [i.name for i in seen_by_ops] == ["Hungary"] and seen_by_ops[0].nodes is None
    assert seen_by_eve[0].nodes == [] and seen_by_eve[0].last_seen is None
