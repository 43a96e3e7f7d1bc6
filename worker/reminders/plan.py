"""Which reminders a task has: its recipients, each one's rule, the rule's offsets, as SQL.

A reminder is one (task, due date, offset, recipient). The recipients of a task are its owner
and, with a ``[recipients]`` mapping, every user listed for it, each once. Each recipient's
rule (`worker.reminders.rule_store.rule_sql`) gives the offsets: a lead time before the due
moment (positive seconds) or an overdue nudge after it (negative: ``-k * every`` for k = 1 to
the rule's count).

`candidates` is the join, written once for both dialects and both ways the scan plans
(`worker.reminders.due`): the tasks it is given, times their recipients who want reminders,
times the offsets of each one's rule. What a candidate's moment, expiry and key are is
decided here too (`moment_of`, `expiry_of`, `key_of`, and `Candidate` for SQLite, where they
are computed in Python).

A reminder is useful until it expires: a lead-time reminder when its task falls due, one at
the due moment or after it `LATE_LIFETIME` after its moment, or one nudge interval after it
if that comes sooner (when the next nudge would come; the last nudge too, though none follows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    Subquery,
    and_,
    case,
    func,
    literal_column,
    select,
    true,
    union,
    union_all,
)

from worker.reminders.due_time import DueTime, shifted
from worker.reminders.host import HostSchema
from worker.reminders.keys import (
    REMINDER_KIND,
    reminder_key,
    reminder_key_sql,
    reminder_variant,
    reminder_variant_sql,
)
from worker.reminders.rule_store import RuleSql
from worker.reminders.rules import MAX_OVERDUE_COUNT
from worker.reminders.schema import (
    TaskColumns,
    owner_has_address,
    owner_wants_reminders,
    planned_reminder,
)

#: How long a reminder at or after the due moment stays worth sending.
LATE_LIFETIME = timedelta(hours=24)


def _numbers(top: int) -> Any:
    """1 to ``top``, as a recursive CTE: the nudges of a rule are numbered by it."""
    first = select(literal_column("1").label("n")).cte(
        "reminder_nudge_number", recursive=True, nesting=True
    )
    return first.union_all(select(first.c.n + 1).where(first.c.n < top))


_nudge_numbers = _numbers(MAX_OVERDUE_COUNT)


def offsets(rules: RuleSql) -> Subquery:
    """Every rule's offsets: (``rule_id``, ``offset_seconds``), lead times and nudges."""
    leads = select(rules.leads.c.rule_id, rules.leads.c.lead_seconds.label("offset_seconds"))
    settings = rules.settings
    nudges = (
        select(
            settings.c.rule_id,
            (-_nudge_numbers.c.n * settings.c.overdue_every_seconds).label("offset_seconds"),
        )
        .select_from(settings)
        .join(_nudge_numbers, _nudge_numbers.c.n <= settings.c.overdue_count)
        .where(settings.c.overdue_every_seconds.is_not(None))
    )
    return union_all(leads, nudges).subquery("reminder_offset")


def distinct_offsets(rules: RuleSql) -> Subquery:
    """The offsets in force anywhere, each once: the scan reads tasks by due date per offset."""
    every = offsets(rules)
    return select(every.c.offset_seconds).distinct().subquery("reminder_any_offset")


def recipients(host: HostSchema, tasks: FromClause, *, per_task: bool = False) -> Subquery:
    """(``task_id``, ``owner_id``, ``due``, ``hit``, ``user_id``) for each task of ``tasks``
    (columns ``id``, ``owner_id``, ``due``, ``hit``) and each of its recipients, each once.

    ``per_task`` (PostgreSQL): each task's listed recipients are read by a subquery of their
    own, ``unnest(ARRAY(…))``, which probes the recipients table's index on the task column
    for that task. As a join, the planner, which cannot tell how few tasks a window's
    ranges hold, estimates millions and reads the whole recipients table for every tick.
    """
    t = tasks.c
    owner = select(t.id.label("task_id"), t.owner_id, t.due, t.hit, t.owner_id.label("user_id"))
    if host.recipients is None:
        return owner.subquery("reminder_recipient_of")
    listed = host.recipients.c
    others: Select[Any]
    if per_task:
        users_of_task = select(listed.user).where(listed.task == t.id).scalar_subquery()
        others = select(
            t.id, t.owner_id, t.due, t.hit, func.unnest(func.array(users_of_task)).label("user_id")
        )
    else:
        others = select(t.id, t.owner_id, t.due, t.hit, listed.user).join(
            host.recipients, listed.task == t.id
        )
    return union(owner, others).subquery("reminder_recipient_of")


