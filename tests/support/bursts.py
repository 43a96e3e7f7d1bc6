"""A night of held reminders, for the burst rule's tests on SQLite and PostgreSQL.

User 1 lives in Europe/Berlin (UTC+1 in November) with quiet hours 22:00-07:00. The
reminders' moments fall in the night of 28 to 29 November, from 22:10 local, ten minutes
apart; each task is due a day after its moment (the built-in rule's lead time).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from outbox.table import OutboxRow, Status
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user
from worker.bootstrap import Services
from worker.reminders import preference_store
from worker.reminders.digest_slots import DIGEST_KIND, digest_key
from worker.reminders.preferences import PreferenceEdit

START = datetime(2026, 11, 28, 21, 0, tzinfo=UTC)  # 22:00 in Berlin
END = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)  # 07:00 in Berlin
KEY = digest_key(1, END)
STEP = timedelta(minutes=10)


def moments(count: int) -> list[datetime]:
    """The moments of ``count`` reminders in the night."""
    return [START + (n + 1) * STEP for n in range(count)]


def held_overnight(
    services: Services, clock: ManualClock, count: int, *, relay_at_night: bool = True
) -> None:
    """User 1 with quiet hours and ``count`` tasks whose reminders fall in the night, each
    planned by a scan at its moment and, ``relay_at_night``, deferred to 07:00 by a relay
    then (otherwise they are still waiting at their moments when the night ends)."""
    add_user(services, 1, email="ada@example.com", timezone="Europe/Berlin")
    with services.session_factory.begin() as session:
        preference_store.edit_preferences(
            session, services.host, 1, PreferenceEdit(quiet="22:00-07:00"), now=START
        )
    for n, moment in enumerate(moments(count)):
        add_task(services, 100 + n, 1, moment + timedelta(hours=24), title=f"task {100 + n}")
    for moment in moments(count):
        clock.set(moment)
        services.scan()
        if relay_at_night:
            assert services.relay().relay_until_idle().counts == {"deferred": 1}
    waiting = statuses(services)
    assert len(waiting) == count and set(waiting.values()) == {Status.PENDING}


def statuses(services: Services) -> dict[str, str]:
    """The status of every reminder row (not digests), by key."""
    with services.session_factory() as session:
        found = session.execute(
            select(OutboxRow.idempotency_key, OutboxRow.status).where(OutboxRow.kind != DIGEST_KIND)
        )
        return {key: status for key, status in found}


def reasons(services: Services) -> dict[str, str | None]:
    """The last error (a cancel's reason) of every reminder row, by key."""
    with services.session_factory() as session:
        found = session.execute(
            select(OutboxRow.idempotency_key, OutboxRow.last_error).where(
                OutboxRow.kind != DIGEST_KIND
            )
        )
        return {key: error for key, error in found}
