"""Drift monitoring: reference profiles, profile spending in the ledger, drift state changes.

* ``runs.profile`` and ``model_versions.profile``: the federated reference
  profile of a run, copied onto the versions registered from it.
* ``privacy_ledger.kind`` (``train`` or ``profile``; a noisy profile is one more
  release an institution spends ε on) joins the unique key, and
  ``privacy_ledger.budget_epsilon`` keeps the budget each institution reported,
  from which the ε it has left is computed.
* ``drift_events``: each change of a served version's drift status.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("profile", sa.JSON(), nullable=True))
    op.add_column("model_versions", sa.Column("profile", sa.JSON(), nullable=True))
    with op.batch_alter_table("privacy_ledger") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=20), server_default="train", nullable=False)
        )
        batch.add_column(sa.Column("budget_epsilon", sa.Double(), nullable=True))
        batch.drop_constraint(op.f("uq_privacy_ledger_run_id_institution_id_round"), type_="unique")
        batch.create_unique_constraint(
            op.f("uq_privacy_ledger_run_id_institution_id_round_kind"),
            ["run_id", "institution_id", "round", "kind"],
        )
        batch.create_check_constraint(
            op.f("ck_privacy_ledger_kind"), "kind IN ('train', 'profile')"
        )
    op.create_table(
        "drift_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("previous", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_rows", sa.Integer(), nullable=False),
        sa.Column("window_span_s", sa.Double(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "previous IN ('ok', 'warning', 'drift')", name=op.f("ck_drift_events_previous")
        ),
        sa.CheckConstraint(
            "status IN ('ok', 'warning', 'drift')", name=op.f("ck_drift_events_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_events")),
    )
    op.create_index("ix_drift_events_model_time", "drift_events", ["model", "time"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_drift_events_model_time", table_name="drift_events")
    op.drop_table("drift_events")
    spent = op.get_bind().scalar(
        sa.text("SELECT count(*) FROM privacy_ledger WHERE kind <> 'train'")
    )
    if spent:
        # Dropping them would lose ε that institutions really spent.
        raise RuntimeError(
            f"the ledger holds {spent} profile release(s) that revision 0001 cannot record"
        )
    with op.batch_alter_table("privacy_ledger") as batch:
        batch.drop_constraint(op.f("ck_privacy_ledger_kind"), type_="check")
        batch.drop_constraint(
            op.f("uq_privacy_ledger_run_id_institution_id_round_kind"), type_="unique"
        )
        batch.create_unique_constraint(
            op.f("uq_privacy_ledger_run_id_institution_id_round"),
            ["run_id", "institution_id", "round"],
        )
        batch.drop_column("budget_epsilon")
        batch.drop_column("kind")
    op.drop_column("model_versions", "profile")
    op.drop_column("runs", "profile")
