"""The worker's own tables: the scan heartbeat and the outbox.

The worker's part of the host's tasks table (its columns and index) is not a revision: it
follows the mapping, and `worker.migrate.host_changes` reconciles it on every migration.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outbox.types import BigIntId, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ACTIVE = "status IN ('pending', 'failed', 'claimed')"
FINISHED = "status IN ('delivered', 'cancelled')"


def upgrade() -> None:
    op.create_table(
        "reminder_scan_heartbeat",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("scanned_at", UTCDateTime, nullable=False),
        sa.Column("queued", sa.Integer, nullable=False),
        sa.Column("marked", sa.Integer, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("subject_id", sa.BigInteger, nullable=False),
        sa.Column("subject_at", UTCDateTime, nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("available_at", UTCDateTime, nullable=False),
        sa.Column("lease_token", sa.BigInteger, nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("last_attempt_at", UTCDateTime, nullable=True),
        sa.Column("delivered_at", UTCDateTime, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("replayed_at", UTCDateTime, nullable=True),
        sa.Column("replayed_by", sa.String(200), nullable=True),
        sa.Column("replay_count", sa.Integer, nullable=False),
        sa.UniqueConstraint("idempotency_key", name="uq_outbox_idempotency_key"),
        sa.CheckConstraint(
            "status IN ('pending', 'claimed', 'failed', 'delivered', 'dead', 'cancelled')",
            name="ck_outbox_status",
        ),
    )
    op.create_index("ix_outbox_subject_id", "outbox", ["subject_id"])
    op.create_index(
        "ix_outbox_finished",
        "outbox",
        ["updated_at"],
        postgresql_where=sa.text(FINISHED),
        sqlite_where=sa.text(FINISHED),
    )
    op.create_index(
        "ix_outbox_due",
        "outbox",
        ["available_at", "id"],  # the claim's order
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("reminder_scan_heartbeat")
