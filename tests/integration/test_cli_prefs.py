"""Preferences by hand: the real ``reminders prefs`` script on SQLite and PostgreSQL; bad input
refused with one line, exit 2, nothing changed; the channel URL never printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.integration.test_cli_rules import ok, refused, run

SECRET = "json://alice:hunter2@127.0.0.1:9/hook"


@pytest.fixture
def url(engine: Engine) -> str:
    """The URL of this test's migrated database, user 1 in it."""
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO users (id, email) VALUES (1, 'a@example.com')"))
    return engine.url.render_as_string(hide_password=False)


def stored(engine: Engine) -> list[tuple[Any, ...]]:
    """Every preferences row, to see that nothing changed."""
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT * FROM reminder_preferences ORDER BY 1")))


def test_preferences_are_set_shown_and_cleared(url: str, engine: Engine, tmp_path: Path) -> None:
    """``set`` then ``show --json`` give back each value; ``clear`` restores the defaults."""
    out = ok(
        run(
            url,
            *("prefs", "set", "--user", "1", "--quiet", "22:00-07:00", "--quiet-days", "mon-fri"),
            *("--digest", "08:30", "--pause-until", "2099-01-01", "--channel", SECRET),
            cwd=tmp_path,
        )
    )
    assert out.strip() == (
        "preferences of user 1: subscribed; quiet 22:00-07:00 on mon-fri; digest 08:30; "
        "pause until 2099-01-01; channel json://***"
    )
    document = json.loads(ok(run(url, "prefs", "show", "--user", "1", "--json", cwd=tmp_path)))
    assert {k: v for k, v in document.items() if k != "updated_at"} == {
        "user_id": 1,
        "unsubscribed": [],
        "quiet": "22:00-07:00",
        "quiet_days": "mon-fri",
        "digest_at": "08:30",
        "digest_workdays": False,
        "pause_until": "2099-01-01",
        "channel": "json://***",
    }
    ok(run(url, "prefs", "set", "--user", "1", "--unsubscribe", cwd=tmp_path))
    assert stored(engine)[0][1] == "*"  # opted_out: every kind
    assert "cleared" in ok(run(url, "prefs", "clear", "--user", "1", cwd=tmp_path))
    assert stored(engine) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quiet", "25:00-07:00"], "--quiet: '25:00' is not a time of day"),
        (["--quiet", "07:00-07:00"], "zero length"),
        (["--pause-until", "2020-01-01"], "--pause-until: 2020-01-01 is in the past"),
        (["--channel", "nonsense://alice:hunter2@host"], "--channel: nonsense://***"),
        (["--user", "2", "--digest", "08:00"], "user 2 is not in table users"),
        (["--user", "x"], "--user: 'x' is not a user id"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    url: str, engine: Engine, tmp_path: Path, args: list[str], message: str
) -> None:
    """One line on stderr, exit 2, the stored preferences as they were, no secret printed."""
    ok(run(url, "prefs", "set", "--user", "1", "--digest", "07:00", cwd=tmp_path))
    before = stored(engine)
    user = [] if "--user" in args else ["--user", "1"]
    result = run(url, "prefs", "set", *user, *args, "--digest", "09:00", cwd=tmp_path)
    assert message in refused(result)
    assert "hunter2" not in result.stderr + result.stdout
    assert stored(engine) == before


def test_a_digest_time_the_zone_skips_is_set_with_a_note(
    url: str, engine: Engine, tmp_path: Path
) -> None:
    """Not refused (the digest goes out at the end of the gap that day), but said: one more
    line naming the day and the time it goes out instead; a time the clock never skips
    gets none."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE users SET timezone = 'Europe/Berlin' WHERE id = 1"))
    lines = ok(run(url, "prefs", "set", "--user", "1", "--digest", "02:30", cwd=tmp_path))
    first, note = lines.splitlines()
    assert first.endswith("digest 02:30; pause none; channel none")
    assert note.startswith("note: 02:30 does not exist in Europe/Berlin on ")
    assert note.endswith(" (DST): that day's digest goes out at 03:00")
    lines = ok(run(url, "prefs", "set", "--user", "1", "--digest", "08:00", cwd=tmp_path))
    assert len(lines.splitlines()) == 1
