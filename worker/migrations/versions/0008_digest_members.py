"""Digests: which reminder rows each digest row carries.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outbox.types import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reminder_digest_members",
        # The member's own outbox row: one digest per member, whatever races merge it.
        sa.Column("member_id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("digest_id", sa.BigInteger, nullable=False),
        # The member's facts as queued: the digest re-checks and renders from them, so a
        # purge of the (cancelled) member row loses nothing.
        sa.Column("member_key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("task_id", sa.BigInteger, nullable=False),
        sa.Column("subject_at", UTCDateTime, nullable=True),
        sa.Column("recipient_id", sa.BigInteger, nullable=True),
        sa.Column("offset_seconds", sa.Integer, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("member_id", name="pk_reminder_digest_members"),
        # A purged digest takes its member list with it.
        sa.ForeignKeyConstraint(
            ["digest_id"],
            ["outbox.id"],
            name="fk_reminder_digest_members_digest_id_outbox",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_reminder_digest_members_digest_id", "reminder_digest_members", ["digest_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_reminder_digest_members_digest_id", "reminder_digest_members")
    op.drop_table("reminder_digest_members")
