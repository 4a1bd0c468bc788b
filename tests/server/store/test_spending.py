"""The ε entries' audited reads and the totals across runs."""

from __future__ import annotations

import math

import pytest

from server.errors import PermissionDeniedError
from server.store import audit, spending


def test_epsilon_totals_take_each_runs_latest_and_sum_across_runs(store, operator, two_runs):
    a, b = two_runs

    with store.session() as session:
        totals = {
            t.institution: t for t in spending.epsilon_totals(session=session, actor=operator)
        }

    assert totals["Cleveland"].runs == {a: 0.5, b: 0.4}
    assert math.isclose(totals["Cleveland"].epsilon, 0.9)
    assert math.isclose(totals["Cleveland"].delta, 2e-5)
    assert totals["Hungary"].runs == {a: 0.3}


def test_an_institution_reads_its_own_ledger_and_no_other(store, two_runs, principal_factory):
    member, _ = principal_factory("cleo", "institution", institution="Cleveland")

    with store.session() as session:
        own = spending.ledger_entries(session=session, actor=member, institution="Cleveland")
        event = audit.tail(session, limit=1)[0]
    assert {name for name, _ in own} == {"Cleveland"}
    assert sorted((e.round, e.epsilon) for _, e in own) == [(1, 0.2), (1, 0.4), (2, 0.5)]
    assert (event["actor"], event["action"], event["target"]) == (
        "cleo",
        "ledger.read",
        "ledger:Cleveland",
    )

    for other in ("Hungary", None):
        with pytest.raises(PermissionDeniedError), store.session() as session:
            spending.ledger_entries(session=session, actor=member, institution=other)


def test_an_auditor_reads_every_ledger(store, two_runs, principal_factory):
    auditor, _ = principal_factory("aude", "auditor")

    with store.session() as session:
        rows = spending.ledger_entries(session=session, actor=auditor)

    assert {name for name, _ in rows} == {"Cleveland", "Hungary"}
    assert len(rows) == 4
