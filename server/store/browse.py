"""Paged, permission-checked reads for screens: runs, institutions, checkpoints, the audit log.

The repository's functions read one thing whole (a run and its rounds, a
model's versions); a screen over a large store needs pages of summaries
instead, each read through an index. Every function here checks the same
permission as the repository's own read (a denial is audited by
``rbac.authorize``), and the reads a principal asks for are on the audit
record (``run.list``, ``audit.browse``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from privacy.errors import ConfigError
from server.store import audit, rbac
from server.store.models import (
    AuditEvent,
    Checkpoint,
    DriftEvent,
    Institution,
    LedgerEntry,
    ModelVersion,
    NodeKey,
    Principal,
    Round,
    Run,
)

MAX_PAGE = 500


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """A run as a list shows it: no rounds, no checkpoints, only their count."""

    id: str
    name: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    rounds: int
    config: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class RunPage:
    runs: list[RunSummary]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    """A checkpoint's round, time and size (its blob is not read)."""

    round: int
    created_at: datetime
    bytes: int


@dataclass(frozen=True, kw_only=True)
class NodeInfo:
    fingerprint: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class InstitutionInfo:
    """A member, its node keys and when it last reported to the ledger (``last_seen``)."""

    name: str
    created_at: datetime
    last_seen: datetime | None
    nodes: list[NodeInfo] | None


@dataclass(frozen=True, kw_only=True)
class AuditFilter:
    """Which events an audit page shows: every field optional, all of them must hold."""

    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class AuditPage:
    """Events newest first; ``next_before`` pages on to older events (``None``: no more)."""

    events: list[dict[str, Any]]
    next_before: int | None


@dataclass(frozen=True, kw_only=True)
class DriftHead:
    """A model version's latest drift status change."""

    model: str
    version: int
    status: str
    time: datetime


def _check_page(limit: int, offset: int = 0) -> None:
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise ConfigError(f"a page holds 1 to {MAX_PAGE} items from offset 0 on, got {limit}")


def list_runs(*, session: Session, actor: Principal, limit: int = 50, offset: int = 0) -> RunPage:
    """A page of runs, newest first, with their round counts (needs ``run:read``; audited)."""
    _check_page(limit, offset)
    actor_name = actor.name
    rbac.authorize(session, principal=actor, permission="run:read", target="run:*")
    total = session.scalar(select(func.count()).select_from(Run)) or 0
    runs = list(
        session.scalars(
            select(Run).order_by(Run.started_at.desc(), Run.id).limit(limit).offset(offset)
        )
    )
    counts: dict[str, int] = {
        run_id: count
        for run_id, count in session.execute(
            select(Round.run_id, func.count())
            .where(Round.run_id.in_([run.id for run in runs]))
            .group_by(Round.run_id)
        ).tuples()
    }
    audit.append(
        session,
        actor=actor_name,
        action="run.list",
        target="run:*",
        details={"runs": len(runs), "offset": offset},
    )
    summaries = [
        RunSummary(
            id=run.id,
            name=run.name,
            status=run.status,
            started_at=run.started_at,
            ended_at=run.ended_at,
            rounds=counts.get(run.id, 0),
            config=dict(run.config),
        )
        for run in runs
    ]
    return RunPage(runs=summaries, total=total, offset=offset, limit=limit)


def run_checkpoints(*, session: Session, actor: Principal, run_id: str) -> list[CheckpointInfo]:
    """The run's checkpoints, round by round, without their blobs (needs ``run:read``)."""
    rbac.authorize(session, principal=actor, permission="run:read", target=f"run:{run_id}")
    rows = session.execute(
        select(Checkpoint.round, Checkpoint.created_at, func.length(Checkpoint.blob))
        .where(Checkpoint.run_id == run_id)
        .order_by(Checkpoint.round)
    ).tuples()
    return [CheckpointInfo(round=r, created_at=t, bytes=int(n or 0)) for r, t, n in rows]


def run_models(*, session: Session, actor: Principal, run_id: str) -> list[tuple[str, int, str]]:
    """``(name, version, stage)`` of each model version trained by the run (``model:read``)."""
    rbac.authorize(session, principal=actor, permission="model:read", target=f"run:{run_id}")
    rows = session.execute(
        select(ModelVersion.name, ModelVersion.version, ModelVersion.stage)
        .where(ModelVersion.run_id == run_id)
        .order_by(ModelVersion.name, ModelVersion.version)
    ).tuples()
    return list(rows)


