"""The governance store's tables, as SQLAlchemy 2.0 typed models.

Who may act (institutions, principals, roles, permissions, grants, API keys),
what happened (runs, rounds, the privacy ledger, model versions, checkpoints)
and the tamper-evident record of it all (audit events). Times are stored in
UTC and come back timezone-aware. Alembic migrations in ``migrations/`` create
exactly these tables; a test compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column

from server.errors import StoreError

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_STATUSES = ("running", "completed", "failed", "stopped")
MODEL_STAGES = ("staging", "production", "archived")
ROLLOUT_MODES = ("canary", "shadow")
PRINCIPAL_KINDS = ("person", "service")
LEDGER_KINDS = ("train", "profile")
DRIFT_STATUSES = ("ok", "warning", "drift")
PERFORMANCE_KINDS = ("realised", "estimated")
PERFORMANCE_STATUSES = ("insufficient_data", "ok", "alert")


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC that always comes back timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the store keeps timezone-aware times only")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Institution(Base):
    """A member of the federation (a hospital, a bank)."""

    __tablename__ = "institutions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Principal(Base):
    """A person or service account, tied to an institution or (``None``) to the coordinator."""

    __tablename__ = "principals"
    __table_args__ = (CheckConstraint(_in("kind", PRINCIPAL_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institutions.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Role(Base):
    """A named bundle of permissions (``admin``, ``operator``, ...)."""

    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class Permission(Base):
    """A named permission (``run:start``, ``model:promote``, ...)."""

    __tablename__ = "permissions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class RolePermission(Base):
    """A permission that a role carries."""

    __tablename__ = "role_permissions"

    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id"), primary_key=True)
    permission_id: Mapped[int] = mapped_column(ForeignKey("permissions.id"), primary_key=True)


class Grant(Base):
    """A role held by a principal."""

    __tablename__ = "grants"

    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), primary_key=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id"), primary_key=True)
    granted_by: Mapped[str] = mapped_column(String(200))
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key, kept only as a salted hash; ``prefix`` finds it."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    scheme: Mapped[str] = mapped_column(String(50))
    salt: Mapped[str] = mapped_column(String(64))
    secret_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    issued_by: Mapped[str | None] = mapped_column(String(200))


class AuthGeneration(Base):
    """One row whose ``generation`` grows with every revocation; services read it per request."""

    __tablename__ = "auth_generations"

    id: Mapped[int] = mapped_column(primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)


class Run(Base):
    """One federated training run."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        Index("ix_runs_started_at", "started_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]]
    started_by_id: Mapped[int | None] = mapped_column(ForeignKey("principals.id"))
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    stopped_reason: Mapped[str | None] = mapped_column(Text)
    profile: Mapped[dict[str, Any] | None]


