"""Property: whatever the rules, due dates, completions and recipients do, every reminder that
stands at its moment is delivered once, at its moment, and none early, twice or for a task
done or a recipient gone (the rules: `tests.support.plan_model`). SQLite, through the
project's embedded setup: a migrated template file, copied for each example."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, note, settings
from sqlalchemy import Engine

from tests.support.plan_model import (
    BACK_BEFORE_ITS_MOMENT,
    Step,
    describe,
    first_dues,
    histories,
    play,
)
from worker import migrate
from worker.db import make_engine


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    """A migrated SQLite file, the same for every example."""
    directory = Path(tempfile.mkdtemp(prefix="plan-properties-"))
    engine = make_engine(f"sqlite:///{directory}/template.db")
    migrate.upgrade(engine)
    engine.dispose()
    yield directory / "template.db"
    shutil.rmtree(directory, ignore_errors=True)


@given(dues=first_dues, history=histories)
@example(dues=(12, 30), history=BACK_BEFORE_ITS_MOMENT)
@settings(max_examples=40, deadline=None)
def test_every_reminder_standing_at_its_moment_is_delivered_once_then(
    template: Path, dues: tuple[int, int], history: list[Step]
) -> None:
    @contextlib.contextmanager
    def fresh() -> Iterator[tuple[Engine, Path]]:
        directory = Path(tempfile.mkdtemp(prefix="plan-example-"))
        try:
            shutil.copy(template, directory / "reminders.db")
            engine = make_engine(f"sqlite:///{directory}/reminders.db")
            yield engine, directory
            engine.dispose()
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    played = play(fresh, dues, history)
    for line in describe(played):
        note(line)
    played.check()
