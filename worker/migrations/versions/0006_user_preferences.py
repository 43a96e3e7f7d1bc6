"""Each user's preferences: opt-outs, quiet hours, digest time, pause, own channel.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outbox.types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reminder_preferences",
        sa.Column("user_id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("opted_out", sa.Text, nullable=True),
        sa.Column("quiet_start", sa.Time, nullable=True),
        sa.Column("quiet_end", sa.Time, nullable=True),
        sa.Column("quiet_days", sa.SmallInteger, nullable=True),
        sa.Column("digest_at", sa.Time, nullable=True),
        sa.Column("digest_workdays", sa.Boolean, nullable=False),
        sa.Column("pause_until", sa.Date, nullable=True),
        sa.Column("channel_url", sa.Text, nullable=True),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_reminder_preferences"),
        sa.CheckConstraint(
            "(quiet_start IS NULL) = (quiet_end IS NULL)",
            name="ck_reminder_preferences_quiet_window",
        ),
        sa.CheckConstraint(
            "quiet_start IS NULL OR quiet_start <> quiet_end",
            name="ck_reminder_preferences_quiet_length",
        ),
        sa.CheckConstraint(
            "quiet_days IS NULL OR (quiet_days > 0 AND quiet_days < 128)",
            name="ck_reminder_preferences_quiet_days",
        ),
    )


def downgrade() -> None:
    op.drop_table("reminder_preferences")
