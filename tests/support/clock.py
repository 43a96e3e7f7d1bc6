"""A clock that tests move by hand, and the moment it starts at."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from outbox.clock import require_utc

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@dataclass
class ManualClock:
    """A clock that only moves when the test says so."""

    current: datetime = T0

    def now(self) -> datetime:
        """The time the test has set."""
        return self.current

    def advance(self, delta: timedelta) -> datetime:
        """Move time forward and return the new now."""
        self.current = self.current + delta
        return self.current

    def set(self, when: datetime) -> None:
        """Jump to ``when``."""
        self.current = require_utc(when)


@dataclass(frozen=True)
class ShiftedClock:
    """The wall clock of a host whose clock is ``shift`` away from the true time."""

    shift: timedelta

    def now(self) -> datetime:
        """The real time, shifted."""
        return datetime.now(UTC) + self.shift
