"""What happened: runs, their rounds, the privacy ledger, ε totals, and resume checkpoints.

A round is recorded once: recording the same round of the same run again
replaces its row and its ledger entries instead of adding to them, so no
institution's ε is ever counted twice (the unique constraint on run,
institution and round makes sure of it).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from client.report import FitReport
from privacy.errors import ConfigError
from server.errors import NotFoundError
from server.records import RoundRecord, json_safe
from server.store import audit, rbac
from server.store.governance import ensure_institution
from server.store.models import (
    RUN_STATUSES,
    Checkpoint,
    Institution,
    LedgerEntry,
    Principal,
    Round,
    Run,
    utcnow,
)


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


def start_run(
    *,
    session: Session,
    actor: Principal,
    name: str,
    config: Mapping[str, Any],
    institutions: Iterable[str] = (),
    run_id: str | None = None,
) -> Run:
    """Record a run as started by ``actor`` (needs ``run:start``); members are added by name."""
    run_id = run_id or str(uuid.uuid4())
    actor_name, target = actor.name, f"run:{run_id}"
    rbac.authorize(session, principal=actor, permission="run:start", target=target)
    names = sorted(set(institutions))
    for institution in names:
        ensure_institution(session=session, actor_name=actor_name, name=institution)
    run = Run(
        id=run_id,
        name=name,
        config=json_safe(dict(config)),
        started_by_id=actor.id,
        status="running",
    )
    session.add(run)
    session.flush()
    audit.append(
        session,
        actor=actor_name,
        action="run.start",
        target=target,
        details={"name": name, "institutions": names},
    )
    return run


def resume_run(*, session: Session, actor: Principal, run_id: str, from_round: int) -> Run:
    """Mark a stopped or failed run as running again, carrying on after ``from_round``."""
    actor_name, target = actor.name, f"run:{run_id}"
    rbac.authorize(session, principal=actor, permission="run:start", target=target)
    run = _run(session, run_id, actor_name=actor_name, action="run.resume")
    if run.status == "completed":
        raise ConfigError(f"run {run_id} is completed; there is nothing to resume")
    previous = run.status
    run.status, run.ended_at, run.stopped_reason = "running", None, None
    audit.append(
        session,
        actor=actor_name,
        action="run.resume",
        target=target,
        details={"after_round": from_round, "was": previous},
    )
    return run


def end_run(*, session: Session, actor: Principal, run_id: str, status: str, reason: str) -> Run:
    """Close a run as ``completed``, ``failed`` or ``stopped``.

    Completing or failing a run needs ``run:start`` (the coordinator that runs
    it); stopping it from outside needs ``run:stop``.
    """
    if status not in RUN_STATUSES or status == "running":
        raise ConfigError(f"a run ends as completed, failed or stopped, not {status!r}")
    actor_name, target = actor.name, f"run:{run_id}"
    permission = "run:stop" if status == "stopped" else "run:start"
    rbac.authorize(session, principal=actor, permission=permission, target=target)
    run = _run(session, run_id, actor_name=actor_name, action=f"run.{status}")
    run.status, run.ended_at, run.stopped_reason = status, utcnow(), reason
    audit.append(
        session, actor=actor_name, action=f"run.{status}", target=target, details={"reason": reason}
    )
    return run


def record_round(*, session: Session, actor: Principal, run_id: str, record: RoundRecord) -> Round:
    """Write a round and its ledger entries, replacing any earlier record of the same round."""
    actor_name, target = actor.name, f"run:{run_id}"
    rbac.authorize(session, principal=actor, permission="run:start", target=target)
    _run(session, run_id, actor_name=actor_name, action="round.record")
    row = session.scalars(
        select(Round).where(Round.run_id == run_id, Round.round == record.round)
    ).one_or_none()
    replaced = row is not None
    if row is None:
        row = Round(run_id=run_id, round=record.round)
        session.add(row)
    row.loss = _finite(record.loss)
    row.accuracy = _finite(record.accuracy)
    row.accuracy_by_institution = json_safe(dict(record.accuracy_by_institution))
    row.participants = list(record.participants)
    row.refused, row.rejected = dict(record.refused), dict(record.rejected)
    row.dropped = dict(record.dropped)
    row.aggregated, row.duration_s = record.aggregated, record.duration_s
    row.secagg = json_safe(dict(record.secagg)) if record.secagg is not None else None
    row.central_epsilon = record.central_epsilon
    row.recorded_at = utcnow()
    spent = {}
    for report in record.reports:
        institution = ensure_institution(
            session=session, actor_name=actor_name, name=report.institution
        )
        entry = session.scalars(
            select(LedgerEntry).where(
                LedgerEntry.run_id == run_id,
                LedgerEntry.institution_id == institution.id,
                LedgerEntry.round == record.round,
                LedgerEntry.kind == "train",
            )
        ).one_or_none()
        if entry is None:
            entry = LedgerEntry(
                run_id=run_id, institution_id=institution.id, round=record.round, kind="train"
            )
            session.add(entry)
        _fill_entry(entry, report)
        spent[report.institution] = report.epsilon
    session.flush()
    audit.append(
        session,
        actor=actor_name,
        action="round.record",
        target=target,
        details={
            "round": record.round,
            "participants": list(record.participants),
            "refused": sorted(record.refused),
            "dropped": sorted(record.dropped),
            "rejected": sorted(record.rejected),
            "epsilon": spent,
            "central_epsilon": record.central_epsilon,
            "replaced": replaced,
        },
    )
    return row


def record_profile(
    *,
    session: Session,
    actor: Principal,
    run_id: str,
    profile: Mapping[str, Any] | None,
    reports: Sequence[FitReport] = (),
) -> Run:
    """Keep a run's reference profile and what each institution spent on it (needs ``run:start``).

    A noisy profile is one more release each institution accounted for: it gets
    a ``profile`` ledger entry after the profile's round, as does a refusal to
    release one. An exact profile (no noise) spends no ε and adds no entry.
    ``profile`` is ``None`` when every institution refused.
    """
    actor_name, target = actor.name, f"run:{run_id}"
    rbac.authorize(session, principal=actor, permission="run:start", target=target)
    run = _run(session, run_id, actor_name=actor_name, action="run.profile")
    if profile is not None:
        run.profile = json_safe(dict(profile))
    spent = {}
    for report in reports:
        server_round = report.round
        if not report.refused and report.noise_multiplier <= 0:
            continue
        institution = ensure_institution(
            session=session, actor_name=actor_name, name=report.institution
        )
        entry = session.scalars(
            select(LedgerEntry).where(
                LedgerEntry.run_id == run_id,
                LedgerEntry.institution_id == institution.id,
                LedgerEntry.round == server_round,
                LedgerEntry.kind == "profile",
            )
        ).one_or_none()
        if entry is None:
            entry = LedgerEntry(
                run_id=run_id, institution_id=institution.id, round=server_round, kind="profile"
            )
            session.add(entry)
        _fill_entry(entry, report)
        spent[report.institution] = report.epsilon
    session.flush()
    audit.append(
        session,
        actor=actor_name,
        action="run.profile",
        target=target,
        details=json_safe(
            {
                "round": (profile or {}).get("round"),
                "rows": (profile or {}).get("rows"),
                "institutions": list((profile or {}).get("institutions", [])),
                "noise_multiplier": (profile or {}).get("noise_multiplier"),
                "epsilon": spent,
                "refused": sorted(r.institution for r in reports if r.refused),
            }
        ),
    )
    return run


def run_profile(*, session: Session, run_id: str) -> dict[str, Any] | None:
    """The run's reference profile, if it has one (read inside an audited registration)."""
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"no run with id {run_id!r}", run=run_id)
    return run.profile


