"""Broker messages timed on the database server's clock instead of each host's own.

Two times travel in a message and are compared on another host. periodiq stamps a tick with
its scheduler's wall clock and drops it when it is older than ``skip_delay`` on the worker's
wall clock: a worker whose clock runs 150 s ahead drops every tick it takes. Dramatiq stamps a
delayed message's ``eta`` with the sender's wall clock and holds it until the consumer's wall
clock passes it: a wake-up sent from a host ahead to a host behind waits twice their skew.
Here the sender also stamps the server clock's time, and the receiver judges on its own
server-aligned clock. A process that cannot read its clock (the database unreachable before
its first measurement) leaves the stamp out, and the receiver falls back to the sender's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import structlog
from dramatiq.common import current_millis
from dramatiq.middleware import SkipMessage
from periodiq import PeriodiqMiddleware

from outbox.clock import Clock

log = structlog.get_logger("worker.message_clock")

#: The tick's time on the scheduler's server-aligned clock (ISO 8601).
SCHEDULED_AT_SERVER = "scheduled_at_server"
#: A delayed message's due time on the sender's server-aligned clock (ms since the epoch).
ETA_SERVER = "eta_server"
#: The largest clock offset between hosts the service tolerates. A tick that only carries
#: periodiq's own stamp (its scheduler's wall clock) is given this much more time, so that no
#: worker drops one for its scheduler's skew; a stale tick it lets through scans for nothing.
TOLERATED_SKEW = timedelta(minutes=5)


def _read(clock: Clock) -> datetime | None:
    """The clock's time, or None when it cannot be read (no decision is worth a failure)."""
    try:
        return clock.now()
    except Exception:
        return None


class ServerTimedTicks(PeriodiqMiddleware):  # type: ignore[misc]
    """periodiq's middleware (``periodic=`` stays valid), judging a tick's age on the server
    clock: stamped where it is enqueued, compared where it is processed."""

    def __init__(self, clock: Clock, skip_delay: int = 30) -> None:
        super().__init__(skip_delay=skip_delay)
        self.clock = clock

    def before_enqueue(self, broker: Any, message: dramatiq.Message[Any], delay: Any) -> None:
        """Stamp a tick of periodiq's (it carries ``scheduled_at``) with the server's time."""
        options = message.options
        if "scheduled_at" not in options or SCHEDULED_AT_SERVER in options:
            return
        now = _read(self.clock)
        if now is not None:
            options[SCHEDULED_AT_SERVER] = now.isoformat()

    def before_process_message(self, broker: Any, message: Any) -> None:
        """Skip a tick older than ``skip_delay`` on the server clock; run anything else."""
        actor = broker.get_actor(message.actor_name)
        options = message.options
        if "periodic" not in actor.options or "scheduled_at" not in options:
            return  # not a tick: a wake-up sent by hand or by another actor
        now = _read(self.clock)
        if now is None:
            return  # cannot judge its age: run it (a scan is idempotent)
        stamp = options.get(SCHEDULED_AT_SERVER)
        limit = timedelta(seconds=self.skip_delay)
        if stamp is None:
            stamp, limit = options["scheduled_at"], limit + TOLERATED_SKEW
        try:
            age = now - _parse(stamp)
        except ValueError:
            return  # not a time: run it rather than lose a tick
        if age > limit:
            log.info(
                "tick_skipped",
                actor=message.actor_name,
                message_id=message.message_id,
                scheduled_at=stamp,
                age_seconds=round(age.total_seconds(), 3),
                limit_seconds=limit.total_seconds(),
            )
            raise SkipMessage()


class ServerTimedDelays(dramatiq.Middleware):
    """A delayed message is held until its due time on the server clock, not the sender's."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def before_enqueue(self, broker: Any, message: dramatiq.Message[Any], delay: Any) -> None:
        """Stamp a delayed message with its due time on the server clock."""
        if not delay:
            return
        now = _read(self.clock)
        if now is not None:
            message.options[ETA_SERVER] = _millis(now) + int(delay)

    def before_delay_message(self, broker: Any, message: Any) -> None:
        """Re-express the due time on this host's wall clock, which the consumer compares."""
        due = message.options.pop(ETA_SERVER, None)
        if due is None:
            return
        now = _read(self.clock)
        if now is not None:
            message.options["eta"] = current_millis() + max(int(due) - _millis(now), 0)


def _parse(stamp: str) -> datetime:
    parsed = datetime.fromisoformat(stamp)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
