"""Resume checkpoints in the store: a run's state after a round, saved and read back (audited)."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.errors import NotFoundError
from server.store import audit, rbac
from server.store.models import Checkpoint, Principal, utcnow
from server.store.runs import find_run


def save_checkpoint(
    *, session: Session, actor: Principal, run_id: str, round: int, blob: bytes
) -> Checkpoint:
    """Keep a run's state after ``round`` (needs ``run:start``); a round saved again is replaced."""
    actor_name, target = actor.name, f"run:{run_id}"
    rbac.authorize(session, principal=actor, permission="run:start", target=target)
    find_run(session, run_id, actor_name=actor_name, action="checkpoint.save")
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
    run_id = find_run(session, run_id, actor_name=actor_name, action="checkpoint.read").id
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
