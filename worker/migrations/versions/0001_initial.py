"""Reference schema (users, tasks) if absent, the worker's column on tasks, and the outbox.

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

# A revision is history: it keeps the text it created the index with, whatever the model
# becomes. The model's predicate (worker.reminders.schema.awaiting_reminder) must compile to
# it on each dialect; tests/unit/test_schema.py holds them equal.
AWAITING_REMINDER = (
    "completed_at IS NULL AND due_date IS NOT NULL AND reminder_due_at IS DISTINCT FROM due_date"
)
AWAITING_REMINDER_SQLITE = (
    "completed_at IS NULL AND due_date IS NOT NULL AND reminder_due_at IS NOT due_date"
)
ACTIVE = "status IN ('pending', 'failed', 'claimed')"
FINISHED = "status IN ('delivered', 'cancelled')"


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    # The host application owns users and tasks; create them only where it has not.
    if "users" not in existing:
        op.create_table(
            "users",
            sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("email", sa.Text, nullable=False),
            sa.Column("timezone", sa.Text, nullable=False, server_default="UTC"),
            sa.Column(
                "notifications_enabled", sa.Boolean, nullable=False, server_default=sa.true()
            ),
        )
    if "tasks" not in existing:
        op.create_table(
            "tasks",
            sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("owner_id", sa.BigInteger, sa.ForeignKey("users.id"), nullable=False),
            sa.Column("title", sa.Text, nullable=False),
            sa.Column("due_date", UTCDateTime, nullable=True),
            sa.Column("completed_at", UTCDateTime, nullable=True),
            sa.Column("reminder_sent_at", UTCDateTime, nullable=True),
        )
        op.create_index("ix_tasks_owner_id", "tasks", ["owner_id"])
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("tasks")}
    if "reminder_sent_at" not in columns:
        op.add_column("tasks", sa.Column("reminder_sent_at", UTCDateTime, nullable=True))
    op.add_column("tasks", sa.Column("reminder_due_at", UTCDateTime, nullable=True))
    op.create_index(
        "ix_tasks_awaiting_reminder",
        "tasks",
        ["due_date"],
        postgresql_where=sa.text(AWAITING_REMINDER),
        sqlite_where=sa.text(AWAITING_REMINDER_SQLITE),
    )

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
    op.drop_index("ix_tasks_awaiting_reminder", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("reminder_due_at")
