"""Model performance: served predictions kept for their outcomes, performance changes.

* ``served_predictions``: per answered row its id, the caller's request id, the
  version, when, and the class probabilities (never the row itself); the true
  label once it is fed back. Deleted past the service's retention.
* ``performance_events``: each change of a served version's realised or
  estimated performance status (``insufficient_data``, ``ok``, ``alert``).
* The ``feedback`` permission (report outcomes), held by ``consumer`` and
  ``operator``.

Revision ID: 0014
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = "('insufficient_data', 'ok', 'alert')"
_GRANTED = ("consumer", "operator")


def upgrade() -> None:
    op.create_table(
        "served_predictions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("label", sa.Integer(), nullable=True),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_served_predictions")),
    )
    op.create_index(
        "ix_served_predictions_model_time", "served_predictions", ["model", "served_at"]
    )
    op.create_index(
        "ix_served_predictions_model_request", "served_predictions", ["model", "request_id"]
    )
    op.create_table(
        "performance_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("previous", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('realised', 'estimated')", name=op.f("ck_performance_events_kind")
        ),
        sa.CheckConstraint(f"status IN {_STATUSES}", name=op.f("ck_performance_events_status")),
        sa.CheckConstraint(f"previous IN {_STATUSES}", name=op.f("ck_performance_events_previous")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_performance_events")),
    )
    op.create_index(
        "ix_performance_events_model_time", "performance_events", ["model", "time"], unique=False
    )
    permissions = sa.table(
        "permissions", sa.column("id"), sa.column("name"), sa.column("description")
    )
    roles = sa.table("roles", sa.column("id"), sa.column("name"))
    links = sa.table("role_permissions", sa.column("role_id"), sa.column("permission_id"))
    op.bulk_insert(
        permissions,
        [{"name": "feedback", "description": "report the true outcomes of served predictions"}],
    )
    pairs = (
        sa.select(roles.c.id, permissions.c.id)
        .select_from(roles.join(permissions, permissions.c.name == "feedback"))
        .where(roles.c.name.in_(_GRANTED))
    )
    op.execute(sa.insert(links).from_select(["role_id", "permission_id"], pairs))


def downgrade() -> None:
    permissions = sa.table("permissions", sa.column("id"), sa.column("name"))
    links = sa.table("role_permissions", sa.column("role_id"), sa.column("permission_id"))
    feedback = sa.select(permissions.c.id).where(permissions.c.name == "feedback")
    op.execute(sa.delete(links).where(links.c.permission_id.in_(feedback.scalar_subquery())))
    op.execute(sa.delete(permissions).where(permissions.c.name == "feedback"))
    op.drop_index("ix_performance_events_model_time", table_name="performance_events")
    op.drop_table("performance_events")
    op.drop_index("ix_served_predictions_model_request", table_name="served_predictions")
    op.drop_index("ix_served_predictions_model_time", table_name="served_predictions")
    op.drop_table("served_predictions")
