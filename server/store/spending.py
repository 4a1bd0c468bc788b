"""What each institution spent, in the store: ε entries per run, round and release, and totals.

``record_entry`` keeps one entry per (run, institution, round, kind): a
``train`` round or a ``profile`` release, carrying the institution's own
account of its ε after it. Reads are audited and need ``ledger:read`` (or
``ledger:read-own`` for an institution's own principals).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from client.contract.report import FitReport
from server.store import audit, rbac
from server.store.governance import ensure_institution
from server.store.models import Institution, LedgerEntry, Principal, utcnow


@dataclass(frozen=True, kw_only=True)
class EpsilonTotal:
    """One institution's spending: per run (its latest ε there) and summed over runs.

    The sum is basic composition: an upper bound on the ε of all runs together.
    ``budget`` is the budget the institution last reported (``None`` if it never
    reported one, or trained without DP).
    """

    institution: str
    runs: dict[str, float]
    epsilon: float
    delta: float
    budget: float | None = None

    @property
    def left(self) -> float | None:
        """The ε left of the budget after every recorded run (never below 0)."""
        if self.budget is None:
            return None
        return max(self.budget - self.epsilon, 0.0)


def record_entry(
    session: Session, *, actor_name: str, run_id: str, kind: str, report: FitReport
) -> LedgerEntry:
    """Write (or replace) the entry of ``report``'s institution and round, of ``kind``."""
    institution = ensure_institution(
        session=session, actor_name=actor_name, name=report.institution
    )
    entry = session.scalars(
        select(LedgerEntry).where(
            LedgerEntry.run_id == run_id,
            LedgerEntry.institution_id == institution.id,
            LedgerEntry.round == report.round,
            LedgerEntry.kind == kind,
        )
    ).one_or_none()
    if entry is None:
        entry = LedgerEntry(
            run_id=run_id, institution_id=institution.id, round=report.round, kind=kind
        )
        session.add(entry)
    spent = report.to_ledger_record()
    entry.steps, entry.sample_rate = spent.steps, spent.sample_rate
    entry.noise_multiplier, entry.max_grad_norm = spent.noise_multiplier, spent.max_grad_norm
    entry.epsilon, entry.delta = spent.epsilon, spent.delta
    entry.refused, entry.reason = spent.refused, spent.reason
    budget = report.epsilon_budget
    entry.budget_epsilon = budget if math.isfinite(budget) else None
    entry.recorded_at = utcnow()
    return entry


def ledger_entries(
    *,
    session: Session,
    actor: Principal,
    institution: str | None = None,
    run_id: str | None = None,
) -> list[tuple[str, LedgerEntry]]:
    """Ledger entries as ``(institution, entry)``, by run and round (an audited read).

    Reading every institution needs ``ledger:read``; an institution's own
    principals may read their own with ``ledger:read-own``.
    """
    actor_name = actor.name
    target = f"ledger:{institution or '*'}"
    _authorize_ledger(session, actor=actor, institution=institution, target=target)
    query = select(Institution.name, LedgerEntry).join(
        Institution, Institution.id == LedgerEntry.institution_id
    )
    if institution is not None:
        query = query.where(Institution.name == institution)
    if run_id is not None:
        query = query.where(LedgerEntry.run_id == run_id)
    query = query.order_by(LedgerEntry.run_id, LedgerEntry.round, Institution.name)
    rows = [(name, entry) for name, entry in session.execute(query)]
    audit.append(
        session,
        actor=actor_name,
        action="ledger.read",
        target=target,
        details={"run": run_id, "entries": len(rows)},
    )
    return rows


def epsilon_totals(
    *, session: Session, actor: Principal, institution: str | None = None
) -> list[EpsilonTotal]:
    """Each institution's latest ε per run and its sum across runs (an audited read)."""
    actor_name = actor.name
    target = f"ledger:{institution or '*'}"
    _authorize_ledger(session, actor=actor, institution=institution, target=target)
    query = (
        select(
            Institution.name,
            LedgerEntry.run_id,
            func.max(LedgerEntry.epsilon),
            func.max(LedgerEntry.delta),
        )
        .join(Institution, Institution.id == LedgerEntry.institution_id)
        .group_by(Institution.name, LedgerEntry.run_id)
        .order_by(Institution.name, LedgerEntry.run_id)
    )
    if institution is not None:
        query = query.where(Institution.name == institution)
    per_run: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for name, run, epsilon, delta in session.execute(query):
        per_run[name][run] = (float(epsilon), float(delta))
    budgets = _latest_budgets(session, institution=institution)
    totals = [
        EpsilonTotal(
            institution=name,
            runs={run: epsilon for run, (epsilon, _) in runs.items()},
            epsilon=math.fsum(epsilon for epsilon, _ in runs.values()),
            delta=math.fsum(delta for _, delta in runs.values()),
            budget=budgets.get(name),
        )
        for name, runs in per_run.items()
    ]
    audit.append(
        session,
        actor=actor_name,
        action="ledger.totals",
        target=target,
        details={"institutions": len(totals)},
    )
    return totals


def _latest_budgets(session: Session, *, institution: str | None) -> dict[str, float]:
    """Each institution's most recently reported budget."""
    reported = LedgerEntry.budget_epsilon.is_not(None)
    latest = (
        select(LedgerEntry.institution_id, func.max(LedgerEntry.recorded_at).label("at"))
        .where(reported)
        .group_by(LedgerEntry.institution_id)
        .subquery()
    )
    query = (  # only each institution's latest report(s), not every ledger row
        select(Institution.name, LedgerEntry.budget_epsilon)
        .join(Institution, Institution.id == LedgerEntry.institution_id)
        .join(
            latest,
            (latest.c.institution_id == LedgerEntry.institution_id)
            & (latest.c.at == LedgerEntry.recorded_at),
        )
        .where(reported)
        .order_by(LedgerEntry.recorded_at, LedgerEntry.id)
    )
    if institution is not None:
        query = query.where(Institution.name == institution)
    return {
        name: float(budget)
        for name, budget in session.execute(query)
        if budget is not None
    }


def _authorize_ledger(
    session: Session, *, actor: Principal, institution: str | None, target: str
) -> None:
    if institution is not None and not rbac.has_permission(
        session, principal=actor, permission="ledger:read"
    ):
        rbac.authorize(
            session,
            principal=actor,
            permission="ledger:read-own",
            target=target,
            institution=institution,
        )
        return
    rbac.authorize(session, principal=actor, permission="ledger:read", target=target)
