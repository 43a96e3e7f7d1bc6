"""Reminders per recipient and lead time: whom an outbox row goes to, when it is meant for,
and how far the scan has planned.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outbox.types import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL on the rows queued before: their task's owner, at once (one reminder ahead).
    op.add_column("outbox", sa.Column("recipient_id", sa.BigInteger, nullable=True))
    op.add_column("outbox", sa.Column("offset_seconds", sa.Integer, nullable=True))
    # NULL until the next scan plans: it then plans from its own time on.
    op.add_column("reminder_scan_heartbeat", sa.Column("planned_until", UTCDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reminder_scan_heartbeat") as batch:
        batch.drop_column("planned_until")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("offset_seconds")
        batch.drop_column("recipient_id")