def get_run(*, session: Session, actor: Principal, run_id: str) -> tuple[Run, list[Round]]:
    """A run and its rounds in order (needs ``run:read``; an audited read)."""
    actor_name, target = actor.name, f"run:{run_id}"
    rbac.authorize(session, principal=actor, permission="run:read", target=target)
    run = _run(session, run_id, actor_name=actor_name, action="run.read")
    rounds = list(
        session.scalars(select(Round).where(Round.run_id == run_id).order_by(Round.round))
    )
    audit.append(
        session, actor=actor_name, action="run.read", target=target, details={"rounds": len(rounds)}
    )
    return run, rounds


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
    rows = [(name, entry) for name, entry in session.execute(query).tuples()]
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
    for name, run, epsilon, delta in session.execute(query).tuples():
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


def save_checkpoint(
    *, session: Session, actor: Principal, run_id: str, round: int, blob: bytes
) -> Checkpoint:
    """Keep a run's state after ``round`` (needs ``run:start``); a round saved again is replaced."""
    actor_name, target = actor.name, f"run:{run_id}"
    rbac.authorize(session, principal=actor, permission="run:start", target=target)
    _run(session, run_id, actor_name=actor_name, action="checkpoint.save")
    row = session.scalars(
        select(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.round == round)
    ).one_or_none()
    if row is None:
        row = Checkpoint(run_id=run_id, round=round, blob=blob)
        session.add(row)
    row.blob, row.created_at = blob, utcnow()
    session.flush()
    audit.append(
        session,
        actor=actor_name,
        action="checkpoint.save",
        target=target,
        details={"round": round, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()},
    )
    return row


