"""The names a host's nudge and the workers must agree on: the queue and the scan actor."""

from __future__ import annotations

#: The one Dramatiq queue every actor of `worker.actors` consumes.
QUEUE = "reminders"
#: The scan actor's name; a message naming it on `QUEUE` asks the workers for a scan.
SCAN_ACTOR = "scan_due_tasks"
