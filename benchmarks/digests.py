"""Section 9: digests. ``users`` digest users with ``per_user`` reminders each, all queued at
once, merged into one digest per user and sent, against the same reminders sent one by one.

The dataset: ``users`` users (UTC) owning ``per_user`` tasks each, every task due within the
day, so that one real scan queues every reminder (the built-in rule's 24 h lead has passed)
for sending now. Every user has the same digest time (``reminder_preferences``, written by
SQL), an hour after the dataset's instant: the digests' slot.

The digest case, on the relay's own clock (a clock the benchmark moves):

- plan: the scan that queues the reminders (the same scan as the baseline's);
- merge: the relay's pass at the dataset's instant, whose re-check merges every reminder
  into its user's digest (one digest row per user, its members linked, the reminder's own
  row cancelled): this is the digests' planning;
- send: the relay's pass at the slot, which re-checks each digest's members and sends the
  ``users`` digests.

The baseline is the same dataset without the preferences: the scan, then the relay sending
every reminder on its own, through the same channel (the webhook receiver of
`benchmarks.receivers`). Ratios are our time over the baseline's.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text

from benchmarks.common import channel_settings, progress
from benchmarks.database import Dataset, drop_database, migrated, reset, vacuum
from benchmarks.receivers import Receivers
from benchmarks.report import Row, Table
from outbox.relay import RelayReport
from worker.bootstrap import Services, bootstrap
from worker.db import long_statements, make_engine

CHANNEL = "webhook"
#: The digests' slot is this long after the dataset's instant: every merge happens before it.
SLOT_AFTER = timedelta(hours=1)
FILL_SECONDS = 3600

USERS_SQL = """
INSERT INTO users (id, email, timezone, notifications_enabled)
SELECT u, 'user' || u || '@example.com', 'UTC', TRUE FROM generate_series(1, :users) AS u
"""
# Task i belongs to user 1 + i % users; each is due within the next day, after the slot.
TASKS_SQL = """
INSERT INTO tasks (id, owner_id, title, due_date)
SELECT i, 1 + i % :users, 'task ' || i || ': prepare the quarterly report',
       :now + interval '2 hours' + (i * 7919 % 72000) * interval '1 second'
FROM generate_series(1::bigint, :count) AS i
"""
DIGESTS_SQL = """
INSERT INTO reminder_preferences (user_id, digest_at, digest_workdays, updated_at)
SELECT id, CAST(:at AS time), FALSE, now() FROM users
"""
NO_DIGESTS_SQL = "DELETE FROM reminder_preferences"
CLEAR_SQL = ["DELETE FROM reminder_digest_members", "DELETE FROM outbox"]


class MovedClock:
    """The relay's clock, set by the benchmark: the dataset's instant, then the slot."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def build(users: int, per_user: int, now: datetime) -> Dataset:
    """The database of ``users`` users with ``per_user`` open tasks each, due within the day."""
    name, url = migrated(f"digests_{users}x{per_user}")
    engine = make_engine(url)
    count = users * per_user
    try:
        with engine.begin() as connection, long_statements(connection, FILL_SECONDS):
            connection.execute(text(USERS_SQL), {"users": users})
            connection.execute(text(TASKS_SQL), {"users": users, "count": count, "now": now})
    finally:
        engine.dispose()
    vacuum(url, "users", "tasks", "outbox")
    return Dataset(name, url, count, now, "ours")


def prepared(dataset: Dataset, *, digests: bool) -> None:
    """Back to the built state: no outbox row, no digest member; the preferences as asked."""
    engine = dataset.engine()
    slot = dataset.now + SLOT_AFTER
    try:
        with engine.begin() as connection, long_statements(connection, FILL_SECONDS):
            for statement in [*CLEAR_SQL, NO_DIGESTS_SQL]:
                connection.execute(text(statement))
            if digests:
                connection.execute(text(DIGESTS_SQL), {"at": slot.strftime("%H:%M")})
    finally:
        engine.dispose()
    reset(dataset)
    vacuum(dataset.url, "reminder_preferences", "reminder_digest_members", "outbox")


def timed_relay(services: Services) -> tuple[float, Counter[str]]:
    """One relay until idle: (seconds, outcome counts)."""
    relay = services.relay()  # built before the clock starts
    started = time.perf_counter()
    report: RelayReport = relay.relay_until_idle()
    return time.perf_counter() - started, report.counts


