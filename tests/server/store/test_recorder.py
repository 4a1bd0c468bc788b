"""StoreRecorder: a run's start, rounds, ledger and end, as a run would report them."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from sqlalchemy import select

from client.contract.report import FitReport
from server.errors import PermissionDeniedError
from server.run_events import Institution, RoundRecord, RunResult, RunStart
from server.store import audit
from server.store.models import Institution as InstitutionRow
from server.store.models import LedgerEntry, Principal, Round, Run
from server.store.recorder import StoreRecorder


def _start() -> RunStart:
    return RunStart(
        institutions=[
            Institution(
                node_id=n,
                name=name,
                num_train=100,
                num_test=20,
                budget_epsilon=1.0,
                budget_delta=1e-5,
                require_secagg=False,
            )
            for n, name in enumerate(["Cleveland", "Hungary", "Switzerland"])
        ],
        settings={"plan": {"num-server-rounds": 2, "dp": True}, "strategy": "fedavg"},
        secure=True,
    )


def _report(institution: str, round: int, *, epsilon: float, refused: bool = False) -> FitReport:
    return FitReport(
        institution=institution,
        round=round,
        refused=refused,
        reason="would pass its budget" if refused else "",
        num_examples=0 if refused else 100,
        train_loss=0.5,
        epsilon=epsilon,
        epsilon_next=epsilon + 0.2,
        epsilon_budget=1.0,
        delta=1e-5,
        noise_multiplier=1.1,
        sample_rate=0.05,
        steps=40,
        max_grad_norm=1.0,
    )


def _round(number: int, *, epsilon: float) -> RoundRecord:
    return RoundRecord(
        round=number,
        loss=0.6,
        accuracy=0.7,
        accuracy_by_institution={"Cleveland": 0.72, "Hungary": 0.68},
        epsilon={"Cleveland": epsilon, "Hungary": epsilon, "Switzerland": 0.9},
        participants=["Cleveland", "Hungary"],
        refused={"Switzerland": "would pass its budget"},
        dropped={"Basel": "timed out"},
        reports=[
            _report("Cleveland", number, epsilon=epsilon),
            _report("Hungary", number, epsilon=epsilon),
            _report("Switzerland", number, epsilon=0.9, refused=True),
        ],
        secagg={"num_shares": 3, "reconstruction_threshold": 2, "clipping_range": 8.0},
        central_epsilon=0.25 * number,
        duration_s=1.5,
    )


def _result(rounds: list[RoundRecord]) -> RunResult:
    return RunResult(
        weights=[np.zeros(3)],
        model_spec={"kind": "mlp"},
        preprocessing="{}",
        rounds=rounds,
        stopped_reason="completed every round",
    )


def _ledger(store, run_id):
    with store.session() as session:
        rows = session.execute(
            select(InstitutionRow.name, LedgerEntry)
            .join(InstitutionRow, InstitutionRow.id == LedgerEntry.institution_id)
            .where(LedgerEntry.run_id == run_id)
            .order_by(LedgerEntry.round, InstitutionRow.name)
        )
        return [(name, e.round, e.steps, e.epsilon, e.refused) for name, e in rows]


def test_a_whole_run_is_recorded(store_url):
    recorder = StoreRecorder.open(store_url, run_name="heart-dp")
    rounds = [_round(1, epsilon=0.3), _round(2, epsilon=0.55)]

    recorder.on_run_start(_start())
    for record in rounds:
        recorder.on_round_end(record)
    recorder.on_run_end(_result(rounds))

    store = recorder.store
    with store.session() as session:
        run = session.get_one(Run, recorder.run_id)
        starter = session.get_one(Principal, run.started_by_id)
        stored_rounds = session.scalars(select(Round).where(Round.run_id == run.id)).all()
        members = set(session.scalars(select(InstitutionRow.name)))
        actions = [e["action"] for e in audit.tail(session, limit=50)]
        intact = audit.verify_chain(session).broken is None
    assert (run.name, run.status, run.stopped_reason) == (
        "heart-dp",
        "completed",
        "completed every round",
    )
    assert run.config["strategy"] == "fedavg" and run.config["secure"] is True
    assert run.ended_at is not None and run.ended_at >= run.started_at
    assert (starter.name, starter.kind) == ("coordinator", "service")
    assert members == {"Cleveland", "Hungary", "Switzerland"}
    assert [r.round for r in stored_rounds] == [1, 2]
    assert stored_rounds[0].dropped == {"Basel": "timed out"}
    assert stored_rounds[0].refused == {"Switzerland": "would pass its budget"}
    assert stored_rounds[1].secagg["num_shares"] == 3
    assert [r.central_epsilon for r in stored_rounds] == [0.25, 0.5]
    assert _ledger(store, run.id) == [
        ("Cleveland", 1, 40, 0.3, False),
        ("Hungary", 1, 40, 0.3, False),
        ("Switzerland", 1, 0, 0.9, True),
        ("Cleveland", 2, 40, 0.55, False),
        ("Hungary", 2, 40, 0.55, False),
        ("Switzerland", 2, 0, 0.9, True),
    ]
    assert actions[-4:] == ["run.start", "round.record", "round.record", "run.completed"]
    assert intact
    recorder.close()


def test_recording_a_round_twice_counts_it_once(store_url):
    with StoreRecorder.open(store_url, run_name="retry") as recorder:
        recorder.on_run_start(_start())
        recorder.on_round_end(_round(1, epsilon=0.3))
        recorder.on_round_end(_round(1, epsilon=0.31))  # the same round, reported again

        ledger = _ledger(recorder.store, recorder.run_id)
        with recorder.store.session() as session:
            rounds = session.scalars(select(Round).where(Round.run_id == recorder.run_id)).all()
            last = audit.tail(session, limit=1)[0]

    assert len(rounds) == 1
    assert [(name, round) for name, round, *_ in ledger] == [
        ("Cleveland", 1),
        ("Hungary", 1),
        ("Switzerland", 1),
    ]
    assert ledger[0][3] == 0.31
    assert last["details"]["replaced"] is True


def test_infinite_epsilon_without_dp_is_kept(store_url):
    record = RoundRecord(
        round=1,
        loss=math.nan,
        accuracy=None,
        accuracy_by_institution={},
        epsilon={"Cleveland": math.inf},
        participants=["Cleveland"],
        reports=[FitReport(institution="Cleveland", round=1, dp=False, epsilon=math.inf, steps=10)],
    )
    with StoreRecorder.open(store_url, run_name="no-dp") as recorder:
        recorder.on_run_start(_start())
        recorder.on_round_end(record)

        ledger = _ledger(recorder.store, recorder.run_id)
        with recorder.store.session() as session:
            stored = session.scalars(select(Round)).one()
            details = audit.tail(session, limit=1)[0]["details"]

    assert ledger == [("Cleveland", 1, 10, math.inf, False)]
    assert stored.loss is None
    assert details["epsilon"] == {"Cleveland": "inf"}


def test_a_failed_run_is_marked_failed_even_before_it_started(store_url):
    with StoreRecorder.open(store_url, run_name="broken") as recorder:
        recorder.mark_failed("only 1 of the 2 institutions needed connected")

        with recorder.store.session() as session:
            run = session.get_one(Run, recorder.run_id)

    assert (run.status, run.stopped_reason) == (
        "failed",
        "only 1 of the 2 institutions needed connected",
    )


def test_a_named_starter_needs_run_start(store, principal_factory, store_url):
    principal_factory("olga", "operator")
    principal_factory("carl", "consumer")

    with StoreRecorder.open(store_url, run_name="by-olga", started_by="olga") as recorder:
        recorder.on_run_start(_start())
        with recorder.store.session() as session:
            run = session.get_one(Run, recorder.run_id)
            assert session.get_one(Principal, run.started_by_id).name == "olga"

    with pytest.raises(PermissionDeniedError, match="'carl' lacks permission 'run:start'"):
        StoreRecorder.open(store_url, run_name="by-carl", started_by="carl")
    with store.session() as session:
        assert session.scalars(select(Run).where(Run.name == "by-carl")).first() is None


def test_a_stale_coordinator_cannot_fail_a_run_resumed_elsewhere(store_url):
    # The killed coordinator's ServerApp outlives it by a few seconds and reports the
    # failure after the new coordinator has resumed the run: that must not fail the run.
    with StoreRecorder.open(store_url, run_name="crashy") as first:
        first.on_run_start(_start())
        first.on_round_end(_round(1, epsilon=0.3))
        resumed = StoreRecorder(first.store, run_name="crashy", run_id=first.run_id)
        resumed.on_run_start(replace(_start(), first_round=2))

        first.mark_failed("lost its SuperLink")
        with first.store.session() as session:
            status = session.get_one(Run, first.run_id).status
            actions = [e["action"] for e in audit.tail(session, limit=3)]
        assert status == "running"
        assert "run.failed" not in actions

        resumed.mark_failed("lost its SuperLink too")  # the current owner still can
        with first.store.session() as session:
            assert session.get_one(Run, first.run_id).status == "failed"
