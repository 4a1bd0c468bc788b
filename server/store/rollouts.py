"""Safe rollouts: a version served beside a name's production version, and rolling back.

``canary``: the version answers ``percent`` of the traffic (sticky by the
caller's request id, see ``deploy.rollout``). ``shadow``: it scores ``percent``
of the live requests, its answers are never returned, only compared with
production's. A name has at most one rollout. Starting, ending, promoting and
rolling back are audited (``model.rollout``, ``model.rollout.end``,
``model.promote`` with ``rollback``); every one needs ``model:promote``.
"""

from __future__ import annotations

import math

from sqlalchemy import select
from sqlalchemy.orm import Session

from privacy.errors import ConfigError, FedwardenError
from server.errors import ConflictError, NotFoundError
from server.store import audit, rbac
from server.store.models import ROLLOUT_MODES, AuditEvent, ModelRollout, ModelVersion, Principal
from server.store.registry import promote_model_version


def start_rollout(
    *,
    session: Session,
    actor: Principal,
    name: str,
    version: int,
    mode: str,
    percent: float,
) -> ModelRollout:
    """Serve ``version`` of ``name`` as a ``canary`` or ``shadow`` on ``percent`` of the traffic.

    The version must be registered and not in production; a rollout already
    running for the name is replaced (the audit event says which it replaced).
    """
    actor_name, target = actor.name, f"model:{name}@{version}"
    rbac.authorize(session, principal=actor, permission="model:promote", target=target)
    try:
        if mode not in ROLLOUT_MODES:
            raise ConfigError(f"a rollout is one of {', '.join(ROLLOUT_MODES)}, not {mode!r}")
        if not (math.isfinite(percent) and 0 < percent <= 100):
            raise ConfigError(f"a rollout's percent must be in (0, 100], got {percent}")
        candidate = session.scalars(
            select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
        ).one_or_none()
        if candidate is None:
            raise NotFoundError(f"no model version {name}@{version}", model=name)
        if candidate.stage == "production":
            raise ConflictError(
                f"{name} version {version} is already in production; a rollout serves another "
                "version beside it",
                model=name,
            )
    except FedwardenError as exc:
        raise audit.record_refusal(
            session,
            error=exc,
            actor=actor_name,
            action="model.rollout",
            target=target,
            outcome="error",
        ) from None
    current = session.get(ModelRollout, name)
    replaced = None
    if current is not None:
        replaced = {"version": current.version, "mode": current.mode, "percent": current.percent}
        session.delete(current)
        session.flush()
    rollout = ModelRollout(
        name=name, version=version, mode=mode, percent=float(percent), started_by=actor_name
    )
    session.add(rollout)
    session.flush()
    audit.append(
        session,
        actor=actor_name,
        action="model.rollout",
        target=target,
        details={"mode": mode, "percent": float(percent), "replaced": replaced},
    )
    return rollout


def end_rollout(
    *, session: Session, actor: Principal, name: str, reason: str = "ended"
) -> ModelRollout | None:
    """Stop serving the name's rollout, if it has one (``None`` if not); audited."""
    rbac.authorize(session, principal=actor, permission="model:promote", target=f"model:{name}")
    current = session.get(ModelRollout, name)
    if current is None:
        return None
    ended = ModelRollout(
        name=current.name,
        version=current.version,
        mode=current.mode,
        percent=current.percent,
        started_at=current.started_at,
        started_by=current.started_by,
    )
    session.delete(current)
    session.flush()
    audit.append(
        session,
        actor=actor.name,
        action="model.rollout.end",
        target=f"model:{name}@{ended.version}",
        details={"mode": ended.mode, "percent": ended.percent, "reason": reason},
    )
    return ended


def active_rollouts(*, session: Session) -> list[tuple[ModelRollout, ModelVersion]]:
    """Every rollout running with its version, for the inference service's own polling (not
    audited, as ``serving_catalog``)."""
    rows = session.execute(
        select(ModelRollout, ModelVersion)
        .join(
            ModelVersion,
            (ModelVersion.name == ModelRollout.name)
            & (ModelVersion.version == ModelRollout.version),
        )
        .order_by(ModelRollout.name)
    )
    return [(rollout, version) for rollout, version in rows]


def rollout_for(*, session: Session, actor: Principal, name: str) -> ModelRollout | None:
    """The name's rollout, if any (needs ``model:read``)."""
    rbac.authorize(session, principal=actor, permission="model:read", target=f"model:{name}")
    return session.get(ModelRollout, name)


def roll_back(
    *, session: Session, actor: Principal, name: str, version: int | None = None
) -> tuple[str, int]:
    """Undo the last change to what ``name`` serves.

    With a rollout running, end it (production never changed). Otherwise bring
    back ``version`` (an archived version), or by default the version the
    current production one replaced, read from the audit log; no re-export:
    the archived version's artifact is still in the store.

    Returns
    -------
    tuple
        ``("rollout", v)``: the rollout of version ``v`` ended; ``("promote", v)``:
        version ``v`` is in production again.
    """
    target = f"model:{name}"
    rbac.authorize(session, principal=actor, permission="model:promote", target=target)
    if version is None:
        ended = end_rollout(session=session, actor=actor, name=name, reason="rollback")
        if ended is not None:
            return "rollout", ended.version
        version = _previous_production(session, name=name)
        if version is None:
            raise audit.record_refusal(
                session,
                error=ConflictError(
                    f"nothing to roll back for {name}: no rollout is running and no earlier "
                    "production version is on record; name an archived version",
                    model=name,
                ),
                actor=actor.name,
                action="model.rollback",
                target=target,
                outcome="error",
            )
    promoted = promote_model_version(session=session, actor=actor, name=name, version=version)
    assert promoted is not None  # no approval asked for
    return "promote", promoted.version


def _previous_production(session: Session, *, name: str) -> int | None:
    """The version the current production version of ``name`` replaced, from the audit log."""
    current = session.scalar(
        select(ModelVersion.version).where(
            ModelVersion.name == name, ModelVersion.stage == "production"
        )
    )
    if current is None:
        return None
    event = session.scalars(
        select(AuditEvent)
        .where(
            AuditEvent.action == "model.promote",
            AuditEvent.outcome == "success",
            AuditEvent.target == f"model:{name}@{current}",
        )
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    ).first()
    archived = (event.details or {}).get("archived", []) if event is not None else []
    if not archived:
        return None
    stage = session.scalar(
        select(ModelVersion.stage).where(
            ModelVersion.name == name, ModelVersion.version == int(archived[0])
        )
    )
    return int(archived[0]) if stage == "archived" else None