def window_hits(
    tasks: TaskColumns, rules: RuleSql, after: Any, until: Any, *, materialized: bool = False
) -> Any:
    """The open dated tasks with a reminder moment in (after, until] for some offset in
    force, one row per (task, offset) as ``id``, ``owner_id``, ``due``, ``hit``: read by a
    range on the due column per offset, through the partial index on open dated tasks.

    ``materialized`` (PostgreSQL; the window's and the pull-forward's reads): a
    ``MATERIALIZED`` CTE, read on its own before the recipients and rules are joined to it.
    As a subquery the planner may join the tasks to the rules first, and with tables it has
    no statistics for (no rule set yet, never analysed) it estimated a thousand rules and
    read every open task at each tick."""
    found = distinct_offsets(rules)
    in_window = tasks.due_time.offset_window(tasks.due, after, until, found.c.offset_seconds)
    query = (
        select(
            tasks.id.label("id"),
            tasks.owner_id.label("owner_id"),
            tasks.due.label("due"),
            found.c.offset_seconds.label("hit"),
        )
        .select_from(found)
        .join(tasks.table, and_(planned_reminder(tasks), in_window))
    )
    if materialized:
        return query.cte("reminder_hit").prefix_with("MATERIALIZED")
    return query.subquery("reminder_hit")


def candidates(
    host: HostSchema,
    rules: RuleSql,
    tasks: FromClause,
    *,
    needs_address: bool,
    per_task: bool = False,
    users_per_row: bool | None = None,
) -> Select[Any]:
    """The reminders of ``tasks`` (columns ``id``, ``owner_id``, ``due``, ``hit``): one row
    per (task, recipient who wants reminders, offset of the recipient's rule) with
    ``task_id``, ``owner_id``, ``user_id``, ``due``, ``timezone``, ``offset_seconds``,
    ``every_seconds``, ``all_day_at``. Where ``hit`` is not NULL, only that offset.
    ``needs_address``: a recipient without an e-mail address is left out; ``per_task``: see
    `recipients`; ``users_per_row`` (``per_task`` unless given): each recipient's user row
    read by a probe of its own, not by a join."""
    users = host.users
    of = recipients(host, tasks, per_task=per_task)
    own = rules.own
    rule_id = rules.rule_id
    every = offsets(rules)
    settings = rules.settings
    wanted = [owner_wants_reminders(users)]
    if needs_address:
        wanted.append(owner_has_address(users))
    timezone: Any = users.timezone
    reminded: Any = of.join(users.table, users.id == of.c.user_id)
    kept = wanted
    if per_task if users_per_row is None else users_per_row:
        # One probe of the users' primary key per recipient, as for the listed recipients:
        # as a join the planner, estimating millions of candidates, hashes the whole users
        # table at every tick. LIMIT keeps the subquery from being pulled up into a join.
        user = (
            select(users.timezone.label("timezone"))
            .where(users.id == of.c.user_id, *wanted)
            .limit(1)
            .lateral("reminder_user")
        )
        timezone, reminded, kept = user.c.timezone, of.join(user, true()), []
    return (
        select(
            of.c.task_id,
            of.c.owner_id,
            of.c.user_id,
            of.c.due,
            timezone.label("timezone"),
            every.c.offset_seconds,
            settings.c.overdue_every_seconds.label("every_seconds"),
            settings.c.all_day_at,
        )
        .select_from(reminded)
        .outerjoin(own, own.c.user_id == of.c.user_id)
        .join(settings, settings.c.rule_id == rule_id)
        .join(
            every,
            and_(
                every.c.rule_id == rule_id,
                func.coalesce(of.c.hit, every.c.offset_seconds) == every.c.offset_seconds,
            ),
        )
        .where(*kept)
    )


