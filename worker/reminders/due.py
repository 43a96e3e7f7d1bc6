"""The statements that plan reminders: one set per dialect.

A scan plans in two ways, each batch one transaction:

- **catch-up**: a task `awaiting_reminder` (open, dated, not yet planned for the due date it has
  now) whose owner can be reminded, and which has a reminder moment at or before the scan's
  horizon, is marked as planned for that due date, and its reminders are planned: of each
  recipient's moments already past, the latest one still worth sending (sent at once), and
  every moment up to the horizon; the waiting rows of the task that are no reminder of it any
  more (its due date moved, its rule changed) are cancelled. Batches take tasks ``FOR UPDATE
  SKIP LOCKED``, as before;
- **window**: every reminder of any open task whose moment lies in (the last scan's time,
  this scan's horizon] is planned, to be sent at its moment. Read by due date per offset in
  force, through the partial index on open dated tasks. The window starts at the last scan,
  not at its horizon, so that every moment still to come is planned again at each scan: a
  reminder whose row was cancelled before its moment (its recipient gone when a re-plan of
  its task ran) and that stands again before it is armed again, its cancelled row re-armed
  under its key. A key planned already is a no-op. The same transaction then plans the
  reminders of recipients with quiet hours that are pulled forward to go out before a window
  (`worker.reminders.pull_forward`).

Rows are keyed by `worker.reminders.keys`, so that two scans, or a catch-up and a window,
planning the same reminder make one row. `due_queries` picks the set for a dialect once, at
bootstrap: on PostgreSQL each batch is one statement; SQLite, which has no INSERT or UPDATE
inside WITH, runs the same joins and computes moments and keys in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

from sqlalchemy import (
    ColumnElement,
    Integer,
    ScalarSelect,
    Select,
    String,
    and_,
    any_,
    bindparam,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert, ReturningUpdate

from outbox.enqueue import NewMessage, NewRows, ValuesEnqueue, insert_selected
from outbox.table import WAITING, OutboxRow, Status
from outbox.types import UTCDateTime, instant
from worker.reminders import plan
from worker.reminders.due_time import shifted
from worker.reminders.host import REFERENCE_SCHEMA, HostSchema
from worker.reminders.keys import REMINDER_KIND
from worker.reminders.pull_forward import PullForward
from worker.reminders.rule_store import RuleSql, rule_sql
from worker.reminders.rules import builtin_rule
from worker.reminders.schema import (
    ScanHeartbeat,
    TaskColumns,
    UserColumns,
    awaiting_reminder,
    due_instant,
    owner_has_address,
    owner_wants_reminders,
)

SUPERSEDED = "superseded: the due date moved"

#: The scan's parameters, bound by name: its statements are built once, at bootstrap, and
#: each batch only binds values (building and caching the batch statement anew would cost
#: more than the rest of a no-op scan). ``now`` is the scan's time, ``until`` its horizon,
#: ``after`` where its window starts (the last scan's time).
_NOW = bindparam("now", type_=UTCDateTime())
_UNTIL = bindparam("until", type_=UTCDateTime())
_AFTER = bindparam("after", type_=UTCDateTime())
_LIMIT = bindparam("limit", type_=Integer())
_LIFETIME = int(plan.LATE_LIFETIME.total_seconds())
#: The built-in rule's lead time when no setting says otherwise.
DEFAULT_LOOKAHEAD = timedelta(hours=24)


def due_within(
    tasks: TaskColumns, users: UserColumns, after: Any, until: Any
) -> ColumnElement[bool]:
    """Tasks `awaiting_reminder` whose due moment lies in (after, until]: first a range on
    the due column (the partial index's), then, where that is wider, the exact moment."""
    due_time = tasks.due_time
    window = and_(awaiting_reminder(tasks), due_time.window(tasks.due, after, until))
    if due_time.exact:
        return window
    moment = due_instant(tasks, users)
    return and_(window, moment > instant(after), moment <= instant(until))


def _catch_up_range(rules: RuleSql) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """(after, until] for the due moments of the tasks a catch-up considers: those with a
    moment at or before the horizon (``until`` plus the longest lead time) and still worth
    a reminder (due later than ``now``, or less long ago than the nudges and late reminders
    last)."""
    every = plan.offsets(rules)
    longest = select(func.coalesce(func.max(every.c.offset_seconds), 0)).scalar_subquery()
    earliest = select(func.coalesce(func.min(every.c.offset_seconds), 0)).scalar_subquery()
    after = case((earliest > 0, _NOW), else_=shifted(_NOW, earliest - _LIFETIME))
    return after, shifted(_UNTIL, func.greatest(longest, 0))


def due_ids(
    tasks: TaskColumns,
    users: UserColumns,
    after: Any,
    until: Any,
    *,
    needs_address: bool = False,
) -> ScalarSelect[int]:
    """Up to ``limit`` tasks awaiting a catch-up, due in (after, until], earliest first,
    locked; those another scanner holds skipped.

    ``needs_address``: the channel sends to the owner's e-mail address, so a task whose owner
    has none waits (counted by `worker.reminders.unremindable`) until the owner has one.
    """
    wanted = [owner_wants_reminders(users)]
    if needs_address:
        wanted.append(owner_has_address(users))
    return (
        select(tasks.id)
        .join(users.table, users.id == tasks.owner_id)
        .where(due_within(tasks, users, after, until), *wanted)
        .order_by(tasks.due)
        .limit(_LIMIT)
        .with_for_update(of=tasks.table, skip_locked=True)
        .scalar_subquery()
    )


class Batch(NamedTuple):
    """What one batch did."""

    marked: int  # tasks marked as planned for their due date
    queued: int  # outbox rows now pending that were not before
    superseded: int  # waiting rows cancelled: no reminder of their task any more


class DueQueries(Protocol):
    """The scan's statements on one dialect, built once."""

    @property
    def parallel(self) -> bool:
        """Whether batches may run on several connections at once."""
        ...

    def queue_batch(self, session: Session, now: datetime, ahead: timedelta, limit: int) -> Batch:
        """Catch up on up to ``limit`` tasks awaiting it, planning their reminders up to
        ``now + ahead``, in the session's transaction."""
        ...

    def plan_window(self, session: Session, now: datetime, ahead: timedelta) -> int:
        """Plan every reminder whose moment lies between the last scan's time and
        ``now + ahead``, and record that horizon, in the session's transaction; return how
        many rows are now pending that were not before."""
        ...

    def record_scan(
        self,
        session: Session,
        at: datetime,
        queued: int,
        marked: int,
        duration_ms: float,
        *,
        clock_offset_ms: float | None = None,
    ) -> None:
        """Remember when the last scan ran, what it did and how far its host's clock was from
        the database's (one row, last writer wins)."""
        ...


@dataclass(frozen=True, eq=False)
class _Heartbeat:
    """The scan heartbeat's statements, through the dialect's own upsert."""

    beat: Insert
    horizon: Insert

    @classmethod
    def build(cls, insert: Callable[[type[ScanHeartbeat]], Any], latest: Any) -> _Heartbeat:
        """``latest(old, new)``: the later of two horizons, either of them NULL."""
        upsert = insert(ScanHeartbeat)
        columns = ("scanned_at", "queued", "marked", "duration_ms", "clock_offset_ms")
        values = {name: upsert.excluded[name] for name in columns}
        beat: Insert = upsert.on_conflict_do_update(index_elements=[ScanHeartbeat.id], set_=values)
        moved = insert(ScanHeartbeat)
        later = latest(ScanHeartbeat.planned_until, moved.excluded.planned_until)
        horizon: Insert = moved.on_conflict_do_update(
            index_elements=[ScanHeartbeat.id], set_={"planned_until": later}
        )
        return cls(beat, horizon)

    def record(self, session: Session, values: dict[str, Any]) -> None:
        session.connection().execute(self.beat, values)

    def last_scan(self, session: Session) -> datetime | None:
        """When the last recorded scan ran (None: never)."""
        found = select(ScanHeartbeat.scanned_at).where(ScanHeartbeat.id == 1)
        return session.execute(found).scalar_one_or_none()

    def move_to(self, session: Session, now: datetime, until: datetime) -> None:
        """Move the horizon on to ``until`` (never back)."""
        row = _beat(now, 0, 0, 0.0, None) | {"planned_until": until}
        session.connection().execute(self.horizon, row)


class _RecordsScans:
    """Writes the scan heartbeat."""

    heartbeat: _Heartbeat

    def record_scan(
        self,
        session: Session,
        at: datetime,
        queued: int,
        marked: int,
        duration_ms: float,
        *,
        clock_offset_ms: float | None = None,
    ) -> None:
        """Remember when the last scan ran, what it did and how far its host's clock was from
        the database's (one row, last writer wins)."""
        self.heartbeat.record(session, _beat(at, queued, marked, duration_ms, clock_offset_ms))

    def window_start(self, session: Session, now: datetime) -> datetime:
        """Where this scan's window starts: the time the last scan ran (``now`` before the
        first), or, when that is more than `plan.LATE_LIFETIME` ago (a long outage), that
        long ago.

        Not the last scan's horizon: a moment up to it may have been planned already, but
        its row may have been cancelled since while its reminder stood no more (its
        recipient gone when a catch-up re-planned the task), and nothing but the window
        would plan it again once it stands again before its moment.
        """
        before = self.heartbeat.last_scan(session)
        earliest = now - plan.LATE_LIFETIME
        return now if before is None else max(before, earliest)


@dataclass(frozen=True, eq=False)
class PostgresDueQueries(_RecordsScans):
    """PostgreSQL: a batch is one statement, no row goes through Python; ``SKIP LOCKED``
    keeps batches on several connections (and several scanners) apart.
    """

    batch: Select[int, int, int]
    window: Select[int]
    heartbeat: _Heartbeat
    pull: PullForward
    parallel: bool = field(default=True, init=False)

    @classmethod
    def build(
        cls,
        host: HostSchema = REFERENCE_SCHEMA,
        *,
        needs_address: bool = False,
        lookahead: timedelta = DEFAULT_LOOKAHEAD,
    ) -> PostgresDueQueries:
        """The statements for the host's tables, ``lookahead`` the built-in rule's lead."""
        rules = rule_sql(builtin_rule(lookahead))
        planner = _Planner(host, rules, needs_address, lookahead)
        heartbeat = _Heartbeat.build(postgresql.insert, func.greatest)
        pull = PullForward.build(
            host,
            rules,
            "postgresql",
            needs_address=needs_address,
            lookahead=int(lookahead.total_seconds()),
        )
        return cls(planner.catch_up_statement(), planner.window_statement(), heartbeat, pull)

    def queue_batch(self, session: Session, now: datetime, ahead: timedelta, limit: int) -> Batch:
        """Mark, plan and supersede for one batch in one statement, the keys built in SQL."""
        values = {"now": now, "until": now + ahead, "limit": limit}
        found = session.connection().execute(self.batch, values).one()
        return Batch(int(found[0]), int(found[1]), int(found[2]))

    def plan_window(self, session: Session, now: datetime, ahead: timedelta) -> int:
        """Plan the window's reminders in one statement, then move the horizon."""
        after, until = self.window_start(session, now), now + ahead
        if until <= after:
            return 0
        values = {"now": now, "after": after, "until": until}
        queued = int(session.connection().execute(self.window, values).scalar_one())
        queued += self.pull.plan(session, now, after, until)
        self.heartbeat.move_to(session, now, until)
        return queued


@dataclass(frozen=True, eq=False)
class _Planner:
    """The PostgreSQL statements of both ways of planning, over one host's tables."""

    host: HostSchema
    rules: RuleSql
    needs_address: bool
    lookahead: timedelta

    def catch_up_statement(self) -> Select[int, int, int]:
        """Mark the batch's tasks, plan their reminders, cancel their rows that are none.

        All parts of the statement see the rows as they were before it: the cancelled rows
        are those whose keys no reminder of the task has, the inserted or re-armed ones those
        whose keys one has. ``id = ANY(ARRAY(…))`` probes the primary key for the batch; as
        ``id IN (…)`` PostgreSQL plans a hash join over the whole table.
        """
        tasks, users = self.host.tasks, self.host.users
        after, until = _catch_up_range(self.rules)
        ids = due_ids(tasks, users, after, until, needs_address=self.needs_address)
        marked = (
            update(tasks.table)
            .where(tasks.id == any_(func.array(ids)))
            .values({tasks.reminder_sent_at: _NOW, tasks.reminder_due_at: tasks.due})
            .returning(
                tasks.id.label("id"),
                tasks.owner_id.label("owner_id"),
                tasks.due.label("due"),
                literal(None, Integer).label("hit"),
            )
            .cte("marked")
        )
        # A batch's users by a join: the planner knows how few tasks one UPDATE marks, so it
        # does not hash the whole users table as for the window, and a probe per row costs
        # a first scan over a backlog more than the join.
        ranked = self._ranked(marked, lower=None, users_per_row=False).cte("ranked")
        queued = self._insert(ranked).cte("queued")
        still = select(literal(1)).where(ranked.c.key == OutboxRow.idempotency_key)
        marked_ids = select(marked.c.id).scalar_subquery()
        others = [status for status in Status if status not in WAITING]
        cancel = (
            update(OutboxRow)
            .where(
                OutboxRow.subject_id == any_(func.array(marked_ids)),
                OutboxRow.kind == REMINDER_KIND,
                OutboxRow.status.not_in(others),
                OutboxRow.available_at <= _UNTIL,
                ~exists(still),
            )
            .values(status=Status.CANCELLED, last_error=SUPERSEDED, updated_at=_NOW)
            .returning(OutboxRow.id)
            .cte("superseded")
        )
        count = [
            select(func.count()).select_from(cte).scalar_subquery()
            for cte in (marked, queued, cancel)
        ]
        return select(*count)

    def window_statement(self) -> Select[int]:
        """Plan the reminders with a moment in (after, until] of every open task.

        Most of them were planned by the scans before: a key with a row other than a
        cancelled one is left out by a probe of the key's unique index, so that the
        ``ON CONFLICT`` path, which locks the row it finds, is taken only to re-arm.
        """
        hit = plan.window_hits(self.host.tasks, self.rules, _AFTER, _UNTIL, materialized=True)
        ranked = self._ranked(hit, lower=_AFTER).cte("ranked")
        # A scalar subquery with LIMIT, not EXISTS: the planner would turn EXISTS into an
        # anti-join reading the whole outbox, where a probe of the key's index per planned
        # reminder reads a few pages.
        status = (
            select(OutboxRow.status)
            .where(OutboxRow.idempotency_key == ranked.c.key)
            .limit(1)
            .scalar_subquery()
        )
        planned = func.coalesce(status, Status.CANCELLED) != Status.CANCELLED
        queued = self._insert(ranked, unless=planned).cte("queued")
        return select(select(func.count()).select_from(queued).scalar_subquery())

    def _ranked(self, tasks: Any, *, lower: Any, users_per_row: bool = True) -> Select[Any]:
        """The candidates of ``tasks`` with a moment up to the horizon (and after ``lower``),
        with their moment, due moment, expiry and key, and ``chosen``: whether to plan it."""
        due_time = self.host.tasks.due_time
        found = plan.candidates(
            self.host,
            self.rules,
            tasks,
            needs_address=self.needs_address,
            per_task=True,
            users_per_row=users_per_row,
        ).subquery("candidate")
        c = found.c
        moment = plan.moment_of(due_time, c)
        expires = plan.expiry_of(due_time, c)
        past = moment <= _NOW
        latest_first = func.row_number().over(
            partition_by=(c.task_id, c.user_id, past), order_by=moment.desc()
        )
        with_facts = select(
            c.task_id,
            c.user_id,
            # The owner as None: whoever owns the task when it is sent.
            case((c.user_id == c.owner_id, None), else_=c.user_id).label("recipient_id"),
            c.offset_seconds,
            moment.label("moment"),
            plan.due_instant_of(due_time, c).label("due_at"),
            expires.label("expires_at"),
            plan.key_of(due_time, c, legacy_offset=self._legacy_offset).label("key"),
            past.label("past"),
            latest_first.label("rank"),
        ).where(moment <= _UNTIL, *([] if lower is None else [moment > lower]))
        ranked = with_facts.subquery("ranked_candidate")
        r = ranked.c
        chosen = or_(~r.past, and_(r.rank == 1, r.expires_at > _NOW))
        return select(ranked, chosen.label("chosen"))

    def _insert(self, ranked: Any, *, unless: ColumnElement[bool] | None = None) -> Any:
        rows = NewRows(
            key=ranked.c.key,
            kind=literal(REMINDER_KIND, String),
            subject_id=ranked.c.task_id,
            subject_at=ranked.c.due_at,
            available_at=func.greatest(ranked.c.moment, _NOW),
            recipient_id=ranked.c.recipient_id,
            offset_seconds=ranked.c.offset_seconds,
            expires_at=ranked.c.expires_at,
        )
        chosen = ranked.c.chosen if unless is None else and_(ranked.c.chosen, ~unless)
        return insert_selected(rows, _NOW, dialect="postgresql", where=chosen)

    @property
    def _legacy_offset(self) -> int:
        return int(self.lookahead.total_seconds())


@dataclass(frozen=True, eq=False)
class SqliteDueQueries(_RecordsScans):
    """SQLite: the same joins, then moments and keys in Python; a batch is a few statements
    under its single writer lock, which keeps scanners apart; one writer, so batches run one
    at a time.
    """

    mark: ReturningUpdate[int]
    of_marked: Select[Any]
    window: Select[Any]
    outbox: ValuesEnqueue
    heartbeat: _Heartbeat
    legacy_offset: int
    pull: PullForward
    parallel: bool = field(default=False, init=False)

    @classmethod
    def build(
        cls,
        host: HostSchema = REFERENCE_SCHEMA,
        *,
        needs_address: bool = False,
        lookahead: timedelta = DEFAULT_LOOKAHEAD,
    ) -> SqliteDueQueries:
        """The statements for the host's tables (on SQLite, due columns hold instants)."""
        tasks, users = host.tasks, host.users
        if tasks.due_time.per_recipient:
            raise ValueError("on SQLite a due column holds instants")
        rules = rule_sql(builtin_rule(lookahead))
        after, until = _catch_up_range_sqlite(rules)
        ids = due_ids(tasks, users, after, until, needs_address=needs_address)
        mark = (
            update(tasks.table)
            .where(tasks.id.in_(ids))
            .values({tasks.reminder_sent_at: _NOW, tasks.reminder_due_at: tasks.due})
            .returning(tasks.id)
        )
        listed = select(
            tasks.id.label("id"),
            tasks.owner_id.label("owner_id"),
            tasks.due.label("due"),
            literal(None, Integer).label("hit"),
        ).where(tasks.id.in_(bindparam("ids", expanding=True)))
        of_marked = plan.candidates(
            host, rules, listed.subquery("marked"), needs_address=needs_address
        )
        # A second's slack on each side: SQLite's date functions keep milliseconds only;
        # the exact test is `plan.chosen`'s.
        hit = plan.window_hits(tasks, rules, shifted(_AFTER, -1), shifted(_UNTIL, 1))
        window = plan.candidates(host, rules, hit, needs_address=needs_address)
        return cls(
            mark,
            of_marked,
            window,
            ValuesEnqueue.for_dialect("sqlite"),
            _Heartbeat.build(sqlite.insert, _later_sqlite),
            int(lookahead.total_seconds()),
            PullForward.build(
                host,
                rules,
                "sqlite",
                needs_address=needs_address,
                lookahead=int(lookahead.total_seconds()),
            ),
        )

    def queue_batch(self, session: Session, now: datetime, ahead: timedelta, limit: int) -> Batch:
        """Mark the batch's tasks, then plan their reminders under keys built in Python."""
        until = now + ahead
        values = {"now": now, "until": until, "limit": limit}
        ids = list(session.connection().execute(self.mark, values).scalars())
        if not ids:
            return Batch(0, 0, 0)
        found = self._candidates(session, self.of_marked, {"ids": ids})
        planned = plan.chosen(found, now, None, until)
        queued = self.outbox.enqueue(session, self._messages(planned, now), now)
        keys = [c.key(legacy_offset=self.legacy_offset) for c in found if c.moment <= until]
        superseded = self.outbox.cancel_others(
            session, ids, keys, kind=REMINDER_KIND, reason=SUPERSEDED, now=now, until=until
        )
        return Batch(len(ids), queued, superseded)

    def plan_window(self, session: Session, now: datetime, ahead: timedelta) -> int:
        """Plan the window's reminders, then move the horizon."""
        after, until = self.window_start(session, now), now + ahead
        if until <= after:
            return 0
        values = {"after": after, "until": until}
        planned = plan.chosen(self._candidates(session, self.window, values), now, after, until)
        queued = self.outbox.enqueue(session, self._messages(planned, now), now)
        queued += self.pull.plan(session, now, after, until)
        self.heartbeat.move_to(session, now, until)
        return queued

    def _candidates(
        self, session: Session, query: Select[Any], values: dict[str, Any]
    ) -> list[plan.Candidate]:
        rows = session.connection().execute(query, values).mappings()
        return [
            plan.Candidate(
                task_id=row["task_id"],
                owner_id=row["owner_id"],
                user_id=row["user_id"],
                due=_read_instant(row["due"]),
                offset_seconds=row["offset_seconds"],
                every_seconds=row["every_seconds"],
            )
            for row in rows
        ]

    def _messages(self, planned: list[plan.Candidate], now: datetime) -> list[NewMessage]:
        return [
            NewMessage(
                c.key(legacy_offset=self.legacy_offset),
                REMINDER_KIND,
                c.task_id,
                c.due,
                available_at=max(c.moment, now),
                recipient_id=None if c.user_id == c.owner_id else c.user_id,
                offset_seconds=c.offset_seconds,
                expires_at=c.expires_at,
            )
            for c in planned
        ]


def _catch_up_range_sqlite(rules: RuleSql) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """`_catch_up_range` in SQLite's functions (``max`` of two values for ``greatest``)."""
    every = plan.offsets(rules)
    longest = select(func.coalesce(func.max(every.c.offset_seconds), 0)).scalar_subquery()
    earliest = select(func.coalesce(func.min(every.c.offset_seconds), 0)).scalar_subquery()
    after = case((earliest > 0, _NOW), else_=shifted(_NOW, earliest - _LIFETIME))
    return after, shifted(_UNTIL, func.max(longest, 0))


def _later_sqlite(old: Any, new: Any) -> ColumnElement[Any]:
    """The later of two horizons in SQLite (its two-argument ``max`` is NULL with a NULL)."""
    return func.max(func.coalesce(old, new), new)


def _read_instant(value: Any) -> datetime:
    """A due value as SQLite gives it back, as an aware UTC datetime."""
    converted = UTCDateTime().process_result_value(value, sqlite.dialect())
    assert converted is not None  # the candidates are dated tasks
    return converted


def due_queries(
    dialect: str,
    host: HostSchema = REFERENCE_SCHEMA,
    *,
    needs_address: bool = False,
    lookahead: timedelta = DEFAULT_LOOKAHEAD,
) -> DueQueries:
    """The query set for the host's tables on ``dialect`` (``postgresql`` or ``sqlite``);
    ``needs_address`` for a channel that sends to the owner's e-mail address; ``lookahead``
    the built-in rule's lead time (``REMINDERS_LOOKAHEAD``)."""
    if dialect == "postgresql":
        return PostgresDueQueries.build(host, needs_address=needs_address, lookahead=lookahead)
    if dialect == "sqlite":
        return SqliteDueQueries.build(host, needs_address=needs_address, lookahead=lookahead)
    raise ValueError(f"no due queries for the {dialect!r} dialect")


def _beat(
    at: datetime, queued: int, marked: int, duration_ms: float, clock_offset_ms: float | None
) -> dict[str, Any]:
    """The heartbeat row's values."""
    return {
        "id": 1,
        "scanned_at": at,
        "queued": queued,
        "marked": marked,
        "duration_ms": duration_ms,
        "clock_offset_ms": clock_offset_ms,
    }


def forget_reminder(session: Session, tasks: TaskColumns, task_id: int, marker: Any) -> None:
    """Let the scan consider the task again: a reminder of it was cancelled. ``marker`` is
    the task's ``reminder_due_at`` as read in this transaction (it is cleared only if it
    still holds that: a scan may have marked the task anew since).

    Without this, a task completed and then reopened (or an owner who opted out and back
    in, or a due date moved away and back) would look reminded for a date it never was.
    A scan that considers a task again can never send a reminder twice: its key is taken.
    """
    if marker is None:
        return
    stmt = (
        update(tasks.table)
        .where(tasks.id == task_id, tasks.due_time.same(tasks.reminder_due_at, marker))
        .values({tasks.reminder_due_at: None})
    )
    session.connection().execute(stmt)
