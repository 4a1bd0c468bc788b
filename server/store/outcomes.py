"""Served predictions and their outcomes, and changes of a model's performance status.

The inference service keeps, per answered row, only what joining a true outcome
and scoring it needs (``ServedPrediction``: id, caller's request id, version,
time, class probabilities), written in batches off the predict path, and
deleted past a retention limit. Outcomes fed back set ``label`` once. A change
of a version's realised or estimated performance status is kept and audited
(``performance.change``) once per change, like drift.

These functions are the service's own bookkeeping: the permission to feed
outcomes back (``feedback``) and to read performance (``model:read``) is
checked by the service against the caller's key before it calls them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from privacy.errors import ConfigError
from server.run_events import json_safe
from server.store import audit, rbac
from server.store.models import (
    PERFORMANCE_KINDS,
    PERFORMANCE_STATUSES,
    PerformanceEvent,
    Principal,
    ServedPrediction,
)

PERFORMANCE_ACTOR = "inference-service"


def record_predictions(session: Session, *, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert served predictions (dicts of ``ServedPrediction``'s columns) in one statement."""
    if rows:
        session.execute(insert(ServedPrediction), [dict(row) for row in rows])
    return len(rows)


def find_predictions(
    session: Session,
    *,
    model: str,
    prediction_ids: Iterable[str] = (),
    request_ids: Iterable[str] = (),
) -> tuple[dict[str, ServedPrediction], dict[str, ServedPrediction]]:
    """The stored predictions of ``model`` by prediction id and by request id."""
    wanted_ids, wanted_requests = sorted(set(prediction_ids)), sorted(set(request_ids))
    by_id: dict[str, ServedPrediction] = {}
    by_request: dict[str, ServedPrediction] = {}
    for chunk in _chunks(wanted_ids):
        query = select(ServedPrediction).where(
            ServedPrediction.model == model, ServedPrediction.id.in_(chunk)
        )
        by_id.update((row.id, row) for row in session.scalars(query))
    for chunk in _chunks(wanted_requests):
        query = select(ServedPrediction).where(
            ServedPrediction.model == model, ServedPrediction.request_id.in_(chunk)
        )
        for row in session.scalars(query):
            assert row.request_id is not None
            by_request[row.request_id] = row
    return by_id, by_request


def set_labels(session: Session, *, labels: Mapping[str, int], at: datetime) -> int:
    """Give each prediction (by id) its true label; only unlabelled ones change."""
    changed = 0
    for prediction_id, label in labels.items():
        result = session.execute(
            update(ServedPrediction)
            .where(ServedPrediction.id == prediction_id, ServedPrediction.label.is_(None))
            .values(label=label, labelled_at=at)
        )
        changed += int(getattr(result, "rowcount", 0) or 0)
    return changed


def window_predictions(
    session: Session, *, model: str, since: datetime, limit: int
) -> list[tuple[int, list[Any], int | None]]:
    """``(version, probabilities, label)`` of ``model``'s newest ``limit`` rows since ``since``."""
    query = (
        select(ServedPrediction.version, ServedPrediction.probabilities, ServedPrediction.label)
        .where(ServedPrediction.model == model, ServedPrediction.served_at >= since)
        .order_by(ServedPrediction.served_at.desc())
        .limit(limit)
    )
    return [(int(v), list(p), None if y is None else int(y)) for v, p, y in session.execute(query)]


def expire_predictions(session: Session, *, before: datetime) -> int:
    """Delete the predictions served before ``before`` (the retention limit)."""
    result = session.execute(delete(ServedPrediction).where(ServedPrediction.served_at < before))
    return int(getattr(result, "rowcount", 0) or 0)


def latest_performance_event(
    session: Session, *, model: str, version: int, kind: str
) -> PerformanceEvent | None:
    """The newest performance event of a version and kind (the service's own state)."""
    return session.scalars(
        select(PerformanceEvent)
        .where(
            PerformanceEvent.model == model,
            PerformanceEvent.version == version,
            PerformanceEvent.kind == kind,
        )
        .order_by(PerformanceEvent.id.desc())
    ).first()


def record_performance_change(
    session: Session,
    *,
    model: str,
    version: int,
    kind: str,
    previous: str,
    status: str,
    rows: int,
    metrics: Mapping[str, Any],
    thresholds: Mapping[str, Any],
    actor: str = PERFORMANCE_ACTOR,
) -> PerformanceEvent:
    """Keep a change of a version's performance status and audit it (``performance.change``)."""
    if kind not in PERFORMANCE_KINDS:
        raise ConfigError(f"performance kind must be one of {', '.join(PERFORMANCE_KINDS)}")
    for value in (previous, status):
        if value not in PERFORMANCE_STATUSES:
            raise ConfigError(
                f"performance status must be one of {', '.join(PERFORMANCE_STATUSES)}"
            )
    if previous == status:
        raise ConfigError(f"{kind} performance of {model} v{version} did not change ({status})")
    event = PerformanceEvent(
        model=model,
        version=version,
        kind=kind,
        previous=previous,
        status=status,
        rows=rows,
        metrics=json_safe(dict(metrics)),
        thresholds=json_safe(dict(thresholds)),
    )
    session.add(event)
    session.flush()
    breached = sorted(
        name
        for name, bound in thresholds.items()
        if isinstance(metrics.get(name), int | float) and metrics[name] < bound
    )
    audit.append(
        session,
        actor=actor,
        action="performance.change",
        target=f"model:{model}@{version}",
        details={
            "kind": kind,
            "from": previous,
            "to": status,
            "rows": rows,
            "breached": breached,
            "event": event.id,
        },
    )
    return event


def performance_events(
    session: Session, *, actor: Principal, model: str, limit: int = 100
) -> list[PerformanceEvent]:
    """A model's performance status changes, newest first (needs ``model:read``; audited)."""
    actor_name, target = actor.name, f"model:{model}"
    rbac.authorize(session, principal=actor, permission="model:read", target=target)
    events = list(
        session.scalars(
            select(PerformanceEvent)
            .where(PerformanceEvent.model == model)
            .order_by(PerformanceEvent.id.desc())
            .limit(limit)
        )
    )
    audit.append(
        session,
        actor=actor_name,
        action="performance.read",
        target=target,
        details={"events": len(events)},
    )
    return events


def _chunks(values: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
