"""Drift of served models: each change of a version's drift status, kept and audited.

The inference service writes an event when a version's status moves (``ok``,
``warning``, ``drift``), once per change, never per request: the event holds
the scores and the histograms the change was seen on. Operators and auditors
read them with ``model:read``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from privacy.errors import ConfigError
from server.run_events import json_safe
from server.store import audit, rbac
from server.store.models import DRIFT_STATUSES, DriftEvent, Principal

DRIFT_ACTOR = "inference-service"


def latest_drift_event(*, session: Session, model: str, version: int) -> DriftEvent | None:
    """The newest event of a model version, for the service's own bookkeeping (not audited:
    the service reads its own state, and nothing of it reaches a caller)."""
    return session.scalars(
        select(DriftEvent)
        .where(DriftEvent.model == model, DriftEvent.version == version)
        .order_by(DriftEvent.id.desc())
    ).first()


def record_drift_change(
    *,
    session: Session,
    model: str,
    version: int,
    previous: str,
    status: str,
    window_rows: int,
    window_span_s: float,
    features: Sequence[dict[str, Any]],
    actor: str = DRIFT_ACTOR,
) -> DriftEvent:
    """Keep a change of a version's drift status and audit it (``drift.change``)."""
    for value in (previous, status):
        if value not in DRIFT_STATUSES:
            raise ConfigError(f"drift status must be one of {', '.join(DRIFT_STATUSES)}")
    if previous == status:
        raise ConfigError(f"drift status of {model} v{version} did not change ({status})")
    event = DriftEvent(
        model=model,
        version=version,
        previous=previous,
        status=status,
        window_rows=window_rows,
        window_span_s=window_span_s,
        features=json_safe(list(features)),
    )
    session.add(event)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="drift.change",
        target=f"model:{model}@{version}",
        details={
            "from": previous,
            "to": status,
            "window_rows": window_rows,
            "drifted": sorted(f["name"] for f in features if f.get("status") == "drift"),
            "event": event.id,
        },
    )
    return event


def drift_events(
    *, session: Session, actor: Principal, model: str, limit: int = 100
) -> list[DriftEvent]:
    """A model's drift status changes, newest first (needs ``model:read``; an audited read)."""
    actor_name, target = actor.name, f"model:{model}"
    rbac.authorize(session, principal=actor, permission="model:read", target=target)
    events = list(
        session.scalars(
            select(DriftEvent)
            .where(DriftEvent.model == model)
            .order_by(DriftEvent.id.desc())
            .limit(limit)
        )
    )
    audit.append(
        session,
        actor=actor_name,
        action="drift.read",
        target=target,
        details={"events": len(events)},
    )
    return events
