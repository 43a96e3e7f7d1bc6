"""The scanning process's clock offset to the database, on the scan heartbeat.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Unknown (NULL) until the next scan writes it.
    op.add_column("reminder_scan_heartbeat", sa.Column("clock_offset_ms", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reminder_scan_heartbeat") as batch:
        batch.drop_column("clock_offset_ms")
