"""Outbox rows that expire: ``expires_at``, the ``expired`` status, the count of unfinished
claims, and the index the claim expires rows by.

SQLite cannot change a CHECK constraint in place: there the table is recreated (Alembic's
batch mode) from its definition as revision 0001 made it, given here, so that ``--sql``
needs no reflection.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outbox.types import BigIntId, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ACTIVE = "status IN ('pending', 'failed', 'claimed')"
FINISHED = "status IN ('delivered', 'cancelled')"
EXPIRING = f"{ACTIVE} AND expires_at IS NOT NULL"
STATUSES_BEFORE = "status IN ('pending', 'claimed', 'failed', 'delivered', 'dead', 'cancelled')"
STATUSES = "status IN ('pending', 'claimed', 'failed', 'delivered', 'dead', 'cancelled', 'expired')"
CHECK = "ck_outbox_status"


def upgrade() -> None:
    expires_at = sa.Column("expires_at", UTCDateTime, nullable=True)
    unfinished = sa.Column(
        "unfinished_claims", sa.Integer, nullable=False, server_default=sa.text("0")
    )
    if op.get_context().dialect.name == "sqlite":
        with op.batch_alter_table("outbox", recreate="always", copy_from=_outbox()) as batch:
            batch.add_column(expires_at)
            batch.add_column(unfinished)
            batch.drop_constraint(CHECK, type_="check")
            batch.create_check_constraint(CHECK, sa.text(STATUSES))
        _create_expiring_index()
        return
    op.add_column("outbox", expires_at)
    op.add_column("outbox", unfinished)
    op.drop_constraint(CHECK, "outbox", type_="check")
    op.create_check_constraint(CHECK, "outbox", sa.text(STATUSES))
    _create_expiring_index()


def downgrade() -> None:
    # The older releases know no expired row: it was never sent, its story is over.
    op.execute("UPDATE outbox SET status = 'cancelled' WHERE status = 'expired'")
    op.drop_index("ix_outbox_expiring", table_name="outbox")
    if op.get_context().dialect.name == "sqlite":
        after = _outbox(
            sa.Column("expires_at", UTCDateTime), sa.Column("unfinished_claims", sa.Integer)
        )
        with op.batch_alter_table("outbox", recreate="always", copy_from=after) as batch:
            batch.drop_column("unfinished_claims")
            batch.drop_column("expires_at")
            batch.drop_constraint(CHECK, type_="check")
            batch.create_check_constraint(CHECK, sa.text(STATUSES_BEFORE))
        return
    op.drop_constraint(CHECK, "outbox", type_="check")
    op.create_check_constraint(CHECK, "outbox", sa.text(STATUSES_BEFORE))
    op.drop_column("outbox", "unfinished_claims")
    op.drop_column("outbox", "expires_at")


def _create_expiring_index() -> None:
    op.create_index(
        "ix_outbox_expiring",
        "outbox",
        ["expires_at"],
        postgresql_where=sa.text(EXPIRING),
        sqlite_where=sa.text(EXPIRING),
    )


def _outbox(*more: sa.Column[object]) -> sa.Table:
    """The outbox as revision 0001 created it (nothing changed it since), with ``more``."""
    check = STATUSES if more else STATUSES_BEFORE
    table = sa.Table(
        "outbox",
        sa.MetaData(),
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
        *more,
        sa.UniqueConstraint("idempotency_key", name="uq_outbox_idempotency_key"),
        sa.CheckConstraint(check, name=CHECK),
    )
    sa.Index("ix_outbox_subject_id", table.c.subject_id)
    sa.Index(
        "ix_outbox_finished",
        table.c.updated_at,
        postgresql_where=sa.text(FINISHED),
        sqlite_where=sa.text(FINISHED),
    )
    sa.Index(
        "ix_outbox_due",
        table.c.available_at,
        table.c.id,
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )
    return table
