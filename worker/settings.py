"""The one frozen settings object, read from the ``REMINDERS_*`` environment."""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from periodiq import CronSpec
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from outbox.signing import secret_key
from worker.errors import ConfigError
from worker.reminders.digest_slots import BURST_THRESHOLD

ENV_PREFIX = "REMINDERS_"
# Standard Webhooks asks for secrets of 24 to 64 bytes.
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64
MAX_FROM_NAME = 78
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2")


def parse_duration(value: object, *, zero: bool = False) -> timedelta:
    """Read ``3600``, ``90m``, ``24h``, ``2d`` or a timedelta as a positive duration."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a duration (seconds, or a number with ms/s/m/h/d)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if seconds < 0 or (seconds == 0 and not zero):
        raise ValueError(f"{value!r} must be {'zero or more' if zero else 'longer than zero'}")
    return timedelta(seconds=seconds)


def parse_cron(value: str) -> CronSpec:
    """Parse a five-field cron expression (UTC) so that Sunday written as 0 also fires.

    periodiq compares the day of week with ``isoweekday()`` (Sunday is 7), so a schedule
    naming Sunday as ``0``, ``sun`` or ``@weekly`` would never fire; we add 7 wherever 0 is.
    """
    text = value.strip()
    fields = text.split()
    if not (text.startswith("@") or len(fields) == 5):
        raise ValueError(f"{value!r} is not a cron expression of five fields (m h dom mon dow)")
    try:
        spec = CronSpec.parse(text)
    except (KeyError, ValueError, IndexError) as exc:
        raise ValueError(f"{value!r} is not a valid cron expression") from exc
    if 0 in spec.dow and 7 not in spec.dow:
        spec = spec.replace(dow=[*spec.dow, 7])
    ranges = ((spec.minute, 0, 59), (spec.hour, 0, 23), (spec.dom, 1, 31), (spec.month, 1, 12))
    if not spec.dow or any(not v or min(v) < lo or max(v) > hi for v, lo, hi in ranges):
        raise ValueError(f"{value!r} has a field out of range")
    return spec


def database_url(value: str) -> str:
    """``value`` as the URL the service connects with: SQLite, or PostgreSQL with psycopg 3.

    psycopg 3 is the driver installed with the service, so a PostgreSQL URL that names no
    driver (``postgres://``, ``postgresql://``, as hosting platforms hand them out) or names
    psycopg2 (whose connection parameters are libpq's too) is read as ``postgresql+psycopg://``.
    """
    text = value.strip()
    scheme, separator, rest = text.partition("://")
    if separator and scheme in _POSTGRES_SCHEMES:
        return f"postgresql+psycopg://{rest}"
    if text.startswith("sqlite:"):
        return text
    raise ValueError("must be a sqlite:/// or postgresql:// URL (PostgreSQL through psycopg 3)")


def task_url(value: str) -> str:
    """``value`` as a task link: an http(s) URL with one ``{task_id}`` placeholder."""
    text = value.strip()
    example = "as in https://app.example.com/tasks/{task_id}"
    if text.count("{task_id}") != 1:
        raise ValueError(f"must contain {{task_id}} exactly once, {example}")
    rest = text.replace("{task_id}", "1")
    if "{" in rest or "}" in rest or not rest.isprintable() or any(c.isspace() for c in rest):
        raise ValueError(f"must be a URL without spaces or other braces, {example}")
    parsed = urlsplit(rest)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"must be an http:// or https:// URL, {example}")
    if "{task_id}" in urlsplit(text).netloc:
        raise ValueError(f"must have {{task_id}} in its path or query, {example}")
    return text


def public_url(value: str) -> str:
    """``value`` as the base of the links: an http(s) URL with a host, no query or fragment,
    without its trailing slash."""
    text = value.strip().rstrip("/")
    parsed = urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("must be an http:// or https:// URL, as in https://reminders.example.com")
    if parsed.query or parsed.fragment or not text.isprintable() or any(c.isspace() for c in text):
        raise ValueError("must be a URL without spaces, query or fragment")
    return text


def _empty_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
DurationOrZero = Annotated[timedelta, BeforeValidator(lambda v: parse_duration(v, zero=True))]
Cron = Annotated[str, AfterValidator(lambda v: (parse_cron(v), v.strip())[1])]
OptionalText = Annotated[str | None, BeforeValidator(_empty_is_none)]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_empty_is_none)]


class Settings(BaseSettings):
    """Configuration of every process; see the README for the meaning of each variable."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    database_url: str = "sqlite:///reminders.db"
    schema_file: OptionalText = None
    broker_url: OptionalText = None
    scan_schedule: Cron = "* * * * *"
    lookahead: Duration = timedelta(hours=24)
    channel: Literal["console", "smtp", "webhook", "apprise"] = "console"

    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: OptionalText = None
    smtp_password: OptionalSecret = None
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    mail_from: str = "reminders@localhost"
    mail_from_name: str = "Reminders"
    mail_domain: str = "localhost"
    template_dir: OptionalText = None
    task_url: OptionalText = None

    public_url: OptionalText = None
    link_secret: OptionalSecret = None
    link_lifetime: Duration = timedelta(days=30)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    http_timeout: Duration = timedelta(seconds=10)

    webhook_url: OptionalText = None
    webhook_secret: OptionalSecret = None
    webhook_allow_http_localhost: bool = False

    metrics_port: Annotated[int | None, BeforeValidator(_empty_is_none)] = Field(
        default=None, ge=1, le=65535
    )
    metrics_host: str = "127.0.0.1"

    max_attempts: int = Field(default=8, ge=1, le=100)
    send_timeout: Duration = timedelta(seconds=10)
    db_statement_timeout: Duration = timedelta(seconds=30)
    lease: Duration = timedelta(seconds=60)
    relay_batch: int = Field(default=100, ge=1, le=10_000)
    relay_window: DurationOrZero = timedelta(milliseconds=500)
    scan_batch: int = Field(default=5_000, ge=1, le=1_000_000)
    scan_connections: int = Field(default=2, ge=1, le=16)
    retry_base: Duration = timedelta(seconds=30)
    retry_cap: Duration = timedelta(hours=1)
    retry_cap_until_expiry: Duration = timedelta(minutes=15)
    max_clock_offset: Duration = timedelta(seconds=2)
    #: "A few": when a quiet window ends with more reminders held to it than this, they are
    #: to go out as one digest (`worker.reminders.digest_slots.release_as_digest`).
    digest_burst: int = Field(default=BURST_THRESHOLD, ge=0, le=1000)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        return database_url(value)

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(
            ("redis://", "rediss://", "amqp://", "amqps://")
        ):
            raise ValueError("must be empty (in-process broker), redis://… or amqp://…")
        return value

    @field_validator("mail_from")
    @classmethod
    def _address(cls, value: str) -> str:
        if "@" not in value or any(c in value for c in "\r\n<>, "):
            raise ValueError("must be one plain e-mail address")
        return value

    @field_validator("mail_from_name")
    @classmethod
    def _display_name(cls, value: str) -> str:
        text = value.strip()
        if not text.isprintable() or len(text) > MAX_FROM_NAME:
            raise ValueError(f"must be one line of at most {MAX_FROM_NAME} printable characters")
        return text

    @field_validator("template_dir")
    @classmethod
    def _folder(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_dir():
            raise ValueError("must be a folder of message templates")
        return value

    @field_validator("task_url")
    @classmethod
    def _task_link(cls, value: str | None) -> str | None:
        return None if value is None else task_url(value)

    @field_validator("mail_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if not _HOST_NAME.fullmatch(value):
            raise ValueError("must be a host name")
        return value

    @field_validator("public_url")
    @classmethod
    def _public(cls, value: str | None) -> str | None:
        return None if value is None else public_url(value)

    @field_validator("metrics_host", "http_host")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        text = value.strip()
        try:
            ipaddress.ip_address(text)
        except ValueError:
            if not _HOST_NAME.fullmatch(text):
                raise ValueError(
                    "must be an IP address (127.0.0.1, 0.0.0.0, ::) or a host name"
                ) from None
        return text

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        """``REMINDERS_X_FILE`` names a file (a mounted secret) holding the value of X."""
        if not isinstance(data, dict):
            return data
        for field in _SECRET_FIELDS:
            variable = f"{ENV_PREFIX}{field.upper()}_FILE"
            path = data.pop(f"{field}_file", None) or os.environ.get(variable)
            if path and not data.get(field):
                try:
                    data[field] = Path(path).read_text(encoding="utf-8").strip()
                except OSError as error:
                    raise ValueError(f"{variable}: cannot read {path}: {error.strerror}") from None
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.channel == "webhook":
            self._check_webhook()
        if self.public_url is not None and self.link_secret is None:
            raise ValueError(
                "REMINDERS_LINK_SECRET: required when REMINDERS_PUBLIC_URL is set (it signs "
                "the links)"
            )
        for one in self.link_secrets:
            if len(one.encode()) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"REMINDERS_LINK_SECRET: each secret must be at least {MIN_SECRET_BYTES} "
                    f"bytes, one is {len(one.encode())}"
                )
        if self.relay_window >= self.lease / 2:
            raise ValueError("REMINDERS_RELAY_WINDOW: must be shorter than half of REMINDERS_LEASE")
        if self.smtp_starttls and self.smtp_ssl:
            raise ValueError("REMINDERS_SMTP_STARTTLS: cannot be combined with REMINDERS_SMTP_SSL")
        return self

    def _check_webhook(self) -> None:
        url, secret = self.webhook_url, self.webhook_secret
        if not url:
            raise ValueError("REMINDERS_WEBHOOK_URL: required when REMINDERS_CHANNEL=webhook")
        parsed = urlsplit(url)
        local = parsed.hostname in ("localhost", "127.0.0.1", "::1")
        if parsed.scheme == "http" and not (local and self.webhook_allow_http_localhost):
            raise ValueError(
                "REMINDERS_WEBHOOK_URL: must be https:// (http:// only to localhost, with "
                "REMINDERS_WEBHOOK_ALLOW_HTTP_LOCALHOST=true)"
            )
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("REMINDERS_WEBHOOK_URL: must be an https:// URL")
        if secret is None:
            raise ValueError("REMINDERS_WEBHOOK_SECRET: required when REMINDERS_CHANNEL=webhook")
        for one in secret.get_secret_value().split():
            try:
                size = len(secret_key(one))
            except ValueError as error:
                raise ValueError(f"REMINDERS_WEBHOOK_SECRET: {error}") from None
            if not MIN_SECRET_BYTES <= size <= MAX_SECRET_BYTES:
                raise ValueError(
                    f"REMINDERS_WEBHOOK_SECRET: each secret must be {MIN_SECRET_BYTES} to "
                    f"{MAX_SECRET_BYTES} bytes (whsec_<base64> or text), one is {size}"
                )

    @property
    def webhook_secrets(self) -> list[str]:
        """The signing secrets, newest first (several during a rotation)."""
        return [] if self.webhook_secret is None else self.webhook_secret.get_secret_value().split()

    @property
    def link_secrets(self) -> list[str]:
        """The link secrets, comma-separated: the first signs, every one verifies."""
        if self.link_secret is None:
            return []
        return [
            one.strip() for one in self.link_secret.get_secret_value().split(",") if one.strip()
        ]

    @property
    def scan_cron(self) -> CronSpec:
        """The scan schedule as periodiq's cron object (Sunday fixed, see `parse_cron`)."""
        return parse_cron(self.scan_schedule)

    def describe(self) -> dict[str, Any]:
        """Every setting by environment variable, secrets shown as ``***``."""
        shown: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                shown[ENV_PREFIX + name.upper()] = "***"
            elif name in _URL_FIELDS and value:
                shown[ENV_PREFIX + name.upper()] = hide_password(value)
            elif isinstance(value, timedelta):
                shown[ENV_PREFIX + name.upper()] = f"{value.total_seconds():g}s"
            else:
                shown[ENV_PREFIX + name.upper()] = value
        return shown


_SECRET_FIELDS = {"smtp_password", "webhook_secret", "link_secret"}
_URL_FIELDS = {"database_url", "broker_url"}  # shown with the password of their user hidden


def hide_password(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    if not first["loc"]:
        return message
    field = str(first["loc"][0])
    variable = ENV_PREFIX + field.upper()
    given = first.get("input")
    shown = repr(hide_password(given) if field in _URL_FIELDS and isinstance(given, str) else given)
    if field in _SECRET_FIELDS or isinstance(first.get("input"), dict | None) or shown in message:
        return f"{variable}: {message}"
    return f"{variable}: {message} (got {shown})"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment; a bad value raises a one-line `ConfigError`."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(_one_line(error)) from None