class Round(Base):
    """One round of a run: its metrics, who took part and who did not, and why."""

    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("run_id", "round"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    round: Mapped[int]
    loss: Mapped[float | None]
    accuracy: Mapped[float | None]
    accuracy_by_institution: Mapped[dict[str, Any]]
    participants: Mapped[list[Any]]
    refused: Mapped[dict[str, Any]]
    rejected: Mapped[dict[str, Any]]
    dropped: Mapped[dict[str, Any]]
    aggregated: Mapped[bool]
    secagg: Mapped[dict[str, Any] | None]
    central_epsilon: Mapped[float | None]
    duration_s: Mapped[float]
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerEntry(Base):
    """What one institution spent in one round of one run (or that it refused to).

    ``kind`` is ``train`` for a DP-SGD round and ``profile`` for a noisy reference
    profile released after round ``round`` (one Gaussian release: ``steps`` 1,
    ``sample_rate`` 1, ``max_grad_norm`` its L2 sensitivity); ``epsilon`` is the
    institution's ε after it, composed with everything before. ``budget_epsilon``
    is the budget the institution reported (``None``: none, or DP off).
    """

    __tablename__ = "privacy_ledger"
    __table_args__ = (
        UniqueConstraint("run_id", "institution_id", "round", "kind"),
        CheckConstraint(_in("kind", LEDGER_KINDS), name="kind"),
        Index("ix_privacy_ledger_institution_recorded", "institution_id", "recorded_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    round: Mapped[int]
    steps: Mapped[int]
    sample_rate: Mapped[float]
    noise_multiplier: Mapped[float]
    max_grad_norm: Mapped[float]
    epsilon: Mapped[float]
    delta: Mapped[float]
    refused: Mapped[bool]
    reason: Mapped[str] = mapped_column(Text, default="")
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(20), default="train", server_default="train")
    budget_epsilon: Mapped[float | None]


class ModelVersion(Base):
    """A registered model artifact, its lineage and its stage."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        CheckConstraint(_in("stage", MODEL_STAGES), name="stage"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int]
    stage: Mapped[str] = mapped_column(String(20))
    artifact_path: Mapped[str] = mapped_column(Text)
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    input_schema: Mapped[dict[str, Any]]
    output_labels: Mapped[list[Any]]
    preprocessing: Mapped[dict[str, Any]]
    model_spec: Mapped[dict[str, Any]]
    lineage: Mapped[dict[str, Any]]
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    profile: Mapped[dict[str, Any] | None]


class ModelArtifact(Base):
    """A model artifact's bytes, content-addressed by the SHA-256 of its plaintext.

    ``blob`` is what ``deploy.artifacts.seal_artifact`` keeps: sealed when the
    store has a keyring, so the database holds no more plaintext than a file
    would. Written once at registration; versions name it by ``artifact_sha256``.
    """

    __tablename__ = "model_artifacts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int]
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelRollout(Base):
    """A version served beside a name's production version: ``canary`` (answers
    ``percent`` of the traffic, sticky by request id) or ``shadow`` (scored, never answers).
    One per name; ending it deletes the row (the audit log keeps its history)."""

    __tablename__ = "model_rollouts"
    __table_args__ = (CheckConstraint(_in("mode", ROLLOUT_MODES), name="mode"),)

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int]
    mode: Mapped[str] = mapped_column(String(20))
    percent: Mapped[float]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_by: Mapped[str] = mapped_column(String(200))


class Checkpoint(Base):
    """A run's saved state after a round (model weights and strategy state), for resuming."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "round"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    round: Mapped[int]
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DriftEvent(Base):
    """A served model version's drift status changed (``previous`` to ``status``).

    ``features`` holds, per feature, its status, the detectors' scores and
    p-values, and the reference and current histograms the change was seen on.
    """

    __tablename__ = "drift_events"
    __table_args__ = (
        CheckConstraint(_in("status", DRIFT_STATUSES), name="status"),
        CheckConstraint(_in("previous", DRIFT_STATUSES), name="previous"),
        Index("ix_drift_events_model_time", "model", "time"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[int]
    previous: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    time: Mapped[datetime] = mapped_column(default=utcnow)
    window_rows: Mapped[int]
    window_span_s: Mapped[float]
    features: Mapped[list[Any]]


class ServedPrediction(Base):
    """What the service keeps of one answered row: enough to join an outcome and score it.

    The row's features are not kept: only its id (``id``, time-ordered, see
    ``deploy.outcomes``), the caller's ``request_id``, the version that answered,
    when, and the class probabilities. ``label`` (a class index) is set once, when
    the true outcome comes back. Rows older than the service's retention are deleted.
    """

    __tablename__ = "served_predictions"
    __table_args__ = (
        Index("ix_served_predictions_model_time", "model", "served_at"),
        Index("ix_served_predictions_model_request", "model", "request_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[str | None] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[int]
    served_at: Mapped[datetime]
    probabilities: Mapped[list[Any]]
    label: Mapped[int | None]
    labelled_at: Mapped[datetime | None]


class PerformanceEvent(Base):
    """A served model version's realised or estimated performance status changed."""

    __tablename__ = "performance_events"
    __table_args__ = (
        CheckConstraint(_in("kind", PERFORMANCE_KINDS), name="kind"),
        CheckConstraint(_in("status", PERFORMANCE_STATUSES), name="status"),
        CheckConstraint(_in("previous", PERFORMANCE_STATUSES), name="previous"),
        Index("ix_performance_events_model_time", "model", "time"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[int]
    kind: Mapped[str] = mapped_column(String(20))
    previous: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    time: Mapped[datetime] = mapped_column(default=utcnow)
    rows: Mapped[int]
    metrics: Mapped[dict[str, Any]]
    thresholds: Mapped[dict[str, Any]]


class NodeKey(Base):
    """An institution's SuperNode public key, registered with the coordinator.

    ``public_key`` is the OpenSSH form without a comment (``ecdsa-sha2-nistp384
    AAAA...``), ``fingerprint`` its ``SHA256:...`` digest. The private key is
    never stored. A revoked key is no longer pushed to the SuperLink.
    """

    __tablename__ = "node_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None]


class AuditEvent(Base):
    """One link of the append-only audit chain; ``hash`` covers every other column."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_time", "time"),
        Index("ix_audit_events_actor_seq", "actor", "seq"),
        Index("ix_audit_events_action_seq", "action", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(500))
    outcome: Mapped[str] = mapped_column(String(20))
    details: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


@event.listens_for(AuditEvent, "before_update")
@event.listens_for(AuditEvent, "before_delete")
def _refuse_audit_change(mapper: Mapper[AuditEvent], connection: Any, target: AuditEvent) -> None:
    """The ORM never updates or deletes an audit event."""
    raise StoreError(f"audit event {target.seq} is append-only", seq=target.seq)