def moment_of(due_time: DueTime, row: Any) -> ColumnElement[datetime]:
    """When the candidate ``row`` (of `candidates`, as a subquery) is meant to be sent."""
    return due_time.moment(row.due, row.timezone, row.all_day_at, row.offset_seconds)


def due_instant_of(due_time: DueTime, row: Any) -> ColumnElement[datetime]:
    """The due moment of the candidate's task for its recipient."""
    return due_time.instant(row.due, row.timezone, row.all_day_at)


def expiry_of(due_time: DueTime, row: Any) -> ColumnElement[datetime]:
    """When the candidate stops being worth sending (PostgreSQL)."""
    lifetime = int(LATE_LIFETIME.total_seconds())
    late = func.least(lifetime, func.coalesce(row.every_seconds, lifetime))
    return case(
        (row.offset_seconds > 0, due_instant_of(due_time, row)),
        else_=shifted(moment_of(due_time, row), late),
    )


def key_of(due_time: DueTime, row: Any, *, legacy_offset: int) -> ColumnElement[str]:
    """The candidate's idempotency key (PostgreSQL)."""
    variant = reminder_variant_sql(
        row.offset_seconds, row.user_id, row.owner_id, legacy_offset=legacy_offset
    )
    return reminder_key_sql(row.task_id, due_time.key_instant(row.due)) + variant


@dataclass(frozen=True)
class Candidate:
    """A candidate reminder as values (SQLite): what `candidates` gives for one row."""

    task_id: int
    owner_id: int
    user_id: int
    due: datetime  # an instant: on SQLite a due column holds instants
    offset_seconds: int
    every_seconds: int | None

    @property
    def moment(self) -> datetime:
        """When it is meant to be sent."""
        return self.due - timedelta(seconds=self.offset_seconds)

    @property
    def expires_at(self) -> datetime:
        """When it stops being worth sending."""
        if self.offset_seconds > 0:
            return self.due
        every = (
            LATE_LIFETIME if self.every_seconds is None else timedelta(seconds=self.every_seconds)
        )
        return self.moment + min(LATE_LIFETIME, every)

    def key(self, *, legacy_offset: int) -> str:
        """Its idempotency key."""
        variant = reminder_variant(
            self.offset_seconds, self.user_id, self.owner_id, legacy_offset=legacy_offset
        )
        return reminder_key(self.task_id, self.due) + variant


def chosen(
    found: list[Candidate], now: datetime, after: datetime | None, until: datetime
) -> list[Candidate]:
    """What the scan plans of ``found`` (SQLite; PostgreSQL says the same in SQL): those with
    a moment in (after, until] still to come, and of each (task, recipient)'s moments already
    past, the latest, if it is still worth sending."""
    latest_past: dict[tuple[int, int], Candidate] = {}
    planned: list[Candidate] = []
    for candidate in found:
        moment = candidate.moment
        if moment > until or (after is not None and moment <= after):
            continue
        if moment > now:
            planned.append(candidate)
            continue
        pair = (candidate.task_id, candidate.user_id)
        best = latest_past.get(pair)
        if best is None or moment > best.moment:
            latest_past[pair] = candidate
    planned += [c for c in latest_past.values() if c.expires_at > now]
    return planned


__all__ = [
    "LATE_LIFETIME",
    "REMINDER_KIND",
    "Candidate",
    "candidates",
    "chosen",
    "distinct_offsets",
    "due_instant_of",
    "expiry_of",
    "key_of",
    "moment_of",
    "offsets",
    "recipients",
    "window_hits",
]
