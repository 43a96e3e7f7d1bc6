"""Where a build may wrap the pipeline's parts: the channel, the re-check, the scan's queries.

`bootstrap` applies a `Seams` value once, when it wires a process; the default wraps nothing,
which is what production runs. A test build (``tests/acceptance/faulty_worker.py``) composes
its faults here instead of replacing names in other modules, so that what it runs is the
real pipeline with a layer around each part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from outbox.channels.base import Channel
from outbox.relay import Prepare
from outbox.store import Verdict
from worker.reminders.due import DueQueries

Wrapped = TypeVar("Wrapped")


def unchanged(part: Wrapped) -> Wrapped:
    """The part itself: the wrapper of a seam left alone."""
    return part


@dataclass(frozen=True)
class Seams:
    """Wrappers around the parts `bootstrap` builds, and an observer of recorded verdicts."""

    #: Wraps each channel a relay run gets (the same Protocol: ``send`` and ``close``).
    wrap_channel: Callable[[Channel], Channel] = unchanged
    #: Wraps the relay's re-check, which runs inside the round's transaction.
    wrap_prepare: Callable[[Prepare], Prepare] = unchanged
    #: Wraps the scan's statements for the database's dialect.
    wrap_due_queries: Callable[[DueQueries], DueQueries] = unchanged
    #: Called for each verdict a relay wrote, right after its commit, with whether the
    #: relay still held the row (False: fenced, nothing written); see `outbox.relay.Relay`.
    on_record: Callable[[Verdict, bool], None] | None = None


#: What production wires: every part as built.
NO_SEAMS = Seams()
