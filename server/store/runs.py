"""Runs and their rounds in the store: started, resumed, ended, each round recorded.

A round is recorded once: recording the same round of the same run again
replaces its row and its ε entries instead of adding to them, so no
institution's ε is ever counted twice (the unique constraint on run,
institution, round and kind makes sure of it).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from client.contract.report import FitReport
from privacy.errors import ConfigError
from server.errors import NotFoundError
from server.run_events import RoundRecord, json_safe
from server.store import audit, rbac
from server.store.governance import ensure_institution
from server.store.models import RUN_STATUSES, Principal, Round, Run, utcnow
from server.store.spending import record_entry


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
    run = find_run(session, run_id, actor_name=actor_name, action="run.resume")
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
    run = find_run(session, run_id, actor_name=actor_name, action=f"run.{status}")
    run.status, run.ended_at, run.stopped_reason = status, utcnow(), reason
    audit.append(
        session, actor=actor_name, action=f"run.{status}", target=target, details={"reason": reason}
    )
    return run


def record_round(*, session: Session, actor: Principal, run_id: str, record: RoundRecord) -> Round:
    """Write a round and its ledger entries, replacing any earlier record of the same round."""
    actor_name, target = actor.name, f"run:{run_id}"
    rbac.authorize(session, principal=actor, permission="run:start", target=target)
    find_run(session, run_id, actor_name=actor_name, action="round.record")
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
    spent = _record_entries(
        session, actor_name=actor_name, run_id=run_id, kind="train", reports=record.reports
    )
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
    run = find_run(session, run_id, actor_name=actor_name, action="run.profile")
    if profile is not None:
        run.profile = json_safe(dict(profile))
    accounted = [r for r in reports if r.refused or r.noise_multiplier > 0]
    spent = _record_entries(
        session, actor_name=actor_name, run_id=run_id, kind="profile", reports=accounted
    )
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
    run = find_run(session, run_id, actor_name=actor_name, action="run.read")
    rounds = list(
        session.scalars(select(Round).where(Round.run_id == run.id).order_by(Round.round))
    )
    audit.append(
        session, actor=actor_name, action="run.read", target=target, details={"rounds": len(rounds)}
    )
    return run, rounds


def _record_entries(
    session: Session, *, actor_name: str, run_id: str, kind: str, reports: Sequence[FitReport]
) -> dict[str, float]:
    """One ε entry per report; each institution's ε after it."""
    for report in reports:
        record_entry(session, actor_name=actor_name, run_id=run_id, kind=kind, report=report)
    session.flush()
    return {report.institution: report.epsilon for report in reports}


MIN_RUN_PREFIX = 4
"""The shortest prefix of a run id that names a run (``a74aff97`` for a UUID)."""


def match_run(session: Session, run_id: str) -> Run | None:
    """The run whose id is ``run_id`` or starts with it (when only one does)."""
    run = session.get(Run, run_id)
    if run is not None or len(run_id) < MIN_RUN_PREFIX:
        return run
    escaped = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    matching = select(Run).where(Run.id.like(f"{escaped}%", escape="\\")).limit(2)
    found = list(session.scalars(matching))
    if len(found) > 1:
        raise ConfigError(f"run id prefix {run_id!r} names more than one run: give more of it")
    return found[0] if found else None


def find_run(session: Session, run_id: str, *, actor_name: str, action: str) -> Run:
    """The run ``run_id`` (or the one run whose id starts with it); an unknown id is audited
    (as ``action``) and raises ``NotFoundError``."""
    run = match_run(session, run_id)
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
