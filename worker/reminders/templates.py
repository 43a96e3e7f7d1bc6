"""The message templates: compiled once per process, the shipped ones or an operator's.

Three templates make a reminder: ``subject.txt``, ``body.txt`` (the text part) and
``body.html`` (the HTML part); three more a digest: ``digest_subject.txt``,
``digest_body.txt`` and ``digest_body.html``. Both HTML bodies extend ``layout.html`` (the
page around the content, and the footer) and both text bodies include ``footer.txt``, each
as ``default/<name>``. A file of the same name in the override folder
(``REMINDERS_TEMPLATE_DIR``) replaces one of the six; the shipped ones stay reachable as
``default/<name>``, so an override can extend one and change a block. HTML templates
escape every value (autoescape); text templates do not. An undefined variable is an error
(``StrictUndefined``), not an empty string.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PrefixLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateSyntaxError,
    select_autoescape,
)

from worker.errors import ConfigError
from worker.reminders.languages import Language

SHIPPED_DIR = Path(__file__).with_name("templates")
SUBJECT, TEXT, HTML = "subject.txt", "body.txt", "body.html"
DIGEST_SUBJECT, DIGEST_TEXT, DIGEST_HTML = (
    "digest_subject.txt",
    "digest_body.txt",
    "digest_body.html",
)
NAMES = (SUBJECT, TEXT, HTML, DIGEST_SUBJECT, DIGEST_TEXT, DIGEST_HTML)
#: What the shipped bodies share; not replaced by a file of the same name in the folder.
SHARED = ("layout.html", "footer.txt")


class TemplateProblem(ConfigError):
    """A message template cannot be compiled or rendered."""


class Parts(NamedTuple):
    """What the templates give for one message, before the subject is made one line."""

    subject: str
    text: str
    html: str


def environment(directory: Path | None) -> Environment:
    """The Jinja environment over ``directory`` (may be None) and the shipped templates."""
    shipped = FileSystemLoader(SHIPPED_DIR)
    loaders = [FileSystemLoader(directory)] if directory is not None else []
    env = Environment(
        loader=ChoiceLoader([*loaders, shipped, PrefixLoader({"default": shipped})]),
        autoescape=select_autoescape(("html", "htm"), default_for_string=False),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.policies["ext.i18n.trimmed"] = True  # as `make i18n` extracts them
    # Sets the new-style gettext; each render passes its recipient's language's callables.
    env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
    return env


@dataclass(frozen=True)
class Templates:
    """The three compiled templates of a reminder, and the three of a digest."""

    subject: Template
    text: Template
    html: Template
    digest_subject: Template
    digest_text: Template
    digest_html: Template
    directory: Path | None = None

    def render(self, language: Language, context: Mapping[str, Any]) -> Parts:
        """Render a reminder's three parts in ``language``; raises what the templates raise."""
        return _parts((self.subject, self.text, self.html), language, context)

    def render_digest(self, language: Language, context: Mapping[str, Any]) -> Parts:
        """Render a digest's three parts in ``language``; raises what the templates raise."""
        chosen = (self.digest_subject, self.digest_text, self.digest_html)
        return _parts(chosen, language, context)

    def problem(self, error: Exception) -> TemplateProblem:
        """A one-line `TemplateProblem` naming the template file and line that failed."""
        return TemplateProblem(_where(error, self.directory))


@functools.cache
def load_templates(directory: Path | None = None) -> Templates:
    """Compile the templates (once per process and folder).

    Raises:
        TemplateProblem: a template has a syntax error, naming its file and line.
    """
    env = environment(directory)
    try:
        subject, text, html, digest_subject, digest_text, digest_html = (
            env.get_template(name) for name in NAMES
        )
    except TemplateError as error:
        raise TemplateProblem(_where(error, directory)) from None
    return Templates(subject, text, html, digest_subject, digest_text, digest_html, directory)


def _parts(
    templates: tuple[Template, Template, Template], language: Language, context: Mapping[str, Any]
) -> Parts:
    values = {**context, **language.callables, "language": language.code}
    subject, text, html = (template.render(values) for template in templates)
    return Parts(subject, text, html)


def _where(error: Exception, directory: Path | None) -> str:
    """``REMINDERS_TEMPLATE_DIR: <file>, line <n>: <what>`` for an error from a template."""
    filename, line = _location(error, directory)
    what = " ".join(str(getattr(error, "message", None) or error).split()) or type(error).__name__
    if not isinstance(error, TemplateError):
        what = f"{type(error).__name__}: {what}"
    place = "a template" if filename is None else filename
    if line is not None:
        place += f", line {line}"
    prefix = "REMINDERS_TEMPLATE_DIR: " if directory is not None else "shipped template: "
    return f"{prefix}{place}: {what}"[:500]


def _location(error: Exception, directory: Path | None) -> tuple[str | None, int | None]:
    if isinstance(error, TemplateSyntaxError):
        return error.filename or error.name, error.lineno
    # Jinja rewrites a render's traceback so that its frames name the template and line.
    roots = tuple(str(root) for root in (directory, SHIPPED_DIR) if root is not None)
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if frame.filename.startswith(roots)
    ]
    if not frames:
        return None, None
    return frames[-1].filename, frames[-1].lineno
