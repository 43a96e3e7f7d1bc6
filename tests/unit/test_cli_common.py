"""What the commands share: durations given on the command line, with or without a unit."""

from __future__ import annotations

from datetime import timedelta

import pytest

from worker.cli.common import duration
from worker.errors import UsageError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("86400000ms", timedelta(days=1)),
        ("86400s", timedelta(days=1)),
        ("1440m", timedelta(days=1)),
        ("24h", timedelta(days=1)),
        ("1d", timedelta(days=1)),
        ("1.5d", timedelta(hours=36)),
        (" 30d ", timedelta(days=30)),
    ],
)
def test_every_unit_is_accepted_where_one_is_required(text: str, expected: timedelta) -> None:
    """ms, s, m, h and d (and fractions) read as written when a unit is required."""
    assert duration("--older-than", text, unit_required=True) == expected


@pytest.mark.parametrize("text", ["30", "2.5", " 30 ", "0"])
def test_a_bare_number_is_refused_where_a_unit_is_required(text: str) -> None:
    """A number without a unit is a usage error naming the option and showing a fix."""
    with pytest.raises(UsageError) as caught:
        duration("--older-than", text, unit_required=True)
    number = text.strip()
    assert str(caught.value) == (
        f"--older-than: '{number}' needs a unit (ms, s, m, h or d), for example {number}d"
    )


def test_a_bare_number_is_seconds_where_no_unit_is_required() -> None:
    """Elsewhere a bare number keeps the settings' meaning: seconds."""
    assert duration("--max-pending-age", "90") == timedelta(seconds=90)
