"""``keel logs …``: the JSON log files every service writes under ``keel up``.

    keel logs trace CORRELATION_ID [--since 7d] [--json] [--dir DIR]
    keel logs tail [-f] [--service S] [--category C] [--session ID] [--level L] [-n N] [--json]
    keel logs prune [--dry-run] [--category C] [--json] [--dir DIR]

The directory is ``--dir``, else ``logging.dir``, else ``<data dir>/logs`` (the
global ``--data-dir``), where ``keel up`` has its children write
``<category>/<service>.jsonl``. ``prune`` also prunes the children's stdout files,
``<data dir>/logs/<service>.log`` (in ``--dir`` when given).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agentkeel.cli.audit_cmd import parse_since
from agentkeel.cli.auditing import record_audit
from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import (
    exits_on_keel_error,
    format_bytes,
    print_json,
    stderr_console,
    stdout_console,
)
from agentkeel.errors import NotFound
from agentkeel.ops.log_reader import LineFilter, LogFollower, LogLine, last_lines, read_lines
from agentkeel.ops.log_retention import PruneReport, prune_logs
from agentkeel.telemetry.audit import audit
from agentkeel.telemetry.audit_file import audit_file_path
from agentkeel.telemetry.log_categories import Category

logs_app = typer.Typer(
    name="logs",
    help="The services' JSON log files: one request's timeline across services, the latest "
    "lines, retention.",
    epilog="Example: keel logs trace 4f2a9c0e1b7d4e55   (the X-Correlation-ID of a response)",
    no_args_is_help=True,
)


class LevelChoice(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="The log directory (default: logging.dir, else <data dir>/logs)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_LEVEL_STYLE = {"warning": "yellow", "error": "red", "critical": "bold red", "debug": "dim"}
_FOLLOW_POLL_S = 0.25
_TRACE_SINCE = "7d"


def _log_dir(ctx: typer.Context, directory: Path | None) -> Path:
    if directory is not None:
        return directory
    settings = load_cli_settings(ctx).settings
    return settings.logging.directory(settings.data_dir)


def _require_dir(directory: Path) -> None:
    if not directory.is_dir():
        raise NotFound(
            f"No log directory at {directory}. keel up writes its services' logs there "
            "(<data dir>/logs, or logging.dir); point --data-dir at the data directory it "
            "uses, or pass --dir."
        )


def _level(level: str) -> str:
    style = _LEVEL_STYLE.get(level)
    return f"[{style}]{escape(level)}[/]" if style else escape(level)


@logs_app.command(
    "trace", epilog="Example: keel logs trace 4f2a9c0e1b7d4e55 --json   (or --dir .keel/logs)"
)
@exits_on_keel_error
def trace(
    ctx: typer.Context,
    correlation_id: Annotated[
        str, typer.Argument(help="The correlation id (a response's X-Correlation-ID header).")
    ],
    since: Annotated[
        str,
        typer.Option(
            "--since",
            help="Only lines this recent: 30m, 12h, 7d, or an ISO time (default: 7d). "
            "Files whose lines are all older are not read.",
        ),
    ] = _TRACE_SINCE,
    as_json: JsonOption = False,
    directory: DirOption = None,
) -> None:
    """Every line of every service and category with this correlation id, as one timeline."""
    cutoff = parse_since(since)
    where = _log_dir(ctx, directory)
    _require_dir(where)
    with stderr_console().status(f"Reading the log files under {escape(str(where))}..."):
        scan = read_lines(where, LineFilter(correlation_id=correlation_id, since=cutoff))
    if not scan.lines:
        raise NotFound(
            f"No log line since {cutoff.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC carries "
            f"correlation id {correlation_id!r}: "
            f"looked in {scan.files} file(s) of {', '.join(c.value for c in Category)} under "
            f"{where}. Check the id (the X-Correlation-ID header of the response), the "
            "directory (--data-dir, --dir) and --since; lines older than their category's "
            "retention are pruned."
        )
    if as_json:
        print_json([line.data for line in scan.lines])
        return
    first = scan.lines[0].at
    services = sorted({line.service for line in scan.lines})
    span = (scan.lines[-1].at - first).total_seconds()
    table = Table(
        title=f"correlation id {escape(correlation_id)}: {len(scan.lines)} line(s) from "
        f"{', '.join(escape(s) for s in services)} over {span * 1000:.3f} ms",
        title_justify="left",
    )
    table.add_column("service", no_wrap=True)
    table.add_column("+offset", justify="right", no_wrap=True)
    table.add_column("level", no_wrap=True)
    table.add_column("category", no_wrap=True)
    table.add_column("message", overflow="fold")
    for line in scan.lines:
        table.add_row(
            escape(line.service),
            f"+{(line.at - first).total_seconds() * 1000:.3f} ms",
            _level(line.level),
            escape(line.category),
            escape(line.message),
        )
    stdout_console().print(table)
    if scan.skipped:
        stderr_console().print(
            f"[dim]{scan.skipped} line(s) that are not JSON log lines skipped[/]"
        )


@logs_app.command(
    "tail",
    epilog="Example: keel logs tail -f --service replica-1 --category error --level warning",
)
@exits_on_keel_error
def tail(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")
    ] = False,
    service: Annotated[
        list[str] | None,
        typer.Option(
            "--service",
            "-s",
            help="Only this service (repeatable): router, memory, tools, replica-1, ...",
        ),
    ] = None,
    category: Annotated[
        list[Category] | None,
        typer.Option("--category", "-c", help="Only this category (repeatable)."),
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Only lines of this session id.")
    ] = None,
    level: Annotated[
        LevelChoice | None, typer.Option("--level", "-l", help="Only lines at this level or above.")
    ] = None,
    count: Annotated[
        int, typer.Option("--lines", "-n", min=0, help="How many of the latest lines to print.")
    ] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each line as the JSON object it is (JSON lines).")
    ] = False,
    directory: DirOption = None,
) -> None:
    """The latest lines of every service, merged in time order; with -f, new ones as they come."""
    where = _log_dir(ctx, directory)
    _require_dir(where)
    keep = LineFilter(
        services=frozenset(service) if service else None,
        categories=frozenset(c.value for c in category) if category else None,
        session_id=session,
        min_level=level.value if level else None,
    )
    follower = LogFollower(where, keep) if follow else None
    try:
        limits = follower.limits() if follower is not None else None
        with stderr_console().status(f"Reading the log files under {escape(str(where))}..."):
            history = last_lines(where, keep, count=count, limits=limits)
        for line in history.lines:
            _print_line(line, as_json=as_json)
        if follower is None:
            return
        while True:
            for line in follower.poll():
                _print_line(line, as_json=as_json)
            time.sleep(_FOLLOW_POLL_S)
    except KeyboardInterrupt:
        return
    finally:
        if follower is not None:
            follower.close()


def _print_line(line: LogLine, *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(line.data, ensure_ascii=False))
        return
    # Padded before markup, so the columns line up whatever the styles.
    level = _level(line.level) + " " * max(0, 7 - len(line.level))
    stdout_console().print(
        f"[dim]{_iso(line.at)}[/] {escape(line.service.ljust(12))} {level} "
        f"[cyan]{escape(line.category.ljust(15))}[/] {escape(line.message)}",
        soft_wrap=True,
    )


@logs_app.command("prune", epilog="Example: keel logs prune --dry-run   (then: keel logs prune)")
@exits_on_keel_error
def prune(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only say what would be deleted.")
    ] = False,
    category: Annotated[
        list[Category] | None,
        typer.Option("--category", "-c", help="Only this category (repeatable)."),
    ] = None,
    as_json: JsonOption = False,
    directory: DirOption = None,
) -> None:
    """Delete each category's files whose lines are all older than its
    logging.retention_days, and empty the stdout files (<service>.log) as old as error's."""
    loaded = load_cli_settings(ctx)
    settings = loaded.settings
    where = directory or settings.logging.directory(settings.data_dir)
    report = prune_logs(
        where,
        settings.logging,
        now=time.time(),
        dry_run=dry_run,
        only=category,
        output_directory=directory or settings.logging.output_directory(settings.data_dir),
    )
    if not dry_run:
        audit(
            "logs.prune",
            actor=record_audit(ctx),
            directory=str(where),
            deleted_files=report.deleted_files,
            deleted_bytes=report.deleted_bytes,
        )
    if as_json:
        print_json(report.to_dict())
        return
    _print_report(report, audit_file=audit_file_path(settings.data_dir))


def _print_report(report: PruneReport, *, audit_file: Path) -> None:
    verb = "would delete" if report.dry_run else "deleted"
    title = f"log retention in {escape(str(report.directory))}"
    if report.dry_run:
        title += " (dry run: nothing deleted)"
    table = Table(title=title, title_justify="left")
    for name in (
        "category",
        "keep (days)",
        f"{verb}: files",
        "bytes",
        "kept: files",
        "bytes",
        "oldest kept",
    ):
        table.add_column(name, justify="left" if name in ("category", "oldest kept") else "right")
    for result in report.results():
        table.add_row(
            f"{result.category} (<service>.log)" if result is report.output else result.category,
            str(result.retention_days),
            str(result.deleted_files),
            format_bytes(result.deleted_bytes),
            str(result.kept_files),
            format_bytes(result.kept_bytes),
            result.oldest_kept.isoformat() if result.oldest_kept else "-",
        )
    out = stdout_console()
    out.print(table)
    out.print(
        f"The audit file {escape(str(audit_file))} is not pruned: keel audit verify needs all "
        "of it."
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
