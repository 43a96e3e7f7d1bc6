"""The least-privilege database role of the worker processes (PostgreSQL).

The worker reads the host application's ``users`` and ``tasks``, updates only the two
columns of ``tasks`` it owns, and reads and writes its own tables. It owns nothing, so it
can neither change the schema nor touch any other table.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from worker.errors import UsageError

WORKER_TABLES = ("outbox", "reminder_scan_heartbeat")


def grant_statements(role: str) -> list[str]:
    """The GRANTs that give ``role`` exactly what the worker needs, in order."""
    who = _quoted(role)
    return [
        f"GRANT USAGE ON SCHEMA public TO {who}",
        f"GRANT SELECT ON users, tasks, alembic_version TO {who}",
        # Column privileges: the due query's FOR UPDATE needs UPDATE on one column, no more.
        f"GRANT UPDATE (reminder_sent_at, reminder_due_at) ON tasks TO {who}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(WORKER_TABLES)} TO {who}",
        f"GRANT USAGE, SELECT ON SEQUENCE outbox_id_seq TO {who}",
    ]


def grant_role(connection: Connection, role: str) -> list[str]:
    """Grant the worker's rights to an existing ``role``; return the statements run."""
    if connection.dialect.name != "postgresql":
        raise UsageError("grant-role needs PostgreSQL: SQLite has no roles")
    exists = connection.execute(
        text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}
    ).first()
    if exists is None:
        raise UsageError(
            f"role {role!r} does not exist: create it first "
            f"(CREATE ROLE {_quoted(role)} LOGIN PASSWORD '…')"
        )
    statements = grant_statements(role)
    for statement in statements:
        connection.execute(text(statement))
    return statements


def _quoted(role: str) -> str:
    """``role`` as a quoted SQL identifier (a name is data, never SQL)."""
    if not role or "\x00" in role or len(role) > 63:
        raise UsageError("a role name is 1 to 63 characters")
    return '"' + role.replace('"', '""') + '"'
