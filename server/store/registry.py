"""The model registry: versions of trained models, their lineage and their stage.

A version is registered in ``staging`` with the next number for its name.
Promoting it to ``production`` archives the name's previous production
version in the same transaction, so a name has at most one production
version. Lineage says where a model came from: its run and round, the
institutions that trained it, the ε each spent, and the DP and SecAgg settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from privacy.errors import ConfigError, FedwardenError
from server.errors import ConflictError, NotFoundError, PermissionDeniedError
from server.run_events import json_safe
from server.store import audit, rbac
from server.store.locks import LockPurpose, lock_for_transaction
from server.store.models import (
    MODEL_STAGES,
    AuditEvent,
    Institution,
    LedgerEntry,
    ModelRollout,
    ModelVersion,
    Principal,
    Round,
    Run,
)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def run_lineage(*, session: Session, run_id: str, up_to_round: int | None = None) -> dict[str, Any]:
    """Where a run's model (after its last round, or after ``up_to_round``) came from.

    Returns
    -------
    dict
        ``run_id``, ``round`` (the last recorded), ``institutions`` (those that
        trained in some round), ``epsilon`` (each institution's latest ε),
        ``dp`` (per institution: noise multiplier, clipping norm, sample rate,
        δ of its last round), ``secagg`` (the last round's settings, if any) and
        ``central_epsilon`` (the global model's ε under central DP, if used) and
        ``evaluation`` (the federated accuracy and loss after that round, pooled and
        per institution; ``None`` where the run recorded none).
    """
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"no run with id {run_id!r}", run=run_id)
    rounds = select(Round).where(Round.run_id == run_id)
    ledger = (
        select(Institution.name, LedgerEntry)
        .join(Institution, Institution.id == LedgerEntry.institution_id)
        .where(LedgerEntry.run_id == run_id)
    )
    if up_to_round is not None:
        rounds = rounds.where(Round.round <= up_to_round)
        ledger = ledger.where(LedgerEntry.round <= up_to_round)
    last = session.scalars(rounds.order_by(Round.round.desc())).first()
    entries = session.execute(ledger.order_by(LedgerEntry.round))
    epsilon: dict[str, float] = {}
    dp: dict[str, dict[str, float]] = {}
    trained: set[str] = set()
    for name, entry in entries:
        epsilon[name] = max(epsilon.get(name, 0.0), entry.epsilon)
        if not entry.refused and entry.kind == "train":
            trained.add(name)
            dp[name] = {
                "noise_multiplier": entry.noise_multiplier,
                "max_grad_norm": entry.max_grad_norm,
                "sample_rate": entry.sample_rate,
                "delta": entry.delta,
            }
    lineage = {
        "run_id": run_id,
        "run_name": run.name,
        "round": last.round if last is not None else None,
        "institutions": sorted(trained),
        "epsilon": epsilon,
        "dp": dp,
        "secagg": last.secagg if last is not None else None,
        "central_epsilon": last.central_epsilon if last is not None else None,
        "evaluation": _evaluation(last),
    }
    safe: dict[str, Any] = json_safe(lineage)
    return safe


def _evaluation(last: Round | None) -> dict[str, Any] | None:
    """The federated evaluation after the exported round: pooled accuracy and loss, and
    accuracy per institution where the round recorded it."""
    if last is None or (last.accuracy is None and last.loss is None):
        return None
    return {
        "round": last.round,
        "accuracy": last.accuracy,
        "loss": last.loss,
        "accuracy_by_institution": dict(last.accuracy_by_institution or {}),
    }


def register_model_version(
    *,
    session: Session,
    actor: Principal,
    name: str,
    artifact_path: str,
    artifact_sha256: str,
    input_schema: Mapping[str, Any],
    output_labels: Sequence[Any],
    preprocessing: Mapping[str, Any],
    model_spec: Mapping[str, Any],
    run_id: str | None = None,
    lineage: Mapping[str, Any] | None = None,
    profile: Mapping[str, Any] | None = None,
) -> ModelVersion:
    """Register an artifact as the next ``staging`` version of ``name`` (needs ``model:register``).

    ``lineage`` defaults to ``run_lineage(run_id)`` when a run is named;
    ``profile`` is the reference profile drift is measured against, if any.
    """
    actor_name, target = actor.name, f"model:{name}"
    rbac.authorize(session, principal=actor, permission="model:register", target=target)
    try:
        if not name.strip() or len(name) > 200:
            raise ConfigError(f"a model name must be 1 to 200 characters, got {name!r}")
        if not _SHA256.match(artifact_sha256):
            raise ConfigError("artifact_sha256 must be 64 lowercase hex characters")
        if lineage is None and run_id is not None:
            lineage = run_lineage(session=session, run_id=run_id)
    except FedwardenError as exc:
        raise audit.record_refusal(
            session,
            error=exc,
            actor=actor_name,
            action="model.register",
            target=target,
            outcome="error",
        ) from None
    lock_for_transaction(session, purpose=LockPurpose.MODEL_REGISTRY)  # one number at a time
    latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name))
    version = ModelVersion(
        name=name,
        version=(latest or 0) + 1,
        stage="staging",
        artifact_path=artifact_path,
        artifact_sha256=artifact_sha256,
        input_schema=json_safe(dict(input_schema)),
        output_labels=list(output_labels),
        preprocessing=json_safe(dict(preprocessing)),
        model_spec=json_safe(dict(model_spec)),
        lineage=json_safe(dict(lineage or {})),
        run_id=run_id,
        created_by=actor_name,
        profile=json_safe(dict(profile)) if profile is not None else None,
    )
    session.add(version)
    session.flush()
    audit.append(
        session,
        actor=actor_name,
        action="model.register",
        target=f"model:{name}@{version.version}",
        details={"sha256": artifact_sha256, "run": run_id, "profile": profile is not None},
    )
    return version


def promote_model_version(
    *,
    session: Session,
    actor: Principal,
    name: str,
    version: int,
    require_approval: bool = False,
) -> ModelVersion | None:
    """Move a ``staging`` version to ``production``, or an ``archived`` one back to it (a
    rollback; needs ``model:promote``).

    The name's previous production version, if any, becomes ``archived``; the
    audit record says which, and whether this was a rollback. With
    ``require_approval`` two people must agree: the first call records a
    request (``model.promote.request``) and returns ``None``; a call by another
    principal holding ``model:promote`` carries it out. The requester can never
    approve its own request.
    """
    actor_name, target = actor.name, f"model:{name}@{version}"
    rbac.authorize(session, principal=actor, permission="model:promote", target=target)
    candidate = _version(session, name=name, version=version)
    if candidate is None or candidate.stage not in ("staging", "archived"):
        found = "no such version" if candidate is None else f"it is {candidate.stage}"
        error = (NotFoundError if candidate is None else ConflictError)(
            f"cannot promote {name} version {version}: {found}; only staging versions are "
            "promoted, and archived ones rolled back to"
        )
        raise audit.record_refusal(
            session,
            error=error,
            actor=actor_name,
            action="model.promote",
            target=target,
            outcome="error",
        )
    rollback = candidate.stage == "archived"
    approval: dict[str, str] = {}
    if require_approval:
        requester = _pending_request(session, target=target)
        if requester is None:
            audit.append(
                session,
                actor=actor_name,
                action="model.promote.request",
                target=target,
                details={"approval": "pending"},
            )
            return None
        if requester == actor_name:
            raise audit.record_refusal(
                session,
                error=PermissionDeniedError(
                    f"{actor_name!r} requested this promotion; another principal with "
                    "model:promote must approve it",
                    principal=actor_name,
                    permission="model:promote",
                    target=target,
                ),
                actor=actor_name,
                action="model.promote",
                target=target,
                details={"rule": "two-person approval"},
            )
        approval = {"requested_by": requester, "approved_by": actor_name}
    archived = []
    for current in session.scalars(
        select(ModelVersion).where(ModelVersion.name == name, ModelVersion.stage == "production")
    ):
        current.stage = "archived"
        archived.append(current.version)
    candidate.stage = "production"
    rollout = session.get(ModelRollout, name)
    ended = {}
    if rollout is not None and rollout.version == version:  # the canary or shadow graduates
        ended = {"rollout_ended": rollout.mode}
        session.delete(rollout)
    session.flush()
    audit.append(
        session,
        actor=actor_name,
        action="model.promote",
        target=target,
        details={
            "archived": archived,
            **approval,
            **({"rollback": True} if rollback else {}),
            **ended,
        },
    )
    return candidate


def _pending_request(session: Session, *, target: str) -> str | None:
    """Who requested the newest promotion of ``target`` not yet carried out, if anyone."""
    last = session.execute(
        select(AuditEvent.action, AuditEvent.actor)
        .where(
            AuditEvent.target == target,
            AuditEvent.outcome == "success",
            AuditEvent.action.in_(("model.promote.request", "model.promote")),
        )
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    ).first()
    return last.actor if last is not None and last.action == "model.promote.request" else None


def get_model_version(
    *,
    session: Session,
    actor: Principal,
    name: str,
    version: int | None = None,
    stage: str = "production",
) -> ModelVersion:
    """A version of ``name``: the given number, else the newest one in ``stage`` (an audited read).

    Needs ``model:read``.
    """
    actor_name = actor.name
    target = f"model:{name}@{version if version is not None else stage}"
    rbac.authorize(session, principal=actor, permission="model:read", target=target)
    if stage not in MODEL_STAGES:
        raise ConfigError(f"model stage must be one of {', '.join(MODEL_STAGES)}")
    if version is not None:
        found = _version(session, name=name, version=version)
    else:
        found = session.scalars(
            select(ModelVersion)
            .where(ModelVersion.name == name, ModelVersion.stage == stage)
            .order_by(ModelVersion.version.desc())
        ).first()
    if found is None:
        error = NotFoundError(f"no model version {target.removeprefix('model:')}", model=name)
        raise audit.record_refusal(
            session,
            error=error,
            actor=actor_name,
            action="model.read",
            target=target,
            outcome="error",
        )
    audit.append(
        session,
        actor=actor_name,
        action="model.read",
        target=f"model:{name}@{found.version}",
        details={"stage": found.stage},
    )
    return found


def list_model_versions(
    *, session: Session, actor: Principal, name: str | None = None
) -> list[ModelVersion]:
    """Every version (of ``name``, if given), by name and number (needs ``model:read``; audited)."""
    actor_name, target = actor.name, f"model:{name or '*'}"
    rbac.authorize(session, principal=actor, permission="model:read", target=target)
    query = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version)
    if name is not None:
        query = query.where(ModelVersion.name == name)
    versions = list(session.scalars(query))
    audit.append(
        session,
        actor=actor_name,
        action="model.list",
        target=target,
        details={"versions": len(versions)},
    )
    return versions


def serving_catalog(*, session: Session) -> list[ModelVersion]:
    """Every ``production`` version, for the inference service's own polling.

    This is the service reading which version to serve, not a principal reading
    a model: it is not audited per poll (the service audits each version it
    loads). It needs no principal because it returns nothing a caller sees.
    """
    return list(
        session.scalars(
            select(ModelVersion)
            .where(ModelVersion.stage == "production")
            .order_by(ModelVersion.name)
        )
    )


def _version(session: Session, *, name: str, version: int) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    ).one_or_none()
