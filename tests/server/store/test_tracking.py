"""Runs, the ledger's audited reads, ε totals across runs, and resume checkpoints."""

from __future__ import annotations

import math

import pytest

from client.contract.report import FitReport
from server.errors import NotFoundError, PermissionDeniedError
from server.records import RoundRecord
from server.store import audit, tracking


def _record(number: int, spent: dict[str, float]) -> RoundRecord:
    return RoundRecord(
        round=number,
        loss=0.5,
        accuracy=0.8,
        accuracy_by_institution={},
        epsilon=spent,
        participants=sorted(spent),
        reports=[
            FitReport(
                institution=name,
                round=number,
                epsilon=epsilon,
                delta=1e-5,
                steps=10,
                noise_multiplier=1.0,
                sample_rate=0.1,
                max_grad_norm=1.0,
            )
            for name, epsilon in spent.items()
        ],
    )


@pytest.fixture
def operator(principal_factory):
    return principal_factory("olga", "operator")[0]


@pytest.fixture
def two_runs(store, operator):
    """Run a: Cleveland 0.2 then 0.5, Hungary 0.3; run b: Cleveland 0.4."""
    with store.session() as session:
        a = tracking.start_run(
            session=session,
            actor=operator,
            name="a",
            config={},
            institutions=["Cleveland", "Hungary"],
        ).id
        tracking.record_round(
            session=session,
            actor=operator,
            run_id=a,
            record=_record(1, {"Cleveland": 0.2, "Hungary": 0.3}),
        )
        tracking.record_round(
            session=session, actor=operator, run_id=a, record=_record(2, {"Cleveland": 0.5})
        )
        b = tracking.start_run(session=session, actor=operator, name="b", config={}).id
        tracking.record_round(
            session=session, actor=operator, run_id=b, record=_record(1, {"Cleveland": 0.4})
        )
    return a, b


def test_epsilon_totals_take_each_runs_latest_and_sum_across_runs(store, operator, two_runs):
    a, b = two_runs

    with store.session() as session:
        totals = {
            t.institution: t for t in tracking.epsilon_totals(session=session, actor=operator)
        }

    assert totals["Cleveland"].runs == {a: 0.5, b: 0.4}
    assert math.isclose(totals["Cleveland"].epsilon, 0.9)
    assert math.isclose(totals["Cleveland"].delta, 2e-5)
    assert totals["Hungary"].runs == {a: 0.3}


def test_an_institution_reads_its_own_ledger_and_no_other(store, two_runs, principal_factory):
    member, _ = principal_factory("cleo", "institution", institution="Cleveland")

    with store.session() as session:
        own = tracking.ledger_entries(session=session, actor=member, institution="Cleveland")
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
            tracking.ledger_entries(session=session, actor=member, institution=other)


def test_an_auditor_reads_every_ledger(store, two_runs, principal_factory):
    auditor, _ = principal_factory("aude", "auditor")

    with store.session() as session:
        rows = tracking.ledger_entries(session=session, actor=auditor)

    assert {name for name, _ in rows} == {"Cleveland", "Hungary"}
    assert len(rows) == 4


def test_checkpoints_keep_the_latest_round(store, operator, two_runs):
    a, _ = two_runs

    with store.session() as session:
        assert tracking.latest_checkpoint(session=session, actor=operator, run_id=a) is None
        tracking.save_checkpoint(session=session, actor=operator, run_id=a, round=1, blob=b"one")
        tracking.save_checkpoint(session=session, actor=operator, run_id=a, round=2, blob=b"two")
        tracking.save_checkpoint(session=session, actor=operator, run_id=a, round=2, blob=b"2!")
    with store.session() as session:
        latest = tracking.latest_checkpoint(session=session, actor=operator, run_id=a)

    assert (latest.round, latest.blob) == (2, b"2!")


def test_stopping_a_run_needs_run_stop(store, operator, two_runs, principal_factory):
    a, _ = two_runs
    auditor, _ = principal_factory("aude", "auditor")

    with pytest.raises(PermissionDeniedError), store.session() as session:
        tracking.end_run(session=session, actor=auditor, run_id=a, status="stopped", reason="no")
    with store.session() as session:
        run = tracking.end_run(
            session=session, actor=operator, run_id=a, status="stopped", reason="stopped by olga"
        )

    assert (run.status, run.stopped_reason) == ("stopped", "stopped by olga")


def test_an_unknown_run_is_refused_and_audited(store, operator):
    with pytest.raises(NotFoundError, match="no run with id 'nope'"), store.session() as session:
        tracking.record_round(session=session, actor=operator, run_id="nope", record=_record(1, {}))

    with store.session() as session:
        event = audit.tail(session, limit=1)[0]
    assert (event["action"], event["outcome"], event["target"]) == (
        "round.record",
        "error",
        "run:nope",
    )


def test_reading_a_run_returns_its_rounds_and_is_audited(store, two_runs, principal_factory):
    a, _ = two_runs
    auditor, _ = principal_factory("aude", "auditor")

    with store.session() as session:
        run, rounds = tracking.get_run(session=session, actor=auditor, run_id=a)
        event = audit.tail(session, limit=1)[0]

    assert (run.name, [r.round for r in rounds]) == ("a", [1, 2])
    assert (event["actor"], event["action"], event["target"]) == ("aude", "run.read", f"run:{a}")
