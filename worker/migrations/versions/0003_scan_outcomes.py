"""The last failed scan's time and reason, and the count of tasks that cannot be reminded,
on the scan heartbeat.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outbox.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs, so that the offline (--sql) form is the same DDL on every dialect.
    op.add_column("reminder_scan_heartbeat", sa.Column("failed_at", UTCDateTime, nullable=True))
    op.add_column("reminder_scan_heartbeat", sa.Column("failure", sa.Text, nullable=True))
    op.add_column("reminder_scan_heartbeat", sa.Column("unremindable", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reminder_scan_heartbeat") as batch:
        batch.drop_column("unremindable")
        batch.drop_column("failure")
        batch.drop_column("failed_at")
