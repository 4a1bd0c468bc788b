"""Initial schema: governance, runs, the privacy ledger, model versions, audit events.

Also writes the built-in roles and their permissions. The lists below are this
revision's own copy (a migration must not change when ``rbac.py`` does); a
later revision that changes roles or permissions adds or removes rows itself.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_PERMISSIONS = {
    "run:start": "start a federated training run",
    "run:stop": "stop a running run",
    "run:read": "read runs, rounds and their metrics",
    "run:join": "take part in runs for one's own institution",
    "model:register": "register a trained model version",
    "model:promote": "promote a model version to production",
    "model:read": "read model versions and their lineage",
    "audit:read": "read, export and verify the audit log",
    "audit:checkpoint": "sign the audit log's head with the coordinator's key",
    "ledger:read": "read every institution's privacy ledger",
    "ledger:read-own": "read one's own institution's privacy ledger",
    "principal:read": "list institutions, principals, roles and keys",
    "principal:manage": "create principals, grant and revoke roles",
    "key:manage": "issue and revoke API keys",
    "institution:manage": "add institutions to the federation",
    "node:register": "register a node for one's own institution",
    "predict": "call the inference API",
}
_ROLES = {
    "admin": (
        "manages principals, roles, keys and institutions",
        "principal:read principal:manage key:manage institution:manage run:read model:read "
        "audit:checkpoint",
    ),
    "operator": (
        "starts and stops runs, registers and promotes models",
        "run:start run:stop run:read model:register model:promote model:read ledger:read "
        "audit:checkpoint",
    ),
    "institution": (
        "joins runs for its own institution and reads its own ledger",
        "run:join ledger:read-own node:register",
    ),
    "auditor": (
        "reads everything, changes nothing",
        "audit:read run:read model:read ledger:read principal:read",
    ),
    "consumer": ("calls the inference API", "predict"),
}


def _seed_roles() -> None:
    permissions = sa.table(
        "permissions", sa.column("id"), sa.column("name"), sa.column("description")
    )
    roles = sa.table("roles", sa.column("id"), sa.column("name"), sa.column("description"))
    links = sa.table("role_permissions", sa.column("role_id"), sa.column("permission_id"))
    op.bulk_insert(permissions, [{"name": n, "description": d} for n, d in _PERMISSIONS.items()])
    op.bulk_insert(roles, [{"name": n, "description": d} for n, (d, _) in _ROLES.items()])
    for role, (_, granted) in _ROLES.items():
        pairs = (
            sa.select(roles.c.id, permissions.c.id)
            .select_from(roles.join(permissions, permissions.c.name.in_(granted.split())))
            .where(roles.c.name == role)
        )
        op.execute(sa.insert(links).from_select(["role_id", "permission_id"], pairs))


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("target", sa.String(length=500), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_events_hash")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_audit_events_prev_hash")),
    )
    op.create_index("ix_audit_events_time", "audit_events", ["time"], unique=False)
    op.create_table(
        "institutions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_institutions")),
        sa.UniqueConstraint("name", name=op.f("uq_institutions_name")),
    )
    op.create_table(
        "permissions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_permissions")),
        sa.UniqueConstraint("name", name=op.f("uq_permissions_name")),
    )
    op.create_table(
        "roles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roles")),
        sa.UniqueConstraint("name", name=op.f("uq_roles_name")),
    )
    op.create_table(
        "principals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('person', 'service')", name=op.f("ck_principals_kind")),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_principals_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_principals")),
        sa.UniqueConstraint("name", name=op.f("uq_principals_name")),
    )
    op.create_table(
        "role_permissions",
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.Column("permission_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["permission_id"],
            ["permissions.id"],
            name=op.f("fk_role_permissions_permission_id_permissions"),
        ),
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name=op.f("fk_role_permissions_role_id_roles")
        ),
        sa.PrimaryKeyConstraint("role_id", "permission_id", name=op.f("pk_role_permissions")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("scheme", sa.String(length=50), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["principal_id"], ["principals.id"], name=op.f("fk_api_keys_principal_id_principals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index(op.f("ix_api_keys_principal_id"), "api_keys", ["principal_id"], unique=False)
    op.create_table(
        "grants",
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.Column("granted_by", sa.String(length=200), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["principal_id"], ["principals.id"], name=op.f("fk_grants_principal_id_principals")
        ),
        sa.ForeignKeyConstraint(["role_id"], ["roles.id"], name=op.f("fk_grants_role_id_roles")),
        sa.PrimaryKeyConstraint("principal_id", "role_id", name=op.f("pk_grants")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("started_by_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stopped_reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed', 'stopped')", name=op.f("ck_runs_status")
        ),
        sa.ForeignKeyConstraint(
            ["started_by_id"], ["principals.id"], name=op.f("fk_runs_started_by_id_principals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_checkpoints_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkpoints")),
        sa.UniqueConstraint("run_id", "round", name=op.f("uq_checkpoints_run_id_round")),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("artifact_path", sa.Text(), nullable=False),
        sa.Column("artifact_sha256", sa.String(length=64), nullable=False),
        sa.Column("input_schema", sa.JSON(), nullable=False),
        sa.Column("output_labels", sa.JSON(), nullable=False),
        sa.Column("preprocessing", sa.JSON(), nullable=False),
        sa.Column("model_spec", sa.JSON(), nullable=False),
        sa.Column("lineage", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.CheckConstraint(
            "stage IN ('staging', 'production', 'archived')", name=op.f("ck_model_versions_stage")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_model_versions_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_model_versions_name_version")),
    )
    op.create_table(
        "privacy_ledger",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("sample_rate", sa.Double(), nullable=False),
        sa.Column("noise_multiplier", sa.Double(), nullable=False),
        sa.Column("max_grad_norm", sa.Double(), nullable=False),
        sa.Column("epsilon", sa.Double(), nullable=False),
        sa.Column("delta", sa.Double(), nullable=False),
        sa.Column("refused", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_privacy_ledger_institution_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_privacy_ledger_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_ledger")),
        sa.UniqueConstraint(
            "run_id",
            "institution_id",
            "round",
            name=op.f("uq_privacy_ledger_run_id_institution_id_round"),
        ),
    )
    op.create_index(
        op.f("ix_privacy_ledger_institution_id"), "privacy_ledger", ["institution_id"], unique=False
    )
    op.create_table(
        "rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Double(), nullable=True),
        sa.Column("accuracy", sa.Double(), nullable=True),
        sa.Column("accuracy_by_institution", sa.JSON(), nullable=False),
        sa.Column("participants", sa.JSON(), nullable=False),
        sa.Column("refused", sa.JSON(), nullable=False),
        sa.Column("rejected", sa.JSON(), nullable=False),
        sa.Column("dropped", sa.JSON(), nullable=False),
        sa.Column("aggregated", sa.Boolean(), nullable=False),
        sa.Column("secagg", sa.JSON(), nullable=True),
        sa.Column("central_epsilon", sa.Double(), nullable=True),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_rounds_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rounds")),
        sa.UniqueConstraint("run_id", "round", name=op.f("uq_rounds_run_id_round")),
    )

    _seed_roles()


def downgrade() -> None:
    op.drop_table("rounds")
    op.drop_index(op.f("ix_privacy_ledger_institution_id"), table_name="privacy_ledger")
    op.drop_table("privacy_ledger")
    op.drop_table("model_versions")
    op.drop_table("checkpoints")
    op.drop_table("runs")
    op.drop_table("grants")
    op.drop_index(op.f("ix_api_keys_principal_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("role_permissions")
    op.drop_table("principals")
    op.drop_table("roles")
    op.drop_table("permissions")
    op.drop_table("institutions")
    op.drop_index("ix_audit_events_time", table_name="audit_events")
    op.drop_table("audit_events")
