"""``keel rollback``: put the previous version back, and the memory state with it.

    keel rollback [--release R] [--code-only] [--dry-run] [--json]

The release comes from the rollout state (``<data dir>/rollouts.db``, written
by ``keel rollout``): ``--release``, else the latest. The steps and their
order are ``deploy.rollback``'s; each shows as it starts and ends, and a
failure exits 1 naming the step (run the command again to continue there).
Everything it talks to is found the way the other commands find the stack:
the router and keel up's control socket from ``stack.json``, the memory
server and the admin token from the settings or the data directory, each
overridable by a flag.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import (
    EXIT_RUNTIME,
    exits_on_keel_error,
    print_error,
    print_json,
    stderr_console,
    stdout_console,
)
from agentkeel.cli.stack import LocalStack
from agentkeel.deploy.drivers import LocalDriver
from agentkeel.deploy.live_sessions import StoreLiveSessions, admin_live
from agentkeel.deploy.rollback import OnStep, Rollback, RollbackFailed, RollbackReport
from agentkeel.deploy.rollback_journal import RollbackJournal
from agentkeel.deploy.state import ROLLOUTS_FILE, Release, RolloutStore
from agentkeel.errors import ConfigError, Conflict, NotFound
from agentkeel.memory.api_client import MemoryApiClient
from agentkeel.ops.golden import GoldenChecks, GoldenSuite, load_golden_suite
from agentkeel.router.admin_client import DEFAULT_ROUTER_URL, RouterAdminClient
from agentkeel.telemetry.audit import credential_id
from agentkeel.telemetry.audit_file import install_audit_file

_MARKS = {
    "started": "[cyan]…[/]",
    "done": "[green]✓[/]",
    "already_done": "[green]✓[/]",
    "skipped": "[dim]-[/]",
    "planned": "[yellow]○[/]",
    "failed": "[bold red]✗[/]",
}


@dataclass(frozen=True, slots=True)
class RollbackTargets:
    """Everything a rollback talks to, resolved from flags, settings and the stack file."""

    rollouts_db: Path
    router_url: str
    router_token_file: Path
    control_socket: Path
    memory_url: str | None
    memory_token_file: Path | None
    golden: GoldenSuite | None
    drain_timeout_s: float
    heartbeat_timeout_s: float
    poll_interval_s: float = 1.0


@exits_on_keel_error
def rollback_command(
    ctx: typer.Context,
    release: Annotated[
        str | None,
        typer.Option("--release", help="The release to roll back (default: the latest one)."),
    ] = None,
    code_only: Annotated[
        bool,
        typer.Option(
            "--code-only", help="Put the previous version back but leave the memory state."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    router_url: Annotated[
        str | None,
        typer.Option("--router-url", help="The router (default: the running keel up's)."),
    ] = None,
    memory_url: Annotated[
        str | None,
        typer.Option("--memory-url", help="The memory server (default: as keel memory finds it)."),
    ] = None,
    control_socket: Annotated[
        Path | None,
        typer.Option(
            "--control-socket",
            help="keel up's control socket, which stops the bad version's replicas "
            "(default: the one stack.json names).",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="The admin token of the router and the memory server (default: the data "
            "directory's admin_token, as keel up writes it).",
        ),
    ] = None,
    golden: Annotated[
        str | None,
        typer.Option(
            "--golden",
            help="A golden suite (file or bundled name) run against the previous version at "
            "the end (default: rollout.golden_suite, when set).",
        ),
    ] = None,
    no_golden: Annotated[
        bool, typer.Option("--no-golden", help="Skip the golden checks even when configured.")
    ] = False,
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain-timeout",
            min=0.0,
            help="Seconds to wait for the bad version's live sessions before its replicas "
            "stop (default 0: they move to the previous version at their next turn anyway).",
        ),
    ] = 0.0,
) -> None:
    """Roll a release back: new sessions to the previous version, memory fenced and restored
    to the pre-deploy snapshot, the bad version drained and stopped, the fence lifted, the
    golden checks run. Resumable: run it again after a failure and it continues."""
    loaded = load_cli_settings(ctx)
    install_audit_file(loaded.settings.data_dir, service="cli")
    stack = LocalStack.from_settings(loaded)
    targets = resolve_targets(
        stack,
        router_url=router_url,
        memory_url=None if code_only else memory_url,
        control_socket=control_socket,
        token_file=token_file,
        golden=None if no_golden else golden,
        drain_timeout_s=drain_timeout,
        code_only=code_only,
    )
    progress = stderr_console()

    def on_step(step: str, status: str, detail: str) -> None:
        progress.print(
            f"{_MARKS.get(status, status)} [bold]{escape(step)}[/] "
            f"[dim]{escape(status)}[/] {escape(detail)}",
            soft_wrap=True,
        )

    try:
        report = asyncio.run(
            roll_back(
                targets, release=release, code_only=code_only, dry_run=dry_run, on_step=on_step
            )
        )
    except RollbackFailed as exc:
        _show(exc.report, as_json=as_json)
        print_error(exc)
        raise typer.Exit(EXIT_RUNTIME) from None
    _show(report, as_json=as_json)


def resolve_targets(
    stack: LocalStack,
    *,
    router_url: str | None,
    memory_url: str | None,
    control_socket: Path | None,
    token_file: Path | None,
    golden: str | None,
    drain_timeout_s: float,
    code_only: bool,
) -> RollbackTargets:
    """Flag, then setting, then the running stack, then the default, for each."""
    settings = stack.settings
    if router_url is None:
        router_url = stack.router_url()
    if router_url is None:
        configured = stack.loaded.source_of("router.port") != "default"
        router = settings.router
        host = "127.0.0.1" if router.host in ("0.0.0.0", "") else router.host
        router_url = f"http://{host}:{router.port}" if configured else DEFAULT_ROUTER_URL
    socket = control_socket or stack.control_socket()
    if socket is None:
        raise ConfigError(
            f"no keel up control socket found ({stack.describe()}); the bad version's replicas "
            "are stopped through it. Start keel up, point --data-dir at its data directory, "
            "or pass --control-socket PATH."
        )
    suite: GoldenSuite | None = None
    chosen = golden or settings.rollout.golden_suite
    if chosen is not None:
        suite = load_golden_suite(chosen)
    return RollbackTargets(
        rollouts_db=settings.data_dir / ROLLOUTS_FILE,
        router_url=router_url,
        router_token_file=stack.admin_token_file(token_file),
        control_socket=socket,
        memory_url=None if code_only else stack.memory_url(memory_url).value,
        memory_token_file=None if code_only else stack.memory_token_file(token_file),
        golden=suite,
        drain_timeout_s=drain_timeout_s,
        heartbeat_timeout_s=settings.rollout.heartbeat_timeout_s,
    )


async def roll_back(
    targets: RollbackTargets,
    *,
    release: str | None,
    code_only: bool,
    dry_run: bool,
    on_step: OnStep | None = None,
) -> RollbackReport:
    """Load the release, run its rollback, and record the outcome on the release."""
    if not targets.rollouts_db.exists():
        raise NotFound(
            f"there is no rollout state at {targets.rollouts_db}, so no release to roll back. "
            "keel rollout start records releases there; check --data-dir.",
            code="release_not_found",
        )
    actor = credential_id("admin_token", targets.router_token_file.read_text().strip())
    async with RolloutStore(targets.rollouts_db) as store:
        chosen = await _release(store, release)
        if not dry_run:
            await _refuse_if_driven(store, chosen, heartbeat_timeout_s=targets.heartbeat_timeout_s)
        async with (
            RouterAdminClient(
                base_url=targets.router_url, token_file=targets.router_token_file
            ) as router,
            LocalDriver(targets.control_socket) as driver,
            RollbackJournal(targets.rollouts_db) as journal,
        ):
            memory = (
                MemoryApiClient(base_url=targets.memory_url, token_file=targets.memory_token_file)
                if targets.memory_url is not None
                else None
            )
            try:
                rollback = Rollback(
                    router,
                    driver,
                    memory,
                    journal,
                    golden=GoldenChecks(targets.golden) if targets.golden is not None else None,
                    sessions=StoreLiveSessions(
                        router, live_of=admin_live(targets.router_token_file)
                    ),
                    drain_timeout_s=targets.drain_timeout_s,
                    poll_interval_s=targets.poll_interval_s,
                    actor=actor,
                )
                report = await rollback.run(
                    chosen, code_only=code_only, dry_run=dry_run, on_step=on_step
                )
            finally:
                if memory is not None:
                    await memory.aclose()
        if not dry_run:
            chosen.state = "rolled_back"
            chosen.detail["rollback"] = {"code_only": code_only, "report": report.to_json()}
            await store.save(chosen)
        return report


async def _release(store: RolloutStore, name: str | None) -> Release:
    found = await (store.get(name) if name is not None else store.latest())
    if found is None:
        what = f"no release named {name}" if name is not None else "no release"
        raise NotFound(
            f"{what} in the rollout state {store.path}; `keel rollout status` lists them.",
            code="release_not_found",
        )
    return found


async def _refuse_if_driven(
    store: RolloutStore, release: Release, *, heartbeat_timeout_s: float
) -> None:
    """A release a live controller still drives would have its weights fought over."""
    if not release.active:
        return
    controller = await store.controller(release.release)
    if controller is not None and controller.alive(store.now(), timeout_s=heartbeat_timeout_s):
        raise Conflict(
            f"release {release.release} is {release.state} under a keel rollout process "
            f"(pid {controller.pid}); `keel rollout abort` rolls it back through that "
            "process. Stop that process first to roll back from here.",
            code="rollout_active",
        )


def _show(report: RollbackReport, *, as_json: bool) -> None:
    if as_json:
        print_json(report.to_json())
        return
    console = stdout_console()
    table = Table(title=escape(report.summary))
    table.add_column("step")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for step in report.steps:
        mark = _MARKS.get(step.status, "")
        table.add_row(escape(step.name), f"{mark} {escape(step.status)}", escape(step.detail))
    console.print(table)
