"""The recipient's language: which catalog gives the strings, how dates are written.

A locale comes from the host's rows (the mapping's optional ``locale`` column): it is data.
``fr``, ``fr_FR``, ``fr-FR`` and ``fr_FR.UTF-8`` all pick the French catalog; a region Babel
knows (``fr_CA``, ``en_GB``) also picks its own date and time conventions. An empty or
unsupported locale reads as English. Catalogs and locales are loaded once per process.
"""

from __future__ import annotations

import functools
import gettext
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from babel import Locale, UnknownLocaleError
from babel.dates import (
    DateTimePattern,
    get_datetime_format,
    get_time_format,
    match_skeleton,
    parse_pattern,
)
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup

log = structlog.get_logger("worker.reminders.languages")

#: Where the compiled catalogs are: ``<language>/LC_MESSAGES/messages.mo``.
LOCALE_DIR = Path(__file__).with_name("locale")
DOMAIN = "messages"
#: The languages with a shipped catalog; the first is the fallback.
LANGUAGES = ("en", "de", "fr", "es")
DEFAULT = LANGUAGES[0]
# A language, then script/region/variant subtags: what Babel may parse. Anything else is
# reduced to its language part.
_TAG = re.compile(r"[a-z]{2,3}(?:_[A-Za-z0-9]{2,8}){0,3}")
_TAG_LIMIT = 64
#: The CLDR skeleton of a due date: weekday, day, abbreviated month and year.
DUE_DATE_SKELETON = "yMMMEd"


@dataclass(frozen=True)
class Language:
    """One recipient language: the catalog's code, the locale dates follow, the strings."""

    code: str
    locale: Locale
    translations: gettext.NullTranslations = field(repr=False)
    #: ``gettext``, ``ngettext`` and ``_`` for the templates (Jinja's i18n, new style).
    callables: dict[str, Callable[..., Any]] = field(repr=False, compare=False)
    #: How a date and a time join into one, e.g. ``{1}, {0}``.
    joined: str = field(repr=False, compare=False, default="{1}, {0}")

    def due(self, local: datetime) -> str:
        """A local, aware time as this language writes it, with its zone and UTC offset:
        ``Sat, Nov 28, 2026, 9:00 PM JST (UTC+09:00)`` in English."""
        # What babel's format_skeleton("yMMMEd") and format_time("short") give, with their
        # patterns looked up once per language rather than for every message.
        date_pattern, time_pattern = self._patterns
        date = date_pattern.apply(local, self.locale)
        time = time_pattern.apply(local.timetz(), self.locale)
        offset = local.strftime("%z")
        moment = self.joined.replace("{1}", date).replace("{0}", time)
        return f"{moment} {local.tzname()} (UTC{offset[:3]}:{offset[3:]})"

    @functools.cached_property
    def _patterns(self) -> tuple[DateTimePattern, DateTimePattern]:
        """The locale's date pattern of the skeleton ``yMMMEd`` and its short time pattern."""
        skeletons = self.locale.datetime_skeletons
        skeleton = DUE_DATE_SKELETON
        if skeleton not in skeletons:  # the nearest one, as format_skeleton's fuzzy match
            skeleton = match_skeleton(skeleton, skeletons) or skeleton
        date = parse_pattern(skeletons[skeleton])
        return date, parse_pattern(get_time_format("short", locale=self.locale))


def normalise(tag: str | None) -> tuple[str, str]:
    """``(language, locale)`` for a locale as the host stores it: ``fr-CA`` gives ``("fr",
    "fr_CA")``, an unsupported or empty one ``("en", "en")``."""
    text = (tag or "").strip()[:_TAG_LIMIT].split(".", 1)[0].split("@", 1)[0]
    text = text.replace("-", "_")
    language = text.split("_", 1)[0].lower()
    if language not in LANGUAGES:
        return DEFAULT, DEFAULT
    full = language + text[len(language) :]
    return language, full if _TAG.fullmatch(full) else language


def language_for(tag: str | None) -> Language:
    """The `Language` of a recipient whose locale is ``tag`` (see `normalise`)."""
    return _language((tag or "").strip()[:_TAG_LIMIT])


@functools.lru_cache(maxsize=1024)
def _language(given: str) -> Language:
    code, tag = normalise(given)
    if given and not given.replace("-", "_").lower().startswith(code):
        # Once per locale and process: the cache remembers it.
        log.info("unsupported_locale", locale=given, fallback=code)
    return _build(code, tag)


@functools.lru_cache(maxsize=256)
def _build(code: str, tag: str) -> Language:
    try:
        locale = Locale.parse(tag)
    except (UnknownLocaleError, ValueError, TypeError):
        locale = Locale.parse(code)
    translations = catalog(code)
    joined = str(get_datetime_format("medium", locale=locale)).replace("'", "")
    return Language(code, locale, translations, jinja_callables(translations), joined)


@functools.cache
def catalog(code: str) -> gettext.NullTranslations:
    """The compiled catalog of a shipped language (`LANGUAGES`), loaded once.

    Raises:
        FileNotFoundError: the catalog's ``.mo`` file is missing (run ``make i18n``).
    """
    return gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=[code])


def jinja_callables(translations: gettext.NullTranslations) -> dict[str, Callable[..., Any]]:
    """``gettext``, ``ngettext`` and ``_`` for Jinja's i18n extension in its new style.

    The translated string is formatted with the call's variables (``%(name)s``); in an
    autoescaped template the string counts as markup and the variables are escaped. The
    strings are the catalogs', written by whoever ships them, never the host's data.
    """

    @pass_context
    def translate(context: Context, message: str, /, **variables: Any) -> str:
        text = translations.gettext(message)
        if context.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704 (a catalog's string; variables are escaped)
        return text % variables

    @pass_context
    def translate_plural(
        context: Context, singular: str, plural: str, number: int, /, **variables: Any
    ) -> str:
        variables.setdefault("num", number)
        text = translations.ngettext(singular, plural, number)
        if context.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704 (a catalog's string; variables are escaped)
        return text % variables

    return {"gettext": translate, "_": translate, "ngettext": translate_plural}
