"""Indexes for the console's pages: the audit log by actor and by action, runs by start.

* ``ix_audit_events_actor_seq`` and ``ix_audit_events_action_seq``: an audit page
  filtered by actor or action, newest first, reads one index range.
* ``ix_runs_started_at``: the runs list, newest first.
* ``ix_privacy_ledger_institution_recorded``: each institution's last report (last
  seen, latest budget) without reading its whole ledger.

Revision ID: 0015
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_audit_events_actor_seq", "audit_events", ["actor", "seq"], unique=False)
    op.create_index("ix_audit_events_action_seq", "audit_events", ["action", "seq"], unique=False)
    op.create_index("ix_runs_started_at", "runs", ["started_at"], unique=False)
    op.create_index(
        "ix_privacy_ledger_institution_recorded",
        "privacy_ledger",
        ["institution_id", "recorded_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_privacy_ledger_institution_recorded", table_name="privacy_ledger")
    op.drop_index("ix_runs_started_at", table_name="runs")
    op.drop_index("ix_audit_events_action_seq", table_name="audit_events")
    op.drop_index("ix_audit_events_actor_seq", table_name="audit_events")
