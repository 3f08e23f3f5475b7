"""``keel audit …``: check and read the tamper-evident audit file.

    keel audit verify [--file F] [--head HASH]     walk the hash chain; exit 0 intact, 1 broken
    keel audit show [--since 1h|ISO] [--who NAME] [--action PREFIX] [--json]

The file defaults to ``<data_dir>/audit/audit.jsonl``. ``verify`` prints the
head hash: keep it somewhere the stack cannot write (a ticket, another host)
and pass it back with ``--head`` to catch records removed from the end.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import (
    EXIT_RUNTIME,
    exits_on_keel_error,
    print_json,
    stderr_console,
    stdout_console,
)
from agentkeel.errors import InvalidRequest
from agentkeel.telemetry.audit_file import audit_file_path
from agentkeel.telemetry.audit_verify import read_audit_records, verify_audit_file

audit_app = typer.Typer(
    name="audit",
    help="The audit file: verify its hash chain, show who did what.",
    epilog="Example: keel audit verify   (then: keel audit show --since 1h)",
    no_args_is_help=True,
)

FileOption = Annotated[
    Path | None,
    typer.Option("--file", help="The audit file (default: <data dir>/audit/audit.jsonl)."),
]

_SPAN = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _audit_path(ctx: typer.Context, file: Path | None) -> Path:
    if file is not None:
        return file
    return audit_file_path(load_cli_settings(ctx).settings.data_dir)


@audit_app.command(
    "verify",
    epilog="Example: keel audit verify --head 9f2c…   (the head an earlier verify printed)",
)
@exits_on_keel_error
def verify(
    ctx: typer.Context,
    file: FileOption = None,
    head: Annotated[
        str | None,
        typer.Option(
            "--head", help="A head hash kept from an earlier verify: must still be in it."
        ),
    ] = None,
) -> None:
    """Walk the audit file's hash chain; name the first bad record and why (exit 1)."""
    report = verify_audit_file(_audit_path(ctx, file), expect_head=head)
    out = stdout_console()
    if report.ok:
        out.print(f"[green]intact[/]: {report.records} record(s) in {escape(str(report.path))}")
        out.print(f"head: {report.head or '-'}   (keep it elsewhere; check with --head)")
        return
    err = stderr_console()
    where = f" (seq {report.first_bad_seq})" if report.first_bad_seq is not None else ""
    kind = "truncated" if report.truncated else "broken"
    err.print(f"[bold red]{kind}[/]{where}: {escape(report.problem or '')}", soft_wrap=True)
    err.print(
        f"{report.records} record(s) verified before it; last good head: {report.head or '-'}"
    )
    raise typer.Exit(EXIT_RUNTIME)


@audit_app.command(
    "show",
    epilog="Example: keel audit show --since 2h --who admin_token --action rollout.",
)
@exits_on_keel_error
def show(
    ctx: typer.Context,
    file: FileOption = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only records this recent: 30m, 1h, 2d, or an ISO time."),
    ] = None,
    who: Annotated[
        str | None, typer.Option("--who", help="Only records whose actor starts with NAME.")
    ] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Only actions starting with PREFIX.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List audit records, oldest first: when, what, who, outcome, from where."""
    cutoff = parse_since(since) if since else None
    rows = [
        record
        for record in read_audit_records(_audit_path(ctx, file))
        if (cutoff is None or _when(record) >= cutoff)
        and (who is None or str(record.get("actor", "")).startswith(who))
        and (action is None or str(record.get("action", "")).startswith(action))
    ]
    if as_json:
        print_json(rows)
        return
    table = Table("seq", "time", "action", "actor", "outcome", "from", "details")
    for record in rows:
        table.add_row(
            str(record["seq"]),
            str(record["ts"]),
            escape(str(record["action"])),
            escape(str(record["actor"])),
            _outcome(str(record["outcome"])),
            escape(_source(record.get("source"))),
            escape(_details(record.get("details"))),
        )
    stdout_console().print(table)


def parse_since(value: str) -> datetime:
    """``30m``/``1h``/``2d`` ago, or an ISO 8601 time (UTC when it names no zone)."""
    match = _SPAN.match(value.strip())
    if match:
        amount, unit = int(match.group(1)), _UNITS[match.group(2)]
        return datetime.now(tz=UTC) - timedelta(**{unit: amount})
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"--since {value!r} is neither a span (30m, 1h, 2d) nor an ISO time "
            "(2026-12-01T12:00:00Z)."
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _when(record: dict[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def _outcome(outcome: str) -> str:
    return f"[green]{escape(outcome)}[/]" if outcome == "ok" else f"[red]{escape(outcome)}[/]"


def _source(source: Any) -> str:
    if not isinstance(source, dict):
        return "-"
    remote = source.get("remote")
    return f"{source.get('service', '?')}" + (f" ← {remote}" if remote else "")


def _details(details: Any) -> str:
    if not isinstance(details, dict) or not details:
        return ""
    return ", ".join(f"{key}={value}" for key, value in details.items())
