"""Two services on one PostgreSQL database, one host 150 s ahead and one 150 s behind.

Each is wired by `bootstrap` as production is, with its host's wall clock shifted: what is
under test is the correction to the database server's clock. They scan and relay in threads
at once; every decision must follow the server's clock, which is the real time here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from outbox.channels.base import Delivery, Message
from outbox.enqueue import NewMessage, ValuesEnqueue
from outbox.relay import RelayReport
from outbox.table import OutboxRow, Status
from tests.support.clock import ShiftedClock
from tests.support.db import add_task, add_user
from worker.bootstrap import Services, bootstrap
from worker.db import make_engine
from worker.reminders.keys import REMINDER_KIND, reminder_key
from worker.reminders.schema import ScanHeartbeat
from worker.settings import Settings

pytestmark = pytest.mark.postgres

SKEW = timedelta(seconds=150)
LOOKAHEAD = timedelta(seconds=5)
#: How long after its moment a reminder may arrive: a few rounds of the loops below.
LATE = timedelta(seconds=1.5)
#: The server clock as measured may be off by half a round trip on the loopback (well under this).
SLACK = timedelta(milliseconds=20)
WAIT = 30.0


@dataclass
class ArrivalChannel:
    """A fake receiver noting when (on the real clock) each reminder arrived; ``hold`` keeps a
    send waiting until it is set, after setting ``sending``."""

    name: str = "arrivals"
    arrived: list[tuple[str, datetime]] = field(default_factory=list)
    hold: threading.Event | None = None
    sending: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: Message) -> Delivery:
        """Note the arrival (after the hold, if any) and accept."""
        self.sending.set()
        if self.hold is not None:
            assert self.hold.wait(WAIT), "never released"
        with self.lock:
            self.arrived.append((message.key, datetime.now(UTC)))
        return Delivery.delivered()

    def close(self) -> None:
        """Nothing to close."""

    def itself(self) -> ArrivalChannel:
        """This channel, as the channel factory of a relay run."""
        return self

    def keys(self) -> list[str]:
        """The keys that arrived, in order."""
        with self.lock:
            return [key for key, _ in self.arrived]


@dataclass
class Host:
    """One skewed host's services on the shared database, and the receiver they send to."""

    services: Services
    channel: ArrivalChannel

    def relay(self) -> RelayReport:
        """One relay run until nothing is due."""
        return self.services.relay().relay_until_idle()


def queue_reminder(services: Services, task_id: int, due: datetime, at: datetime) -> None:
    """A task due at ``due`` and its reminder as queued at ``at`` to go out at once (the
    row's shape before rules: the owner's, worth sending until the task is due)."""
    add_task(services, task_id, 1, due)
    message = NewMessage(
        reminder_key(task_id, due), REMINDER_KIND, task_id, due, available_at=at, expires_at=due
    )
    with services.session_factory.begin() as session:
        assert ValuesEnqueue.for_dialect("postgresql").enqueue(session, [message], at) == 1


@pytest.fixture
def hosts(postgres_url: str) -> Iterator[dict[str, Host]]:
    """An ``ahead`` and a ``behind`` host, each with its own engine and receiver."""
    engines: list[Engine] = []
    made: dict[str, Host] = {}
    for name, shift in (("ahead", SKEW), ("behind", -SKEW)):
        engine = make_engine(postgres_url)
        engines.append(engine)
        channel = ArrivalChannel()
        settings = Settings(database_url=postgres_url, lookahead=LOOKAHEAD)
        services = bootstrap(
            settings,
            local_clock=ShiftedClock(shift),
            engine=engine,
            make_channel=channel.itself,
        )
        made[name] = Host(services, channel)
    yield made
    for engine in engines:
        engine.dispose()


def run_side_by_side(hosts: dict[str, Host], until: float) -> None:
    """Each host scans and relays in a loop of its own until the monotonic time ``until``."""
    errors: list[BaseException] = []

    def loop(host: Host) -> None:
        try:
            while time.monotonic() < until:
                host.services.scan()
                host.relay()
                host.services.stop.wait(0.1)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=loop, args=(host,)) for host in hosts.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not errors, errors


