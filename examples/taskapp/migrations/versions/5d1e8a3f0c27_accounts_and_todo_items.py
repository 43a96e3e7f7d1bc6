"""Accounts and their todo items.

Revision ID: 5d1e8a3f0c27
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "5d1e8a3f0c27"
down_revision = None
branch_labels = None
depends_on = None

#: BIGSERIAL on PostgreSQL; SQLite numbers rows only through an INTEGER primary key.
BIG_SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", BIG_SERIAL, primary_key=True),
        sa.Column("email_address", sa.Text(), nullable=False),
        sa.Column("tz", sa.Text(), nullable=True),
        sa.Column("wants_reminders", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("lang", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
    )
    op.create_table(
        "todo_items",
        sa.Column("id", BIG_SERIAL, primary_key=True),
        sa.Column("assignee_id", sa.BigInteger(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=False), nullable=True),
        sa.Column("status", sa.Text(), server_default="open", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_todo_items"),
        sa.ForeignKeyConstraint(
            ["assignee_id"], ["accounts.id"], name="fk_todo_items_assignee_id_accounts"
        ),
    )
    op.create_index("ix_todo_items_assignee_id", "todo_items", ["assignee_id"])


def downgrade() -> None:
    op.drop_index("ix_todo_items_assignee_id", table_name="todo_items")
    op.drop_table("todo_items")
    op.drop_table("accounts")
