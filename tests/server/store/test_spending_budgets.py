"""ε totals carry each institution's most recently reported budget (read through an index,
not by walking the ledger), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from client.contract.report import FitReport
from server.run_events import RoundRecord
from server.store import runs, spending
from server.store.models import LedgerEntry


def _round(number: int, budgets: dict[str, float]) -> RoundRecord:
    return RoundRecord(
        round=number, loss=0.5, accuracy=0.8, accuracy_by_institution={},
        epsilon={name: 0.1 * number for name in budgets}, participants=sorted(budgets),
        reports=[FitReport(institution=name, round=number, epsilon=0.1 * number, epsilon_budget=budget,
                           delta=1e-5, steps=10, noise_multiplier=1.0, sample_rate=0.1, max_grad_norm=1.0)
                 for name, budget in budgets.items()],
    )


def test_the_latest_reported_budget_counts(store, principal_factory) -> None:  # type: ignore[no-untyped-def]
    olga = principal_factory("olga", "operator")[0]
    with store.session() as session:
        a = runs.start_run(session=session, actor=olga, name="a", config={}).id
        runs.record_round(session=session, actor=olga, run_id=a,
                              record=_round(1, {"Cleveland": 1.0, "Hungary": float("inf")}))
        b = runs.start_run(session=session, actor=olga, name="b", config={}).id
        runs.record_round(session=session, actor=olga, run_id=b, record=_round(1, {"Cleveland": 3.0}))
        runs.record_round(session=session, actor=olga, run_id=a, record=_round(2, {"Cleveland": 2.0}))
        # run a's round 2 was recorded last, but run b's report is the newer one
        later = session.scalars(select(LedgerEntry).where(LedgerEntry.run_id == b)).one()
        later.recorded_at = later.recorded_at + timedelta(hours=1)

    with store.session() as session:
        totals = {t.institution: t for t in spending.epsilon_totals(session=session, actor=olga)}

    assert totals["Cleveland"].budget == 3.0
    assert totals["Hungary"].budget is None and totals["Hungary"].left is None
