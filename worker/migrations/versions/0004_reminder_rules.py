"""Reminder rules: the default rule and each user's, and their lead times.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outbox.types import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

DEFAULT = "user_id IS NULL"


def upgrade() -> None:
    op.create_table(
        "reminder_rules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger, nullable=True),
        sa.Column("overdue_every_seconds", sa.Integer, nullable=True),
        sa.Column("overdue_count", sa.Integer, nullable=False),
        sa.Column("all_day_at", sa.Time, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reminder_rules"),
        sa.UniqueConstraint("user_id", name="uq_reminder_rules_user_id"),
        sa.CheckConstraint("id > 0", name="ck_reminder_rules_id"),
        sa.CheckConstraint(
            "CASE WHEN overdue_every_seconds IS NULL THEN overdue_count = 0 "
            "ELSE overdue_every_seconds > 0 AND overdue_count > 0 END",
            name="ck_reminder_rules_overdue",
        ),
    )
    op.create_index(
        "ix_reminder_rules_one_default",
        "reminder_rules",
        [sa.column("user_id").is_(None)],
        unique=True,
        postgresql_where=sa.text(DEFAULT),
        sqlite_where=sa.text(DEFAULT),
    )
    op.create_table(
        "reminder_rule_leads",
        sa.Column("rule_id", sa.Integer, nullable=False),
        sa.Column("lead_seconds", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "lead_seconds", name="pk_reminder_rule_leads"),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["reminder_rules.id"],
            name="fk_reminder_rule_leads_rule_id_reminder_rules",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("lead_seconds >= 0", name="ck_reminder_rule_leads_lead_seconds"),
    )


def downgrade() -> None:
    op.drop_table("reminder_rule_leads")
    op.drop_index("ix_reminder_rules_one_default", table_name="reminder_rules")
    op.drop_table("reminder_rules")
