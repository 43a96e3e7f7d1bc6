"""The shipped templates rendered for sample reminders and digests, in every language.

``tests/fixtures/rendered/<language>.txt`` holds what the shipped templates give for
`CASES`, every part under a ``=== <case> <template>`` line, so that a change of a template
shows as a change of its output and a rearrangement of the templates as none.
`tests/unit/test_templates.py` fails when a file and the templates disagree;
``python -m tests.support.rendered_samples`` rewrites the files after a template or a
catalog changed on purpose.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from worker.reminders.languages import LANGUAGES, Language, language_for
from worker.reminders.templates import Parts, load_templates

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rendered"
ZONE = ZoneInfo("Europe/Paris")
DUE = datetime(2026, 11, 30, 16, 0, tzinfo=UTC).astimezone(ZONE)
SLOT = datetime(2026, 11, 30, 8, 0, tzinfo=UTC).astimezone(ZONE)
TITLE = 'Pay <rent> & "bills"'
TASK_URL = "https://app.example.com/tasks/42"
UNSUBSCRIBE_URL = "https://reminders.example.com/unsubscribe/TOKEN"


def reminder(language: Language, *, overdue: bool, linked: bool) -> dict[str, Any]:
    """A reminder's context; ``linked`` with every link (task, unsubscribe, snoozes)."""
    snoozes = [(1, 0), (24, 1), (72, 3)] if linked else []
    return {
        "key": "due_soon-42-20261130T160000Z",
        "task_id": 42,
        "title": TITLE,
        "short_title": TITLE,
        "due": language.due(DUE),
        "due_date": DUE,
        "task_url": TASK_URL if linked else None,
        "unsubscribe_url": UNSUBSCRIBE_URL if linked else None,
        "snooze_links": [
            {"hours": hours, "days": days, "url": f"https://reminders.example.com/snooze/{hours}"}
            for hours, days in snoozes
        ],
        "overdue": overdue,
    }


def line(language: Language, task_id: int, *, overdue: bool, linked: bool) -> dict[str, Any]:
    """A digest's line for task ``task_id``."""
    title = f"{TITLE} #{task_id}"
    return {
        "task_id": task_id,
        "title": title,
        "short_title": title,
        "due": language.due(DUE),
        "due_date": DUE,
        "task_url": f"https://app.example.com/tasks/{task_id}" if linked else None,
        "overdue": overdue,
        "keys": [f"due_soon-{task_id}-20261130T160000Z"],
    }


def digest(language: Language, *, overdue: bool, linked: bool) -> dict[str, Any]:
    """A digest's context: two tasks due soon (one linked), and one overdue if ``overdue``."""
    late = [line(language, 1, overdue=True, linked=linked)] if overdue else []
    soon = [line(language, 2, overdue=False, linked=linked), line(language, 3, overdue=False,
            linked=False)]  # fmt: skip
    return {
        "key": "digest-7-20261130T080000Z",
        "count": len(late) + len(soon),
        "overdue": late,
        "due_soon": soon,
        "slot": language.due(SLOT),
        "slot_date": SLOT,
        "unsubscribe_url": UNSUBSCRIBE_URL if linked else None,
    }


#: name: (digest or not, overdue, linked)
CASES = {
    "reminder-due-soon": (False, False, False),
    "reminder-overdue-linked": (False, True, True),
    "digest-due-soon-linked": (True, False, True),
    "digest-overdue": (True, True, False),
}


def rendered(code: str) -> str:
    """Every case of `CASES` rendered in the language ``code``, as its fixture holds it."""
    templates = load_templates()
    language = language_for(code)
    sections = []
    for case, (is_digest, overdue, linked) in CASES.items():
        if is_digest:
            parts: Parts = templates.render_digest(
                language, digest(language, overdue=overdue, linked=linked)
            )
            names = ("digest_subject.txt", "digest_body.txt", "digest_body.html")
        else:
            parts = templates.render(language, reminder(language, overdue=overdue, linked=linked))
            names = ("subject.txt", "body.txt", "body.html")
        sections += [f"=== {case} {name}\n{part}" for name, part in zip(names, parts, strict=True)]
    return "".join(sections)


def fixture(code: str) -> Path:
    """The fixture file of the language ``code``."""
    return FIXTURES / f"{code}.txt"


if __name__ == "__main__":
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for code in LANGUAGES:
        fixture(code).write_text(rendered(code), encoding="utf-8")
