"""``keel golden run``: a golden suite against one version, a table, and an exit code.

    keel golden run [--target URL] [--file PATH|NAME] [--json]

The target is an agent server's base URL, usually one replica of the version
under test, so the checks see that version alone; without ``--target``, the
first replica of a running ``keel up``. Exit codes: 0 every case passed,
1 some failed, 2 the suite file is bad or the target does not answer.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import (
    EXIT_CONFIG,
    EXIT_RUNTIME,
    exits_on_keel_error,
    print_error,
    print_json,
    stderr_console,
    stdout_console,
)
from agentkeel.cli.stack import LocalStack
from agentkeel.ops.evals import TargetUnreachable
from agentkeel.ops.golden import GoldenCaseResult, GoldenReport, load_golden_suite, run_golden

golden_app = typer.Typer(
    name="golden",
    help="Golden checks: short conversations whose replies must have given properties.",
    epilog="Example: keel golden run --target http://127.0.0.1:8081",
    no_args_is_help=True,
)

_EXCERPT_CHARS = 80


@golden_app.command(
    "run",
    epilog="Example: keel golden run --target http://127.0.0.1:8083 --file golden.yaml --json",
)
@exits_on_keel_error
def run(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="Base URL of the agent server to check, e.g. one replica of the new version "
            "(default: the first replica of the running keel up).",
        ),
    ] = None,
    file: Annotated[
        str,
        typer.Option(
            "--file",
            help="A golden suite: a YAML file, or the name of a bundled one.",
        ),
    ] = "local-smoke",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Run a golden suite against one agent server: a session per case, every property of
    every reply checked. Exit 0 when all cases pass, 1 when some fail, 2 for a bad suite
    file or a target that does not answer."""
    suite = load_golden_suite(file)
    if target is None:
        stack = LocalStack.from_settings(load_cli_settings(ctx))
        urls, source = stack.replica_urls(None)
        target = urls[0]
        stderr_console().print(f"[dim]checking {escape(target)} ({escape(source)})[/]")
    progress = stderr_console()

    def show(result: GoldenCaseResult) -> None:
        if not as_json:
            mark = "[green]pass[/]" if result.passed else "[bold red]FAIL[/]"
            progress.print(f"{mark} {escape(result.name)}", soft_wrap=True)

    try:
        report = asyncio.run(run_golden(target, suite, on_case=show))
    except TargetUnreachable as exc:
        print_error(exc)
        raise typer.Exit(EXIT_CONFIG) from None
    if as_json:
        print_json(report.to_json())
    else:
        console = stdout_console()
        console.print(results_table(report))
        colour = "green" if report.passed else "red"
        console.print(f"[bold {colour}]{escape(report.summary)}[/]")
    if not report.passed:
        raise typer.Exit(EXIT_RUNTIME)


def results_table(report: GoldenReport) -> Table:
    """A row per turn: the case, the turn, pass or fail, and the reply or what was wrong."""
    table = Table(title=f"golden suite {report.suite}")
    table.add_column("case")
    table.add_column("turn", justify="right")
    table.add_column("result")
    table.add_column("reply / problems", overflow="fold")
    for case in report.cases:
        for turn in case.turns:
            mark = "[green]pass[/]" if turn.passed else "[bold red]FAIL[/]"
            detail = escape(_excerpt(turn.reply) if turn.reply is not None else "")
            if turn.tool_calls:
                detail += f" [dim](tools: {escape(', '.join(turn.tool_calls))})[/]"
            if turn.problems:
                detail += f"\n[red]{escape('; '.join(turn.problems))}[/]"
            table.add_row(escape(case.name), str(turn.turn), mark, detail.strip())
    return table


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT_CHARS else flat[: _EXCERPT_CHARS - 1] + "…"
