"""The least-privilege database role of the worker processes (PostgreSQL).

The worker reads the host application's mapped tables (tasks, users, recipients), updates
only the two columns of the tasks table it owns, and reads and writes its own tables (the
outbox, the scan heartbeat, the reminder rules, the preferences, the digests' members:
``reminders rules`` may run as this role). It owns nothing, so it can neither change the
schema nor touch any other table.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from worker.errors import UsageError
from worker.migrate import VERSION_TABLE
from worker.reminders.mapping import REFERENCE, SchemaMapping

WORKER_TABLES = (
    "outbox",
    "reminder_scan_heartbeat",
    "reminder_rules",
    "reminder_rule_leads",
    "reminder_preferences",
    "reminder_digest_members",
)
WORKER_SEQUENCES = ("outbox_id_seq", "reminder_rules_id_seq")


def grant_statements(role: str, mapping: SchemaMapping = REFERENCE) -> list[str]:
    """The GRANTs that give ``role`` exactly what the worker needs on ``mapping``, in order."""
    who = _quoted(role)
    mapped = [
        (mapping.tasks.schema, mapping.tasks.table),
        (mapping.users.schema, mapping.users.table),
    ]
    if mapping.recipients is not None:
        mapped.append((mapping.recipients.schema, mapping.recipients.table))
    names = [_qualified(schema, table) for schema, table in mapped]
    schemas = ["public", *sorted({s for s, _ in mapped if s and s != "public"})]
    tasks = _qualified(mapping.tasks.schema, mapping.tasks.table)
    return [
        *(f"GRANT USAGE ON SCHEMA {_quoted(schema)} TO {who}" for schema in schemas),
        f"GRANT SELECT ON {', '.join(names)}, {VERSION_TABLE} TO {who}",
        # Column privileges: the due query's FOR UPDATE needs UPDATE on one column, no more.
        f"GRANT UPDATE (reminder_sent_at, reminder_due_at) ON {tasks} TO {who}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(WORKER_TABLES)} TO {who}",
        f"GRANT USAGE, SELECT ON SEQUENCE {', '.join(WORKER_SEQUENCES)} TO {who}",
    ]


def grant_role(connection: Connection, role: str, mapping: SchemaMapping = REFERENCE) -> list[str]:
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
    statements = grant_statements(role, mapping)
    for statement in statements:
        connection.execute(text(statement))
    return statements


def _qualified(schema: str | None, table: str) -> str:
    return f"{_quoted(schema)}.{_quoted(table)}" if schema else _quoted(table)


def _quoted(name: str) -> str:
    """``name`` as a quoted SQL identifier (a name is data, never SQL)."""
    if not name or "\x00" in name or len(name) > 63:
        raise UsageError("a role or table name is 1 to 63 characters")
    return '"' + name.replace('"', '""') + '"'
