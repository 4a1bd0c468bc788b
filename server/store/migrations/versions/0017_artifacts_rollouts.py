"""Artifacts that travel with the store, and safe rollouts.

* ``model_artifacts``: each model artifact's kept bytes (sealed when the store
  has a keyring), content-addressed by the SHA-256 of its plaintext, so a
  serving host that reaches only the database can serve.
* ``model_rollouts``: at most one version per model name served beside its
  production version, as a ``canary`` (a percentage of the traffic) or a
  ``shadow`` (scored on live traffic, never answering).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_artifacts",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_model_artifacts")),
    )
    op.create_table(
        "model_rollouts",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("percent", sa.Double(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_by", sa.String(length=200), nullable=False),
        sa.CheckConstraint("mode IN ('canary', 'shadow')", name=op.f("ck_model_rollouts_mode")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_model_rollouts")),
    )


def downgrade() -> None:
    op.drop_table("model_rollouts")
    op.drop_table("model_artifacts")
