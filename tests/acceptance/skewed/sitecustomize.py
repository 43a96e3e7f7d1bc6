"""Loaded first (through ``PYTHONPATH``) by the processes the clock-skew test shifts with
libfaketime, whose monotonic clock stays the real one.

libfaketime 0.9.10 (Debian 12's) breaks Python 3.11's `time.sleep` in that mode: it shifts the
absolute ``CLOCK_MONOTONIC`` deadline of ``clock_nanosleep`` by the fake offset, and the kernel
refuses it (EINVAL; wolfcw/libfaketime issue 426). A wait in ``select`` has a relative timeout,
which libfaketime leaves as it is, and is retried after a signal as a sleep is.
"""

from __future__ import annotations

import select
import time
from typing import SupportsIndex


def _sleep(seconds: float | SupportsIndex) -> None:
    delay = float(seconds)
    if delay < 0:
        raise ValueError("sleep length must be non-negative")
    select.select([], [], [], delay)


time.sleep = _sleep