def test_skewed_hosts_remind_at_the_moment_on_the_servers_clock(hosts: dict[str, Host]) -> None:
    """Hosts 150 s ahead and behind, scanning and relaying at once: each reminder arrives once,
    not before its moment (due - lookahead) and soon after it; none for a task already due, none
    for a task whose moment is still minutes away."""
    ahead, behind = hosts["ahead"], hosts["behind"]
    add_user(ahead.services, 1)
    start = datetime.now(UTC)
    soon = {n: start + LOOKAHEAD + timedelta(seconds=1.5 * n) for n in (1, 2, 3)}
    # Due already (the behind host's own window would take the last one), and due in minutes
    # (the ahead host's own window would take it now).
    never = {
        11: start - timedelta(seconds=1),
        12: start - timedelta(seconds=60),
        13: start - SKEW + timedelta(seconds=2),
        14: start + SKEW + timedelta(seconds=2),
    }
    for task_id, due in soon.items() | never.items():
        add_task(ahead.services, task_id, 1, due)

    run_side_by_side(hosts, until=time.monotonic() + 7.0)

    arrived = ahead.channel.arrived + behind.channel.arrived
    keys = [key for key, _ in arrived]
    expected = {reminder_key(task_id, due): due - LOOKAHEAD for task_id, due in soon.items()}
    assert sorted(keys) == sorted(expected), keys
    for key, at in arrived:
        moment = expected[key]
        assert at >= moment - SLACK, (key, at - moment)
        assert at <= moment + LATE, (key, at - moment)
    for host, sign in ((ahead, -1), (behind, 1)):
        offset = host.services.clock_offset()
        assert offset is not None
        assert abs(offset.offset - sign * SKEW) < timedelta(seconds=0.1)
    with ahead.services.session_factory() as session:
        recorded = session.scalar(select(ScanHeartbeat.clock_offset_ms))
    assert recorded is not None and abs(abs(recorded) - 150_000) < 100


@pytest.mark.parametrize("holder", ["behind", "ahead"])
def test_a_skewed_host_never_takes_a_live_lease(hosts: dict[str, Host], holder: str) -> None:
    """While one host is slow to send a row under its lease, the other (its clock 300 s away)
    finds nothing to claim; the holder's delivery is recorded, not fenced."""
    owner, other = hosts[holder], hosts["ahead" if holder == "behind" else "behind"]
    add_user(owner.services, 1)
    # A row that has waited 200 s (through an outage, say): due on every host's clock; its
    # task is due in a minute, so the reminder is still useful (it would expire otherwise).
    queued_at = datetime.now(UTC) - timedelta(seconds=200)
    due = queued_at + timedelta(seconds=260)
    queue_reminder(owner.services, 1, due, queued_at)
    owner.channel.hold = threading.Event()
    reports: list[RelayReport] = []
    sending = threading.Thread(target=lambda: reports.append(owner.relay()))
    sending.start()
    assert owner.channel.sending.wait(WAIT)

    taken = other.relay()
    owner.channel.hold.set()
    sending.join(WAIT)

    assert taken.claimed == 0 and other.channel.keys() == []
    assert dict(reports[0].counts) == {"delivered": 1}
    with owner.services.session_factory() as session:
        row = session.execute(select(OutboxRow.status, OutboxRow.attempts)).one()
    assert (row.status, row.attempts) == (Status.DELIVERED, 1)


def test_skewed_hosts_expire_rows_on_the_servers_clock(hosts: dict[str, Host]) -> None:
    """The host 150 s ahead delivers a row whose task is due in 60 s (past due on its own
    clock); the host 150 s behind never sends one whose task was due 60 s ago (still a
    minute and a half ahead on its own clock): that row ends expired."""
    ahead, behind = hosts["ahead"], hosts["behind"]
    add_user(ahead.services, 1)
    now = datetime.now(UTC)
    queued_at = now - timedelta(seconds=200)
    built = ahead.services

    def queue(task_id: int, due: datetime) -> None:
        queue_reminder(built, task_id, due, queued_at)

    useful = now + timedelta(seconds=60)
    queue(1, useful)
    assert dict(ahead.relay().counts) == {"delivered": 1}
    queue(2, now - timedelta(seconds=60))
    assert dict(behind.relay().counts) == {"expired": 1}

    assert ahead.channel.keys() == [reminder_key(1, useful)] and behind.channel.keys() == []
    with built.session_factory() as session:
        found = dict(session.execute(select(OutboxRow.subject_id, OutboxRow.status)).all())
    assert found == {1: Status.DELIVERED, 2: Status.EXPIRED}
