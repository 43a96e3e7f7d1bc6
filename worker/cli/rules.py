"""``reminders rules set``, ``list`` and ``clear``: the default reminder rule and each user's.

A rule is the lead times before a task's due time, the overdue nudges, and the local time an
all-day task's reminders fire at. A user's rule is theirs; a user without one follows the
default rule; with no default rule set, one reminder ``REMINDERS_LOOKAHEAD`` ahead.
Bad input is refused with one line on stderr and exit 2, and changes nothing.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from worker.cli import common
from worker.cli.common import JsonOption
from worker.errors import UsageError
from worker.reminders import rule_store
from worker.reminders.rule_store import StoredRule
from worker.reminders.rules import (
    MAX_LEADS,
    MAX_OVERDUE_COUNT,
    Rule,
    builtin_rule,
    parse_leads,
    parse_overdue,
    parse_time_of_day,
)

MAX_LIMIT = 10_000
_COUNT = re.compile(r"^[xX]\d+$")

rules_app = typer.Typer(
    help="Reminder rules: lead times, overdue nudges, all-day tasks' hour. "
    "Reads REMINDERS_DATABASE_URL.",
    no_args_is_help=True,
)
DefaultOption = Annotated[bool, typer.Option("--default", help="The default rule.")]
UserOption = Annotated[
    str | None,
    typer.Option("--user", metavar="ID", help="This user's rule (the users table's id)."),
]


def register(app: typer.Typer) -> None:
    """Add the ``rules`` group to the ``reminders`` app."""
    app.add_typer(rules_app, name="rules")


@rules_app.command(
    "set", context_settings={"allow_extra_args": True, "allow_interspersed_args": True}
)
def set_rule(
    ctx: typer.Context,
    *,
    default: DefaultOption = False,
    user: UserOption = None,
    before: Annotated[
        str | None,
        typer.Option(
            metavar="LIST",
            help=f"Lead times before the due time, comma-separated (24h,1h,0m); at most "
            f"{MAX_LEADS}, each 0 to 365d; none for no reminder before it.",
        ),
    ] = None,
    overdue: Annotated[
        str | None,
        typer.Option(
            metavar="EVERY[xCOUNT]",
            help=f"While the task stays open after its due time, a nudge every EVERY (1m to "
            f"365d), COUNT at most (1 to {MAX_OVERDUE_COUNT}; 1 when left out): 1d x3. "
            "none for no nudges.",
        ),
    ] = None,
    all_day_at: Annotated[
        str | None,
        typer.Option(
            metavar="HH:MM",
            help="The local time (the recipient's zone) of an all-day task's due time.",
        ),
    ] = None,
) -> None:
    """Set the default rule, or one user's; mark its open tasks for planning.

    The next scan plans the reminders of the rule's open tasks not sent yet again; sent ones
    are never sent again. An option left out keeps the rule's value; a user's new rule starts
    from the rule the user follows now (the default rule, or one reminder REMINDERS_LOOKAHEAD
    ahead).

    Reads REMINDERS_DATABASE_URL.

    Exit 0 when set (also when unchanged), 1 when the database fails, 2 for bad input: then
    nothing changes.
    """
    user_id = _scope(default, user)
    overdue = _with_count(overdue, ctx.args)
    leads = None if before is None else parse_leads(before)
    nudges = None if overdue is None else parse_overdue(overdue)
    at = None if all_day_at is None else parse_time_of_day(all_day_at)
    services = common.ready_services()
    settings = services.settings
    with services.session_factory.begin() as session:
        base = rule_store.effective_rule(session, user_id, settings)
        every, count = (base.overdue_every, base.overdue_count) if nudges is None else nudges
        rule = Rule(
            before=base.before if leads is None else leads,
            overdue_every=every,
            overdue_count=count,
            all_day_at=base.all_day_at if at is None else at,
        )
        change = rule_store.set_rule(
            session, services.host, user_id, rule, now=services.clock.now()
        )
    who = _who(user_id)
    if not change.changed:
        common.out.print(common.plain(f"{who}: {rule.describe()} (unchanged)"))
        return
    common.out.print(common.plain(f"{who} set: {rule.describe()}; {_replanned(change.replanned)}"))


@rules_app.command("list")
def list_rules(
    user: UserOption = None,
    limit: Annotated[int, typer.Option(help="At most this many users' rules.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """The default rule (the one set, or the built-in one) and the users' rules, by user id.

    Reads REMINDERS_DATABASE_URL and REMINDERS_LOOKAHEAD.

    Exit 0 when done, 1 when the database fails, 2 for bad usage.
    """
    only = None if user is None else common.user_id(user)
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"--limit: must be between 1 and {MAX_LIMIT}")
    services = common.ready_services()
    with services.session_factory() as session:
        default = rule_store.stored_rule(session, None)
        if only is None:
            users = rule_store.stored_rules(session, users_only=True, limit=limit + 1)
            total = rule_store.count_user_rules(session) if len(users) > limit else len(users)
        else:
            users = rule_store.stored_rules(session, user_id=only)
            total = len(users)
    users = users[:limit]
    builtin = builtin_rule(services.settings.lookahead)
    if as_json:
        common.print_json(
            {
                "default": _document(default, builtin),
                "users": [_document(stored, builtin) for stored in users],
                "total": total,
                "truncated": total > len(users),
            }
        )
        return
    table = Table(title="Reminder rules, times in UTC", box=box.SIMPLE_HEAD)
    for name in ("rule", "before", "overdue", "all-day at", "updated"):
        table.add_column(name, no_wrap=True)
    rows = [(default, "default" if default else "default (REMINDERS_LOOKAHEAD)")]
    rows += [(stored, f"user {stored.user_id}") for stored in users]
    for stored, name in rows:
        rule = builtin if stored is None else stored.rule
        table.add_row(
            name,
            rule.before_text(),
            rule.overdue_text(),
            f"{rule.all_day_at:%H:%M}",
            "-" if stored is None else common.when(stored.updated_at),
        )
    common.out.print(table)
    if total > len(users):
        common.out.print(f"showing {len(users):,} of {total:,} users' rules; raise --limit")


@rules_app.command("clear")
def clear_rule(default: DefaultOption = False, user: UserOption = None) -> None:
    """Delete a user's rule (they follow the default rule again) or the default rule (one
    reminder REMINDERS_LOOKAHEAD ahead again); re-plan the reminders not sent yet.

    Reads REMINDERS_DATABASE_URL.

    Exit 0 when cleared (also when there was no such rule), 1 when the database fails,
    2 for bad usage.
    """
    user_id = _scope(default, user)
    services = common.ready_services()
    with services.session_factory.begin() as session:
        change = rule_store.clear_rule(session, services.host, user_id)
    who = _who(user_id)
    if not change.changed:
        common.out.print(common.plain(f"{who}: none set, nothing cleared"))
        return
    then = "the default rule applies" if user_id is not None else "REMINDERS_LOOKAHEAD applies"
    common.out.print(common.plain(f"{who} cleared: {then}; {_replanned(change.replanned)}"))


def _scope(default: bool, user: str | None) -> int | None:
    """The user id a command is for (None: the default rule), from --default or --user."""
    if default and user is not None:
        raise UsageError("give --default or --user ID, not both")
    if not default and user is None:
        raise UsageError("give --default or --user ID: which rule?")
    return None if default else common.user_id(user or "")


def _with_count(overdue: str | None, extra: list[str]) -> str | None:
    """``--overdue 1d x3`` unquoted: the count comes as an argument of its own."""
    if not extra:
        return overdue
    if overdue is not None and len(extra) == 1 and _COUNT.match(extra[0]):
        return f"{overdue} {extra[0]}"
    raise UsageError(f"unexpected argument {extra[0]!r} (lists take no spaces: --before 1d,1h)")


def _who(user_id: int | None) -> str:
    return "default rule" if user_id is None else f"rule of user {user_id}"


def _replanned(count: int) -> str:
    return f"{count:,} open task(s) to plan again at the next scan"


def _document(stored: StoredRule | None, builtin: Rule) -> dict[str, Any]:
    """A rule as the JSON document shows it; the built-in one where none is stored."""
    rule = builtin if stored is None else stored.rule
    return {
        "user_id": None if stored is None else stored.user_id,
        "stored": stored is not None,
        **rule.document(),
        "updated_at": None if stored is None else common.iso(stored.updated_at),
    }
