"""The message catalogs: every string of the templates translated in every shipped language.

`make i18n` extracts the strings into ``messages.pot``, merges them into each catalog and
compiles the ``.mo`` files the package ships. These tests fail when one of those steps was
skipped: a string missing from the ``.pot``, untranslated (or fuzzy) in a catalog, a
placeholder lost in a translation, or a ``.mo`` file older than its ``.po``.
"""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from worker.reminders.languages import DOMAIN, LANGUAGES, LOCALE_DIR, language_for
from worker.reminders.templates import SHIPPED_DIR
from worker.web.pages import PAGES_DIR

POT = LOCALE_DIR / f"{DOMAIN}.pot"
JINJA = {"extensions": "jinja2.ext.i18n", "trimmed": "true"}


def po_path(code: str) -> Path:
    """The source catalog of a language."""
    return LOCALE_DIR / code / "LC_MESSAGES" / f"{DOMAIN}.po"


def read(path: Path, code: str | None = None) -> Catalog:
    """A ``.po`` or ``.pot`` file as a Babel catalog."""
    with path.open("rb") as file:
        return read_po(file, locale=code)


def msgids(catalog: Catalog) -> set[str | tuple[str, ...]]:
    """The message ids of a catalog (a plural's as a tuple), without its header entry."""
    return {
        message.id if isinstance(message.id, str) else tuple(message.id)
        for message in catalog
        if message.id
    }


def test_the_template_strings_are_all_in_the_pot() -> None:
    """The ``.pot`` holds exactly the strings the shipped templates and the links pages use
    (`make i18n`)."""
    extracted = {
        message[2] if isinstance(message[2], str) else tuple(message[2])
        for folder in (SHIPPED_DIR, PAGES_DIR)
        for message in extract_from_dir(
            folder, method_map=[("**", "jinja2")], options_map={"**": JINJA}
        )
    }
    assert extracted == msgids(read(POT))


@pytest.mark.parametrize("code", LANGUAGES)
def test_every_string_is_translated_in_every_catalog(code: str) -> None:
    """Each msgid of the ``.pot`` has a translation, in every plural form, not fuzzy."""
    catalog = read(po_path(code), code)
    missing = []
    for message in read(POT):
        if not message.id:
            continue
        found = catalog.get(message.id)
        given = None if found is None else found.string
        strings = (given,) if isinstance(given, str) else tuple(given or ())
        if found is None or found.fuzzy or not strings or not all(strings):
            missing.append(message.id)
    assert not missing, f"{code}: untranslated or fuzzy, run `make i18n` and translate"


@pytest.mark.parametrize("code", LANGUAGES)
def test_translations_keep_their_placeholders(code: str) -> None:
    """A translation uses the ``%(name)s`` placeholders of its msgid (Babel's checks)."""
    checked = read(po_path(code), code).check()
    assert not [(message.id, [str(error) for error in errors]) for message, errors in checked]


@pytest.mark.parametrize("code", LANGUAGES)
def test_the_compiled_catalogs_match_their_sources(code: str) -> None:
    """The shipped ``.mo`` is the ``.po`` compiled as `make i18n` compiles it."""
    compiled = io.BytesIO()
    write_mo(compiled, read(po_path(code), code), use_fuzzy=False)
    assert po_path(code).with_suffix(".mo").read_bytes() == compiled.getvalue()


@pytest.mark.parametrize("code", [c for c in LANGUAGES if c != "en"])
def test_each_language_translates_rather_than_copies(code: str) -> None:
    """A translated language's strings differ from the English ones (no copied catalog)."""
    english = language_for("en").translations
    translations = language_for(code).translations
    same = [m for m in msgids(read(POT)) if isinstance(m, str) and
            translations.gettext(m) == english.gettext(m)]  # fmt: skip
    assert not same


def test_the_package_ships_the_templates_and_catalogs() -> None:
    """pyproject's package data names every template and catalog file (the wheel and the
    sdist carry them; `pip install .` runs without `make i18n`)."""
    root = LOCALE_DIR.parents[1]  # worker/
    with (root.parent / "pyproject.toml").open("rb") as file:
        patterns = tomllib.load(file)["tool"]["setuptools"]["package-data"]["worker"]
    shipped = {path for pattern in patterns for path in root.glob(pattern) if path.is_file()}
    needed = {
        path
        for folder in (SHIPPED_DIR, LOCALE_DIR, PAGES_DIR)
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert needed and needed <= shipped
    assert {path.suffix for path in needed} == {".txt", ".html", ".pot", ".po", ".mo"}
