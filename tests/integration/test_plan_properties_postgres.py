"""The planning property of `tests.unit.test_plan_properties` on PostgreSQL, where each batch
and the window are one statement each and the keys are built in SQL: fewer examples, each
on a fresh copy of the migrated template database."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, note, settings
from sqlalchemy import Engine

from tests.conftest import database_from
from tests.support.plan_model import (
    BACK_BEFORE_ITS_MOMENT,
    Step,
    describe,
    first_dues,
    histories,
    play,
)
from worker.db import make_engine

pytestmark = pytest.mark.postgres


@given(dues=first_dues, history=histories)
@example(dues=(12, 30), history=BACK_BEFORE_ITS_MOMENT)
@settings(max_examples=10, deadline=None)
def test_every_reminder_standing_at_its_moment_is_delivered_once_then_on_postgres(
    postgres_template: str, dues: tuple[int, int], history: list[Step]
) -> None:
    @contextlib.contextmanager
    def fresh() -> Iterator[tuple[Engine, Path]]:
        with (
            database_from(postgres_template) as url,
            tempfile.TemporaryDirectory(prefix="plan-example-") as directory,
        ):
            engine = make_engine(url)
            try:
                yield engine, Path(directory)
            finally:
                engine.dispose()

    played = play(fresh, dues, history)
    for line in describe(played):
        note(line)
    played.check()
