"""``keel usage …``: tokens, spend and quota headroom per user, from the session store.

    keel usage top [--period day|month] [--n 20] [--org O] [--json]
    keel usage show --user U [--org O] [--period day|month] [--json]

Both read the store the settings name (``store.url``, default the SQLite file in
the data directory), where every replica adds each model call's usage, so they
work with no replica running. Quotas are the settings' own (flags and per-user
overrides live on the replicas: ``GET /admin/usage`` applies them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import exits_on_keel_error, print_json, stdout_console
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import NotFound
from agentkeel.resilience.windows import Period
from agentkeel.runtime.stores import SessionBackend, open_store
from agentkeel.runtime.usage_report import MAX_TOP, top_report, user_report
from agentkeel.storage.urls import SqlitePath, parse_store_url

_T = TypeVar("_T")

usage_app = typer.Typer(
    name="usage",
    help="Tokens, spend and quota headroom per user, from the session store.",
    epilog="Example: keel usage top --period month --n 10",
    no_args_is_help=True,
)


class PeriodChoice(StrEnum):
    """The UTC window a report covers."""

    day = "day"
    month = "month"

    @property
    def period(self) -> Period:
        return "day" if self is PeriodChoice.day else "month"

    @property
    def spoken(self) -> str:
        return "today" if self is PeriodChoice.day else "this month"


PeriodOption = Annotated[
    PeriodChoice,
    typer.Option("--period", help="day: today (UTC); month: this UTC month so far."),
]
OrgOption = Annotated[str | None, typer.Option("--org", help="Only this organization's users.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _with_store(settings: KeelSettings, call: Callable[[SessionBackend], Awaitable[_T]]) -> _T:
    url = settings.store_url()
    target = parse_store_url(url, what="store URL")
    if isinstance(target, SqlitePath) and not target.path.exists():
        raise NotFound(
            f"No session store at {target.path}, so no usage is recorded there yet. Point "
            "store.url (or --data-dir) at the store the replicas use.",
            code="store_not_found",
        )

    async def run() -> _T:
        store = open_store(url, pool_size=1)
        await store.open()
        try:
            return await call(store)
        finally:
            await store.aclose()

    return asyncio.run(run())


def _tokens(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _quota(quota: dict[str, Any]) -> str:
    """What is left of a quota and its share of the limit: ``1,993,400 (99%)``."""
    if quota["limit"] is None:
        return "no quota"
    share = 100 * quota["headroom"] / quota["limit"]
    return f"{_tokens(quota['headroom'])} ({share:.0f}%)"


@usage_app.command(
    "top",
    epilog="Example: keel usage top --period month --n 10 --org acme --json",
)
@exits_on_keel_error
def top(
    ctx: typer.Context,
    period: PeriodOption = PeriodChoice.day,
    n: Annotated[int, typer.Option("--n", min=1, max=MAX_TOP, help="How many users.")] = 20,
    org: OrgOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the users with the most tokens today or this month.

    Per user: input and output tokens, spend (calls on the platform's keys), tokens on
    their own keys (BYOK), and what is left of their quota for the period."""
    settings = load_cli_settings(ctx).settings
    report = _with_store(
        settings,
        lambda store: top_report(
            store,
            period=period.period,
            top=n,
            organization=org,
            quotas_for=lambda user, organization: settings.quotas,
            now=time.time(),
        ),
    )
    if as_json:
        print_json(report)
        return
    console = stdout_console()
    where = f" of {escape(org)}" if org else ""
    if not report["users"]:
        console.print(f"no usage{where} {period.spoken} (since {report['start']}, UTC)")
        return
    table = Table(
        title=f"top {len(report['users'])} user(s){where} {period.spoken} "
        f"(since {report['start']}, UTC)",
        title_justify="left",
    )
    for column in ("user", "org"):
        table.add_column(column, overflow="fold")
    for column in ("input", "output", "total", "spend $", "byok", "quota left"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in report["users"]:
        table.add_row(
            escape(row["user"]),
            escape(row["organization"] or "-"),
            _tokens(row["input_tokens"]),
            _tokens(row["output_tokens"]),
            _tokens(row["total_tokens"]),
            f"{row['spend']:.4f}",
            _tokens(row["byok_tokens"]),
            _quota(row["quota"]),
        )
    console.print(table)


@usage_app.command(
    "show",
    epilog="Example: keel usage show --user ana --org acme --period month",
)
@exits_on_keel_error
def show(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", help="The user id the sessions were made with.")],
    org: Annotated[
        str | None,
        typer.Option("--org", help="The user's organization (default: the user without one)."),
    ] = None,
    period: PeriodOption = PeriodChoice.day,
    as_json: JsonOption = False,
) -> None:
    """Show one user's usage by day and model, and their quota headroom.

    Today or this month, with what is left of the user's daily and monthly quotas (and
    of their organization's, with --org)."""
    settings = load_cli_settings(ctx).settings
    report = _with_store(
        settings,
        lambda store: user_report(
            store,
            user,
            organization=org,
            period=period.period,
            quotas=settings.quotas,
            now=time.time(),
        ),
    )
    if as_json:
        print_json(report)
        return
    console = stdout_console()
    who = f"user {escape(user)}" + (f" of {escape(org)}" if org else "")
    if report["usage"]:
        table = Table(
            title=f"{who}: {period.spoken} (since {report['start']}, UTC)",
            title_justify="left",
        )
        for column in ("day", "model"):
            table.add_column(column, no_wrap=True)
        for column in ("input", "output", "calls", "spend $", "byok"):
            table.add_column(column, justify="right", no_wrap=True)
        for row in report["usage"]:
            table.add_row(
                row["day"],
                escape(row["model"]),
                _tokens(row["input_tokens"]),
                _tokens(row["output_tokens"]),
                str(row["calls"]),
                f"{row['spend']:.4f}",
                _tokens(row["byok_tokens"]),
            )
        console.print(table)
    else:
        console.print(f"no usage for {who} {period.spoken} (since {report['start']}, UTC)")
    quotas = Table(title="quota headroom", title_justify="left")
    for column in ("quota", "window", "used", "limit", "left"):
        quotas.add_column(
            column, justify="right" if column in ("used", "limit", "left") else "left"
        )
    for scope, windows in report["quota"].items():
        for window, quota in windows.items():
            quotas.add_row(
                scope,
                window,
                _tokens(quota["used"]),
                _tokens(quota["limit"]),
                _tokens(quota["headroom"]),
            )
    console.print(quotas)
