"""``keel sessions …``: the session lifecycle through a replica's admin API.

    keel sessions live                         live sessions by version and replica
    keel sessions prune [--dry-run]            purge transcripts past sessions.retention_days
    keel sessions forget --user U [--org O] [--dry-run]  remove a user's sessions, turns
                                                         and memories

Every command takes ``--url`` (default: the first replica of ``keel up``,
http://127.0.0.1:8081), ``--token-file`` (default: the admin token the
settings or the data directory hold, see :func:`admin_target`) and ``--json``.
The replica does the work, so the same command serves the embedded SQLite
default and a PostgreSQL store shared by many replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import exits_on_keel_error, print_json, stderr_console, stdout_console
from agentkeel.cli.stack import LocalStack
from agentkeel.runtime.admin_client import AgentAdminClient

_T = TypeVar("_T")

sessions_app = typer.Typer(
    name="sessions",
    help="Sessions on the agent replicas: live counts, retention, forgetting a user.",
    epilog="Example: keel sessions forget --user ana --dry-run",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", help="A replica's base URL (default: the first replica, http://127.0.0.1:8081)."
    ),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help="File holding the replicas' admin token (default: server.admin_token_file, "
        "then <data dir>/admin_token, then <secrets_dir>/admin_token).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@dataclass(frozen=True, slots=True)
class AdminTarget:
    """Where ``keel sessions`` sends its requests and the token file it sends."""

    url: str
    token_file: Path


def admin_target(ctx: typer.Context, url: str | None, token_file: Path | None) -> AdminTarget:
    """The replica URL and admin token file for this invocation; an explicit flag wins.

    Both come from the local stack (:class:`~agentkeel.cli.stack.LocalStack`): the
    URL is ``--url``, else the first replica ``keel up`` runs; the token file is
    ``--token-file``, else ``server.admin_token_file``, the data directory's
    ``admin_token`` or the secrets directory's.
    """
    stack = LocalStack.from_settings(load_cli_settings(ctx))
    urls, _source = stack.replica_urls([url] if url else None)
    return AdminTarget(urls[0], stack.admin_token_file(token_file))


def _call(
    ctx: typer.Context,
    url: str | None,
    token_file: Path | None,
    call: Callable[[AgentAdminClient], Awaitable[_T]],
) -> _T:
    target = admin_target(ctx, url, token_file)

    async def run() -> _T:
        async with AgentAdminClient(base_url=target.url, token_file=target.token_file) as api:
            return await call(api)

    return asyncio.run(run())


def _counts_table(title: str, data: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("rows", no_wrap=True)
    table.add_column("count", justify="right")
    for key in ("sessions", "turns", "feedback", "budget_rows"):
        table.add_row(key.replace("_", " "), str(data.get(key, 0)))
    return table


@sessions_app.command("live", epilog="Example: keel sessions live --url http://127.0.0.1:8082")
@exits_on_keel_error
def live(
    ctx: typer.Context,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the live sessions (not ended, not idle) in the shared store, by version and by
    the replica that served them last."""
    report = _call(ctx, url, token_file, lambda api: api.live())
    if as_json:
        print_json(report)
        return
    console = stdout_console()
    table = Table(title=f"{report['total']} live session(s)", title_justify="left")
    table.add_column("by", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("live", justify="right")
    for version, count in report["by_version"].items():
        table.add_row("version", escape(version), str(count))
    for replica, count in report["by_replica"].items():
        table.add_row("replica", escape(replica), str(count))
    console.print(table)
    console.print(
        f"replica {escape(report['replica'])} (version {escape(report['version'])}) "
        f"served {report['live']} of them last"
    )


@sessions_app.command("prune", epilog="Example: keel sessions prune --dry-run")
@exits_on_keel_error
def prune(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; remove nothing.")
    ] = False,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Purge the transcripts of sessions that ended more than sessions.retention_days ago
    (in batches, so turns are not stalled). Replicas also do this on their own every
    sessions.purge_interval_s."""
    with stderr_console().status("Purging ended sessions…", spinner="dots"):
        result = _call(ctx, url, token_file, lambda api: api.prune(dry_run=dry_run))
    if as_json:
        print_json(result)
        return
    days = result.get("retention_days")
    verb = "would remove (dry run: nothing removed)" if dry_run else "removed"
    stdout_console().print(_counts_table(f"ended over {days:g} day(s) ago: {verb}", result))


@sessions_app.command("forget", epilog="Example: keel sessions forget --user ana --org acme --yes")
@exits_on_keel_error
def forget(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", help="The user id the sessions were made with.")],
    org: Annotated[
        str | None,
        typer.Option(
            "--org",
            help="Only this organization's user (default: the user id in every organization).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; remove nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove everything the agent servers hold about a user: their sessions, turns,
    feedback and budget rows, and (when a memory server is configured) every memory in
    their namespaces. With --org, only that organization's user of that id; without it,
    the user id in every organization. Writes an audit line on the replica."""
    who = f"user {user!r}" + (f" of organization {org!r}" if org else " in every organization")
    if not dry_run and not yes:
        typer.confirm(
            f"Remove every session, turn and memory of {who}? This cannot be undone.",
            abort=True,
        )
    result = _call(
        ctx, url, token_file, lambda api: api.forget(user, dry_run=dry_run, organization=org)
    )
    if as_json:
        print_json(result)
        return
    console = stdout_console()
    memory = result.get("memory") or {}
    namespaces: dict[str, Any] = memory.get("namespaces") or {}
    if result["sessions"] == 0 and not any(namespaces.values()):
        found = "would be removed" if dry_run else "was removed"
        console.print(f"no sessions or memories found for {escape(who)}; nothing {found}")
        return
    verb = "would remove (dry run: nothing removed)" if dry_run else "removed"
    console.print(_counts_table(f"{escape(who)}: {verb}", result))
    if not memory.get("configured"):
        console.print("no memory server is configured on the replica; no memories touched")
    for namespace, count in namespaces.items():
        shown = "would be emptied" if count is None else f"{count} memories deleted"
        console.print(f"memory namespace {escape(namespace)}: {shown}")