def outbox_counts(dataset: Dataset) -> dict[tuple[str, str], int]:
    """Outbox rows by (kind, status)."""
    engine = dataset.engine()
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT kind, status, count(*) FROM outbox GROUP BY kind, status")
            ).all()
    finally:
        engine.dispose()
    return {(kind, status): n for kind, status, n in rows}


def measure(
    dataset: Dataset, users: int, receivers: Receivers, *, digests: bool
) -> dict[str, float]:
    """One case from the built state: scan, then relay (twice for digests: merge, send)."""
    prepared(dataset, digests=digests)
    clock = MovedClock(dataset.now)
    options: dict[str, Any] = {"database_url": dataset.url, "channel": CHANNEL,
                               "endpoints": receivers.endpoints}  # fmt: skip
    services = bootstrap(channel_settings(**options), clock=clock)
    count = dataset.size
    seconds: dict[str, float] = {}
    try:
        started = time.perf_counter()
        queued = services.scan(dataset.now).queued
        seconds["plan"] = time.perf_counter() - started
        if queued != count:
            raise RuntimeError(f"queued {queued} of {count}")
        vacuum(dataset.url, "tasks", "outbox")
        receivers.reset()
        if not digests:
            seconds["send"], counts = timed_relay(services)
            if counts.get("delivered", 0) != count:
                raise RuntimeError(f"one by one: {dict(counts)}, expected {count} delivered")
            if receivers.wait(CHANNEL, count) < count:
                raise RuntimeError(f"the receiver did not get {count} reminders")
            return seconds
        seconds["merge"], counts = timed_relay(services)
        found = outbox_counts(dataset)
        if counts.get("cancelled", 0) != count or found.get(("digest", "pending")) != users:
            raise RuntimeError(f"merge: {dict(counts)}, outbox {found}")
        vacuum(dataset.url, "outbox", "reminder_digest_members")
        clock.at = dataset.now + SLOT_AFTER + timedelta(minutes=1)
        seconds["send"], counts = timed_relay(services)
        if counts.get("delivered", 0) != users:
            raise RuntimeError(f"digests: {dict(counts)}, expected {users} delivered")
        if receivers.wait(CHANNEL, users) < users:
            raise RuntimeError(f"the receiver did not get {users} digests")
    finally:
        services.engine.dispose()
    return seconds


def run(users: int, per_user: int, now: datetime) -> Table:
    """Measure the digest case and the baseline once each; return the section's table."""
    count = users * per_user
    progress(f"digests: building {users:,} users x {per_user} reminders")
    dataset = build(users, per_user, now)
    try:
        with Receivers() as receivers:
            progress("digests: one by one")
            alone = measure(dataset, users, receivers, digests=False)
            progress("digests: merged")
            ours = measure(dataset, users, receivers, digests=True)
    finally:
        drop_database(dataset.name)
    table = Table(
        f"9. Digests: {users:,} users x {per_user} reminders ({count:,}) vs one by one "
        f"({CHANNEL}; times in s)"
    )
    table.add(Row(f"plan: the scan queuing {count:,} reminders", alone["plan"], ours["plan"],
                  "s", "of"))  # fmt: skip
    table.add(Row(f"merge {count:,} reminders into {users:,} digests (relay pass)", None,
                  ours["merge"], "s"))  # fmt: skip
    table.add(Row(f"send {users:,} digests vs {count:,} reminders one by one", alone["send"],
                  ours["send"], "s", "faster"))  # fmt: skip
    table.add(Row("merge + send vs sending one by one", alone["send"],
                  ours["merge"] + ours["send"], "s", "faster"))  # fmt: skip
    table.notes.append(
        f"merge rate {count / ours['merge']:,.0f} reminders/s; digests sent "
        f"{users / ours['send']:,.0f}/s; one by one {count / alone['send']:,.0f} reminders/s"
    )
    table.notes.append(
        "one run each from the same built state (outbox emptied, VACUUM); the relay on one "
        "thread, its clock at the dataset's instant, then at the slot for the digests; "
        "ratio: baseline time / ours (faster) or ours / baseline (plan)"
    )
    return table