def institutions(*, session: Session, actor: Principal) -> list[InstitutionInfo]:
    """Every member with its last ledger report; node keys only with ``principal:read``.

    Needs ``run:read`` (who took part in runs is part of reading them).
    """
    rbac.authorize(session, principal=actor, permission="run:read", target="institution:*")
    with_nodes = rbac.has_permission(session, principal=actor, permission="principal:read")
    last_seen: dict[int, datetime] = {
        institution_id: seen
        for institution_id, seen in session.execute(
            select(LedgerEntry.institution_id, func.max(LedgerEntry.recorded_at)).group_by(
                LedgerEntry.institution_id
            )
        ).tuples()
    }
    nodes: dict[int, list[NodeInfo]] = {}
    if with_nodes:
        for key in session.scalars(select(NodeKey).order_by(NodeKey.id)):
            nodes.setdefault(key.institution_id, []).append(
                NodeInfo(
                    fingerprint=key.fingerprint,
                    created_at=key.created_at,
                    created_by=key.created_by,
                    revoked_at=key.revoked_at,
                )
            )
    return [
        InstitutionInfo(
            name=row.name,
            created_at=row.created_at,
            last_seen=last_seen.get(row.id),
            nodes=nodes.get(row.id, []) if with_nodes else None,
        )
        for row in session.scalars(select(Institution).order_by(Institution.name))
    ]


def drift_heads(*, session: Session, actor: Principal) -> list[DriftHead]:
    """Each model version's latest drift status (needs ``model:read``)."""
    rbac.authorize(session, principal=actor, permission="model:read", target="model:*")
    newest = (
        select(func.max(DriftEvent.id)).group_by(DriftEvent.model, DriftEvent.version)
    ).scalar_subquery()
    rows = session.scalars(
        select(DriftEvent).where(DriftEvent.id.in_(newest)).order_by(DriftEvent.model)
    )
    return [DriftHead(model=e.model, version=e.version, status=e.status, time=e.time) for e in rows]


def audit_page(
    *,
    session: Session,
    actor: Principal,
    where: AuditFilter,
    before: int | None = None,
    limit: int = 50,
) -> AuditPage:
    """Events matching ``where``, newest first, older than ``before`` (needs ``audit:read``).

    Keyset paging on the sequence number: page N costs what page 1 does.
    The read is audited as ``audit.browse`` with the filter.
    """
    _check_page(limit)
    actor_name = actor.name
    rbac.authorize(session, principal=actor, permission="audit:read", target="audit-log")
    query = select(
        AuditEvent.seq,
        AuditEvent.time,
        AuditEvent.actor,
        AuditEvent.action,
        AuditEvent.target,
        AuditEvent.outcome,
        AuditEvent.details,
        AuditEvent.prev_hash,
        AuditEvent.hash,
    )
    if where.actor:
        query = query.where(AuditEvent.actor == where.actor)
    if where.action:
        query = query.where(AuditEvent.action == where.action)
    if where.since is not None:
        query = query.where(AuditEvent.time >= where.since)
    if where.until is not None:
        query = query.where(AuditEvent.time < where.until)
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    rows = session.execute(query.order_by(AuditEvent.seq.desc()).limit(limit + 1)).all()
    events = [audit.event_to_dict(row._asdict()) for row in rows[:limit]]
    audit.append(
        session,
        actor=actor_name,
        action="audit.browse",
        target="audit-log",
        details={
            "actor": where.actor,
            "action": where.action,
            "since": where.since.isoformat() if where.since else None,
            "until": where.until.isoformat() if where.until else None,
            "before": before,
            "events": len(events),
        },
    )
    more = len(rows) > limit
    return AuditPage(events=events, next_before=events[-1]["seq"] if more and events else None)


def audit_event(*, session: Session, actor: Principal, seq: int) -> dict[str, Any] | None:
    """One event by its sequence number, as stored (``audit:read``), to show a break."""
    rbac.authorize(session, principal=actor, permission="audit:read", target="audit-log")
    row = session.get(AuditEvent, seq)
    return audit.event_to_dict(row) if row is not None else None
