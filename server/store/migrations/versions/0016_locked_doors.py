"""Separated duties and instant revocation.

* ``api_keys.issued_by``: the principal that issued the key (``system`` for the
  first admin's), so an action names both who acted and who handed them the key.
* ``auth_generations``: one row whose ``generation`` grows with every revocation
  (key, role, node key); services read it per request and drop what they cached.

Revision ID: 0012
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("issued_by", sa.String(length=200), nullable=True))
    table = op.create_table(
        "auth_generations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_generations")),
    )
    op.bulk_insert(table, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    op.drop_table("auth_generations")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("issued_by")
