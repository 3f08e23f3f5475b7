"""``keel eval``: score the agent on an evaluation set and print each reply's result.

``--url`` scores a running replica or router; without it, the router (else the
first replica) of a running ``keel up`` (found through its stack file, like
``keel chat``);
with neither, an agent server built in this process from the settings (a
throwaway session store, the configured model chain, e.g. the local model that
``keel up`` serves on :8090). ``--min-score`` makes a low score exit 1, for CI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

import httpx
import typer
from rich.markup import escape

from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import EXIT_RUNTIME, exits_on_keel_error, stdout_console
from agentkeel.cli.stack import LocalStack
from agentkeel.config.settings import KeelSettings
from agentkeel.ops.evals import (
    AgentServerTarget,
    EvalReport,
    EvalSet,
    TurnResult,
    load_eval_set,
    run_eval_set,
    serve_in_process,
)


@exits_on_keel_error
def eval_command(
    ctx: typer.Context,
    eval_set: Annotated[
        str,
        typer.Argument(help="A bundled set's name (local-smoke) or the path of a YAML set."),
    ] = "local-smoke",
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Score a running agent server (replica or router) at this base URL "
            "(default: the running keel up's router, else its first replica, else one "
            "built in-process from the settings).",
        ),
    ] = None,
    min_score: Annotated[
        float,
        typer.Option(
            "--min-score", min=0.0, max=1.0, help="Exit 1 when the score (0 to 1) is below this."
        ),
    ] = 0.0,
) -> None:
    """Score the agent on an evaluation set: each reply must name an accepted answer
    and be in English. Prints a line per turn, then the score."""
    chosen = load_eval_set(eval_set)
    loaded = load_cli_settings(ctx)
    console = stdout_console()
    settings: KeelSettings | None = None
    if url is None:
        stack = LocalStack.from_settings(loaded)
        if stack.running:
            urls, source = stack.agent_urls(None)
            url = urls[0]
            console.print(f"[dim]scoring {escape(url)} ({escape(source)})[/]")
        else:
            settings = loaded.settings
            console.print("[dim]scoring an agent server built in-process from the settings[/]")

    def show(result: TurnResult) -> None:
        mark = "[green]pass[/]" if result.passed else "[bold red]FAIL[/]"
        reply = " ".join(result.reply.split())
        line = f"{mark} {escape(result.case)}#{result.turn} [dim]{escape(result.user)}[/] → "
        line += escape(reply[:120])
        if result.problem:
            line += f" [red]({escape(result.problem)})[/]"
        console.print(line, soft_wrap=True)

    report = asyncio.run(_score(chosen, url=url, settings=settings, on_result=show))
    console.print(f"[bold]{escape(report.summary())}[/]")
    if report.score < min_score:
        console.print(f"[red]score {report.score:.0%} is below --min-score {min_score:.0%}[/]")
        raise typer.Exit(EXIT_RUNTIME)


async def _score(
    eval_set: EvalSet,
    *,
    url: str | None,
    settings: KeelSettings | None,
    on_result: Callable[[TurnResult], None],
) -> EvalReport:
    if url is not None:
        async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
            return await run_eval_set(
                eval_set, AgentServerTarget(client=client), on_result=on_result
            )
    assert settings is not None
    async with serve_in_process(settings) as target:
        return await run_eval_set(eval_set, target, on_result=on_result)
