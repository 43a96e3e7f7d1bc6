"""Message templates: their output, overrides by name, errors found at start, compiled once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import pytest
from sqlalchemy import Engine

from tests.support.rendered_samples import fixture, rendered
from worker.bootstrap import bootstrap
from worker.reminders.languages import LANGUAGES
from worker.reminders.render import OwnerFacts, TaskFacts, renderer_for
from worker.reminders.templates import (
    NAMES,
    SHARED,
    SHIPPED_DIR,
    TemplateProblem,
    load_templates,
)
from worker.settings import load_settings

TASK = TaskFacts(5, "Pay <rent>", datetime(2026, 11, 28, 12, 0, tzinfo=UTC), True)
OWNER = OwnerFacts(9, "ada@example.com", "Europe/Paris", True, "fr")


def folder(tmp_path: Path, **files: str) -> Path:
    """A template folder holding ``files`` (``body_html`` is written as ``body.html``)."""
    for name, text in files.items():
        (tmp_path / name.replace("_", ".")).write_text(text, encoding="utf-8")
    return tmp_path


def problem(tmp_path: Path, **files: str) -> str:
    """The one-line error a renderer over these files fails with at start."""
    with pytest.raises(TemplateProblem) as caught:
        renderer_for(load_settings(template_dir=str(folder(tmp_path, **files))))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_shipped_templates_are_the_three_parts() -> None:
    """The package ships a subject, a text and an HTML template, for reminders and digests,
    and the HTML layout and the text footer both kinds share."""
    assert sorted(path.name for path in SHIPPED_DIR.iterdir()) == [
        "body.html", "body.txt", "digest_body.html", "digest_body.txt", "digest_subject.txt",
        "footer.txt", "layout.html", "subject.txt",
    ]  # fmt: skip


@pytest.mark.parametrize("code", LANGUAGES)
def test_the_shipped_templates_give_the_recorded_messages(code: str) -> None:
    """Every part of the sample reminders and digests is, to the byte, what
    ``tests/fixtures/rendered`` records for the language; run
    ``python -m tests.support.rendered_samples`` after changing a template or a catalog."""
    assert rendered(code) == fixture(code).read_text(encoding="utf-8")


def test_a_template_in_the_folder_replaces_the_shipped_one_by_name(tmp_path: Path) -> None:
    """An override of the subject changes the subject only; the parts not overridden stay."""
    directory = folder(tmp_path, subject_txt="[{{ language }}] {{ short_title }} · {{ due }}\n")
    renderer = renderer_for(load_settings(template_dir=str(directory)))
    message = renderer.render("due_soon-5-X", TASK, OWNER)
    assert message.subject == "[fr] Pay <rent> · sam. 28 nov. 2026, 13:00 CET (UTC+01:00)"
    assert message.text.startswith("Votre tâche arrive bientôt à échéance.")


def test_an_override_can_extend_the_shipped_template(tmp_path: Path) -> None:
    """``default/body.html`` is the shipped HTML: an override changes one block, escaping
    still applies, and the recipient's language still picks the words."""
    directory = folder(
        tmp_path,
        body_html='{% extends "default/body.html" %}'
        "{% block intro %}<em>{{ title }}</em> — {{ _('Your task is due soon.') }}{% endblock %}",
    )
    message = renderer_for(load_settings(template_dir=str(directory))).render(
        "due_soon-5-X", TASK, OWNER
    )
    assert message.html is not None
    assert "<em>Pay &lt;rent&gt;</em> — Votre tâche arrive bientôt à échéance." in message.html
    assert "Tâche\xa0:" in message.html  # the rest is the shipped template's


def test_the_shared_parts_are_not_replaced_by_name(tmp_path: Path) -> None:
    """A ``layout.html`` or ``footer.txt`` in the folder changes nothing: the shipped bodies
    extend and include the shipped ones."""
    directory = folder(tmp_path, layout_html="{{ nothing }}\n", footer_txt="{{ nothing }}\n")
    message = renderer_for(load_settings(template_dir=str(directory))).render(
        "due_soon-5-X", TASK, OWNER
    )
    assert message == renderer_for(load_settings()).render("due_soon-5-X", TASK, OWNER)


def test_text_templates_do_not_escape(tmp_path: Path) -> None:
    """Autoescape is on for HTML only: the text part and the subject carry the title as is."""
    message = renderer_for(load_settings()).render("due_soon-5-X", TASK, OWNER)
    assert "Pay <rent>" in message.subject and "Pay <rent>" in message.text
    assert message.html is not None and "Pay &lt;rent&gt;" in message.html


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    """A template that does not compile stops the start with its file and line."""
    message = problem(tmp_path, body_txt="Hello\n\n{% if title %}\n{{ title }\n{% endif %}\n")
    assert message.startswith(f"REMINDERS_TEMPLATE_DIR: {tmp_path / 'body.txt'}, line 4: ")


def test_an_undefined_variable_names_the_file_and_line(tmp_path: Path) -> None:
    """StrictUndefined: a variable the renderer does not give fails the sample render at start,
    naming the file and line, rather than rendering empty at the first send."""
    message = problem(tmp_path, body_html="<p>\n{{ title }}\n{{ titel }}\n</p>\n")
    assert message.startswith(f"REMINDERS_TEMPLATE_DIR: {tmp_path / 'body.html'}, line 3: ")
    assert "'titel' is undefined" in message


def test_a_failure_in_a_link_branch_is_found_without_links_configured(tmp_path: Path) -> None:
    """The sample render takes the branches of the task and unsubscribe links too."""
    template = "{{ title }}\n{% if unsubscribe_url %}\n{{ unsubscribe_ur }}\n{% endif %}\n"
    message = problem(tmp_path, body_txt=template)
    assert f"{tmp_path / 'body.txt'}, line 3: " in message


def test_a_broken_override_stops_bootstrap(tmp_path: Path, sqlite_engine: Engine) -> None:
    """`bootstrap` raises the template's problem (a ConfigError: the commands exit 2)."""
    directory = folder(tmp_path, subject_txt="{{ _('Reminder') }\n")
    with pytest.raises(TemplateProblem, match=r"subject\.txt, line 1"):
        bootstrap(
            load_settings(database_url=str(sqlite_engine.url), template_dir=str(directory)),
            engine=sqlite_engine,
        )


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str | None]]:
    """The names of the templates Jinja compiles from here on."""
    compiled: list[str | None] = []
    original = jinja2.Environment.compile

    def counting(self: jinja2.Environment, source: Any, name: str | None = None, *a: Any) -> Any:
        compiled.append(name)
        return original(self, source, name, *a)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    yield compiled


def test_templates_are_compiled_once_per_process(
    tmp_path: Path, compiles: list[str | None]
) -> None:
    """A folder's templates compile once; renderers and renders after that compile nothing."""
    settings = load_settings(template_dir=str(folder(tmp_path, subject_txt="{{ title }}\n")))
    first = renderer_for(settings)
    assert sorted(name for name in compiles if name) == sorted([*NAMES, *SHARED])
    compiles.clear()
    again = renderer_for(settings)
    assert again.templates is first.templates
    for locale in ("en", "de", "fr", "es", "it"):
        for _ in range(50):
            again.render("due_soon-5-X", TASK, OWNER._replace(locale=locale))
    assert compiles == []
    assert load_templates(None) is load_templates(None)
