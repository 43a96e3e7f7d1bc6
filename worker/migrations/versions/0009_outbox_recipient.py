"""The outbox: a recipient's live rows, by index.

The burst rule counts the reminders one user has waiting or claimed when a quiet window
ends; without an index on the recipient that count would read every live row.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ACTIVE = "status IN ('pending', 'failed', 'claimed')"


def upgrade() -> None:
    op.create_index(
        "ix_outbox_recipient",
        "outbox",
        ["recipient_id"],
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_recipient", table_name="outbox")
