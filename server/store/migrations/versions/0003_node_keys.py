"""Node keys: each institution's SuperNode public key, for Flower's node authentication.

* ``node_keys``: the OpenSSH public key (no comment), its SHA-256 fingerprint
  (unique), the institution it belongs to, who registered it and when, and
  when it was revoked. Private keys are never stored.

The ``node:register`` permission and the ``institution`` role that holds it
exist since revision 0001.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "node_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_node_keys_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_keys")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_node_keys_fingerprint")),
    )
    op.create_index(
        op.f("ix_node_keys_institution_id"), "node_keys", ["institution_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_node_keys_institution_id"), table_name="node_keys")
    op.drop_table("node_keys")