def latest_checkpoint(*, session: Session, actor: Principal, run_id: str) -> Checkpoint | None:
    """The run's checkpoint of its latest round, if any (needs ``run:start``; audited)."""
    actor_name, target = actor.name, f"run:{run_id}"
    rbac.authorize(session, principal=actor, permission="run:start", target=target)
    row = session.scalars(
        select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(Checkpoint.round.desc())
    ).first()
    audit.append(
        session,
        actor=actor_name,
        action="checkpoint.read",
        target=target,
        details={"round": row.round if row is not None else None},
    )
    return row


def checkpoint_for_export(
    *, session: Session, actor: Principal, run_id: str, round: int | None = None
) -> Checkpoint:
    """The run's checkpoint after ``round`` (its latest by default), to export a model from.

    Needs ``model:register``; audited.
    """
    actor_name, target = actor.name, f"run:{run_id}"
    rbac.authorize(session, principal=actor, permission="model:register", target=target)
    _run(session, run_id, actor_name=actor_name, action="checkpoint.read")
    query = select(Checkpoint).where(Checkpoint.run_id == run_id)
    if round is not None:
        query = query.where(Checkpoint.round == round)
    row = session.scalars(query.order_by(Checkpoint.round.desc())).first()
    if row is None:
        which = f"round {round}" if round is not None else "any round"
        raise audit.record_refusal(
            session,
            error=NotFoundError(f"run {run_id} has no checkpoint of {which}", run=run_id),
            actor=actor_name,
            action="checkpoint.read",
            target=target,
            outcome="error",
        )
    audit.append(
        session,
        actor=actor_name,
        action="checkpoint.read",
        target=target,
        details={"round": row.round},
    )
    return row


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
        for name, budget in session.execute(query).tuples()
        if budget is not None
    }


def _fill_entry(entry: LedgerEntry, report: FitReport) -> None:
    entry.steps = 0 if report.refused else report.steps
    entry.sample_rate, entry.noise_multiplier = report.sample_rate, report.noise_multiplier
    entry.max_grad_norm, entry.epsilon = report.max_grad_norm, report.epsilon
    entry.delta, entry.refused, entry.reason = report.delta, report.refused, report.reason
    budget = report.epsilon_budget
    entry.budget_epsilon = budget if math.isfinite(budget) else None
    entry.recorded_at = utcnow()


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


def _run(session: Session, run_id: str, *, actor_name: str, action: str) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        error = NotFoundError(f"no run with id {run_id!r}", run=run_id)
        raise audit.record_refusal(
            session,
            error=error,
            actor=actor_name,
            action=action,
            target=f"run:{run_id}",
            outcome="error",
        )
    return run


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
