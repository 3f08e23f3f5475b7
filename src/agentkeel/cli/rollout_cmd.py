"""``keel rollout …``: ship a new version of the agent, and take it back.

    keel rollout start --version v2 [--strategy canary|bluegreen|rolling] [--time-scale 60]
    keel rollout status [--watch] [--json]
    keel rollout promote | pause | resume | abort [--release R]

``start`` records the release in ``<data dir>/rollouts.db``, takes the memory
snapshot and drives the rollout in this process (the controller), with a live
view. ``promote``, ``pause`` and ``abort`` from another terminal are requests
the controller takes within a tick; when no controller is alive (killed,
Ctrl-C), ``pause`` and ``abort`` act from the calling process, and ``resume``
and ``promote`` make it the controller, continuing at the same step.
The router, keel up's control socket, the memory server and the admin token
are found as ``keel rollback`` finds them (flags, settings, ``stack.json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from rich.live import Live

from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import (
    EXIT_RUNTIME,
    exits_on_keel_error,
    print_json,
    stderr_console,
    stdout_console,
)
from agentkeel.cli.rollback_cmd import RollbackTargets, resolve_targets
from agentkeel.cli.stack import LocalStack
from agentkeel.config.rollout import RolloutSettings
from agentkeel.deploy.controller import ReleasePlan, RolloutController
from agentkeel.deploy.drivers import LocalDriver
from agentkeel.deploy.judge import Judge as CanaryJudge
from agentkeel.deploy.live_sessions import StoreLiveSessions, admin_live
from agentkeel.deploy.rollback import Rollback
from agentkeel.deploy.rollback_journal import RollbackJournal
from agentkeel.deploy.rollout_types import Judge
from agentkeel.deploy.sources import PrometheusSource, ReplicaScrapeSource
from agentkeel.deploy.state import ROLLOUTS_FILE, Controller, Release, RolloutStore
from agentkeel.deploy.strategies import RolloutDeps
from agentkeel.deploy.types import MetricsSource, RouterControl
from agentkeel.deploy.view import release_json, release_view
from agentkeel.errors import InvalidRequest, NotFound
from agentkeel.memory.api_client import MemoryApiClient
from agentkeel.ops.golden import GoldenChecks
from agentkeel.ops.replicas import check_extra_env
from agentkeel.router.admin_client import RouterAdminClient
from agentkeel.telemetry.audit import credential_id
from agentkeel.telemetry.audit_file import install_audit_file

rollout_app = typer.Typer(
    name="rollout",
    help="Ship a new version: canary, blue/green or rolling, judged, resumable, reversible.",
    epilog="Example: keel rollout start --version v2 --strategy canary --time-scale 60",
    no_args_is_help=True,
)

EXIT_INTERRUPTED = 130
REFRESH_PER_S = 4.0

ReleaseOption = Annotated[
    str | None,
    typer.Option("--release", help="The release (default: the latest one)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of the view.")]
RouterUrlOption = Annotated[
    str | None, typer.Option("--router-url", help="The router (default: the running keel up's).")
]
ControlSocketOption = Annotated[
    Path | None,
    typer.Option(
        "--control-socket",
        help="keel up's control socket, which starts and stops replicas (default: the one "
        "stack.json names).",
    ),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help="The admin token of the router and the memory server (default: the data "
        "directory's admin_token).",
    ),
]
MemoryUrlOption = Annotated[
    str | None,
    typer.Option("--memory-url", help="The memory server (default: as keel memory finds it)."),
]


# -- plumbing -------------------------------------------------------------------------------


class _Context:
    """Settings, the stack and the rollout store's path for one command."""

    def __init__(self, ctx: typer.Context) -> None:
        self.loaded = load_cli_settings(ctx)
        self.stack = LocalStack.from_settings(self.loaded)
        self.settings: RolloutSettings = self.loaded.settings.rollout
        self.db = self.loaded.settings.data_dir / ROLLOUTS_FILE
        # The controller, settle and requests audit from this process.
        install_audit_file(self.loaded.settings.data_dir, service="cli")

    def targets(
        self,
        *,
        router_url: str | None,
        control_socket: Path | None,
        token_file: Path | None,
        memory_url: str | None,
    ) -> RollbackTargets:
        return resolve_targets(
            self.stack,
            router_url=router_url,
            memory_url=memory_url if self.settings.snapshot else None,
            control_socket=control_socket,
            token_file=token_file,
            golden=None,
            # The bad version's sessions move at their next turn: its replicas stop at once.
            drain_timeout_s=0.0,
            code_only=not (self.settings.snapshot or self.settings.auto_state_rollback),
        )


@contextlib.asynccontextmanager
async def _deps(
    settings: RolloutSettings, targets: RollbackTargets, *, actor: str
) -> AsyncIterator[RolloutDeps]:
    """The clients a controller drives, open for the block."""
    async with contextlib.AsyncExitStack() as stack:
        router = await stack.enter_async_context(
            RouterAdminClient(base_url=targets.router_url, token_file=targets.router_token_file)
        )
        driver = await stack.enter_async_context(LocalDriver(targets.control_socket))
        journal = await stack.enter_async_context(RollbackJournal(targets.rollouts_db))
        memory = None
        if targets.memory_url is not None:
            memory = await stack.enter_async_context(
                MemoryApiClient(base_url=targets.memory_url, token_file=targets.memory_token_file)
            )
        golden = GoldenChecks(targets.golden) if targets.golden is not None else None
        sessions = StoreLiveSessions(router, live_of=admin_live(targets.router_token_file))
        rollback = Rollback(
            router,
            driver,
            memory,
            journal,
            golden=golden,
            sessions=sessions,
            drain_timeout_s=targets.drain_timeout_s,
            poll_interval_s=min(1.0, settings.poll_interval_s * 5),
            actor=actor,
        )
        judge_factory, metrics = _judging(settings, router)
        yield RolloutDeps(
            router=router,
            driver=driver,
            rollback=rollback,
            memory=memory,
            metrics=metrics,
            judge_factory=judge_factory,
            golden=golden,
            sessions=sessions,
        )


def _judging(
    settings: RolloutSettings, router: RouterControl
) -> tuple[Callable[[], Judge], MetricsSource]:
    """The judge and where it reads: Prometheus when ``rollout.judge.prometheus.url`` is
    set, else every version's replicas as the router lists them."""
    if settings.judge.prometheus.url:
        return (lambda: CanaryJudge(settings.judge)), PrometheusSource.from_settings(settings.judge)

    async def urls_by_version() -> dict[str, list[str]]:
        _, versions = await router.versions()
        return {v.version: [r.url for r in v.replicas] for v in versions}

    source = ReplicaScrapeSource(replica_urls_by_version=urls_by_version, settings=settings.judge)
    return (lambda: CanaryJudge(settings.judge)), source


def _actor(targets: RollbackTargets) -> str:
    try:
        token = targets.router_token_file.read_text(encoding="utf-8").strip()
    except OSError:
        token = ""
    return credential_id("admin_token", token) if token else f"keel rollout pid {os.getpid()}"


class _LiveView:
    """The Rich live view, refreshed at most a few times a second; nothing with --json."""

    def __init__(self, settings: RolloutSettings, *, enabled: bool) -> None:
        self.settings = settings
        self.enabled = enabled
        self.live: Live | None = None
        self._last = 0.0

    def __enter__(self) -> _LiveView:
        if self.enabled:
            self.live = Live(console=stdout_console(), auto_refresh=False, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def update(self, release: Release) -> None:
        if self.live is None:
            return
        now = time.monotonic()
        if release.active and now - self._last < 1 / REFRESH_PER_S:
            return
        self._last = now
        self.live.update(
            release_view(release, settings=self.settings, controller_alive=True), refresh=True
        )


def _finish(release: Release, settings: RolloutSettings, *, as_json: bool) -> None:
    if as_json:
        print_json(release_json(release, controller=None, now=time.time(), heartbeat_timeout_s=1))
    if release.state != "promoted" and not release.active:
        raise typer.Exit(EXIT_RUNTIME)


def _drive(
    context: _Context,
    targets: RollbackTargets,
    *,
    as_json: bool,
    work: Callable[[RolloutController], Any],
) -> Release:
    """Run ``work(controller)`` with the live view; Ctrl-C leaves the release resumable."""
    view = _LiveView(context.settings, enabled=not as_json)
    actor = _actor(targets)

    async def run() -> Release:
        async with (
            RolloutStore(context.db) as store,
            _deps(context.settings, targets, actor=actor) as deps,
        ):
            controller = RolloutController(
                store=store, deps=deps, settings=context.settings, on_update=view.update
            )
            result: Release = await work(controller)
            return result

    try:
        with view:
            return asyncio.run(run())
    except KeyboardInterrupt:
        stderr_console().print(
            "[yellow]controller stopped[/]: the release keeps its traffic as it is; "
            "`keel rollout resume` continues it, `keel rollout abort` rolls it back."
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _env_pairs(values: list[str] | None) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("KEEL_"):
            raise InvalidRequest(
                f"--env {item!r} is not KEEL_NAME=value; give one KEEL_… setting per --env"
            )
        pairs[key] = value
    return pairs


# -- start ----------------------------------------------------------------------------------


@rollout_app.command(
    "start", epilog="Example: keel rollout start --version v2 --strategy bluegreen --time-scale 60"
)
@exits_on_keel_error
def start(
    ctx: typer.Context,
    version: Annotated[
        str | None,
        typer.Option(
            "--version", help="The new version's name (default: rollout.release.version)."
        ),
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy", help="canary, bluegreen or rolling (default: rollout.strategy)."
        ),
    ] = None,
    entrypoint: Annotated[
        str | None,
        typer.Option("--entrypoint", help="package.module:agent for the new replicas."),
    ] = None,
    replica_config: Annotated[
        str | None,
        typer.Option("--config", help="A keel.yaml for the new replicas (default: the stack's)."),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", help="KEEL_NAME=value for the new replicas; repeat for several."),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy",
            help="The previous version's sessions once it is retired: pinned or move-at-turn.",
        ),
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option("--replicas", min=1, max=32, help="New replicas (default: as many as now)."),
    ] = None,
    time_scale: Annotated[
        float | None,
        typer.Option(
            "--time-scale", min=0.001, help="Divide every duration by this (rehearsals: 60)."
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="The release's name (default: VERSION-TIME).")
    ] = None,
    as_json: JsonOption = False,
    router_url: RouterUrlOption = None,
    control_socket: ControlSocketOption = None,
    token_file: TokenFileOption = None,
    memory_url: MemoryUrlOption = None,
) -> None:
    """Start a rollout of a new version and drive it to the end here, with a live view.

    Exits 0 once the new version is promoted, 1 if it was rolled back, aborted or failed.
    """
    context = _Context(ctx)
    settings = context.settings
    chosen = settings.release
    plan = ReleasePlan(
        version=version or chosen.version or "",
        strategy=_strategy(strategy or chosen.strategy or settings.strategy),
        entrypoint=entrypoint or chosen.entrypoint,
        config=replica_config or chosen.config,
        env={**chosen.env, **_env_pairs(env)},
        policy=_policy(policy or chosen.policy),
        replicas=replicas or settings.replicas,
        time_scale=time_scale or settings.time_scale,
        name=name,
    )
    if not plan.version:
        raise InvalidRequest(
            "which version? pass --version v2 (or set rollout.release.version in keel.yaml)"
        )
    check_extra_env(plan.env)  # before anything is saved or connected to
    targets = context.targets(
        router_url=router_url,
        control_socket=control_socket,
        token_file=token_file,
        memory_url=memory_url,
    )
    release = _drive(context, targets, as_json=as_json, work=lambda c: c.start(plan))
    _finish(release, settings, as_json=as_json)


def _strategy(value: str) -> Literal["canary", "bluegreen", "rolling"]:
    if value in ("canary", "bluegreen", "rolling"):
        return cast(Literal["canary", "bluegreen", "rolling"], value)
    raise InvalidRequest(f"--strategy {value!r} is not one of canary, bluegreen, rolling")


def _policy(value: str) -> Literal["pinned", "move-at-turn"]:
    if value in ("pinned", "move-at-turn"):
        return cast(Literal["pinned", "move-at-turn"], value)
    raise InvalidRequest(f"--policy {value!r} is not one of pinned, move-at-turn")


# -- status ---------------------------------------------------------------------------------


@rollout_app.command("status", epilog="Example: keel rollout status --watch")
@exits_on_keel_error
def status(
    ctx: typer.Context,
    release: ReleaseOption = None,
    as_json: JsonOption = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep the view up to date until the release ends.")
    ] = False,
) -> None:
    """Show a release: step, weights, the judge's verdict per metric, sessions per version."""
    context = _Context(ctx)
    settings = context.settings
    if not context.db.exists():
        if as_json:
            print_json({"release": None})
            return
        stdout_console().print(
            f"no rollout recorded yet (no {context.db}); start one: keel rollout start --version v2"
        )
        return

    async def read(name: str | None) -> tuple[Release | None, Controller | None, float]:
        async with RolloutStore(context.db) as store:
            found = await (store.get(name) if name else store.latest())
            holder = await store.controller(found.release) if found is not None else None
            return found, holder, store.now()

    found, holder, now = asyncio.run(read(release))
    if found is None:
        raise NotFound(
            f"no release {release} in {context.db}; keel rollout status lists the latest"
        )
    if as_json:
        print_json(
            release_json(
                found, controller=holder, now=now, heartbeat_timeout_s=settings.heartbeat_timeout_s
            )
        )
        return
    alive = holder is not None and holder.alive(now, timeout_s=settings.heartbeat_timeout_s)
    console = stdout_console()
    if not watch:
        console.print(release_view(found, settings=settings, controller_alive=alive))
        return
    with Live(console=console, auto_refresh=False) as live:
        while True:
            live.update(
                release_view(found, settings=settings, controller_alive=alive), refresh=True
            )
            if not found.active:
                return
            time.sleep(1 / REFRESH_PER_S)
            latest, holder, now = asyncio.run(read(found.release))
            if latest is not None:
                found = latest
            alive = holder is not None and holder.alive(now, timeout_s=settings.heartbeat_timeout_s)


# -- requests -------------------------------------------------------------------------------


def _request(
    ctx: typer.Context,
    command: Literal["promote", "pause", "resume", "abort"],
    *,
    release: str | None,
    as_json: bool,
    router_url: str | None,
    control_socket: Path | None,
    token_file: Path | None,
    memory_url: str | None,
) -> None:
    context = _Context(ctx)
    settings = context.settings
    if not context.db.exists():
        raise NotFound(f"no rollout recorded in {context.db}; start one: keel rollout start")

    async def ask() -> tuple[Release, str | None]:
        """Write the request; the outcome once a live controller took it, else None."""
        async with RolloutStore(context.db) as store:
            found = await (store.get(release) if release else store.latest())
            if found is None:
                raise NotFound(f"no release {release} in {context.db}")
            if not found.active:
                raise InvalidRequest(
                    f"release {found.release} is {found.state}; there is nothing to {command}"
                    + (
                        "; keel rollback rolls back a promoted release"
                        if command == "abort"
                        else ""
                    )
                )
            request_id = await store.request(
                found.release, command, requested_by=f"keel rollout {command} (pid {os.getpid()})"
            )
            holder = await store.controller(found.release)
            if holder is None or not holder.alive(
                store.now(), timeout_s=settings.heartbeat_timeout_s
            ):
                return found, None
            deadline = time.monotonic() + settings.heartbeat_timeout_s + 2
            while time.monotonic() < deadline:
                done = await store.get_request(request_id)
                if done is not None and done.outcome is not None:
                    return found, done.outcome
                await asyncio.sleep(0.05)
            return found, "requested; the controller has not answered yet (keel rollout status)"

    found, outcome = asyncio.run(ask())
    if outcome is not None:
        if as_json:
            print_json({"release": found.release, "command": command, "outcome": outcome})
        else:
            stdout_console().print(f"{found.release}: {outcome}")
        return
    # Nobody drives the release: this process acts on it.
    targets = context.targets(
        router_url=router_url,
        control_socket=control_socket,
        token_file=token_file,
        memory_url=memory_url,
    )
    if command in ("pause", "abort"):
        done = _drive(context, targets, as_json=True, work=lambda c: c.settle(found))
        if as_json:
            print_json(release_json(done, controller=None, now=time.time(), heartbeat_timeout_s=1))
        else:
            stdout_console().print(release_view(done, settings=settings, controller_alive=False))
        return
    stderr_console().print(f"no controller drives {found.release}: this process takes it over")
    done = _drive(context, targets, as_json=as_json, work=lambda c: c.resume(found.release))
    _finish(done, settings, as_json=as_json)


def _request_command(
    command: Literal["promote", "pause", "resume", "abort"], help_text: str, example: str
) -> None:
    @rollout_app.command(command, help=help_text, epilog=f"Example: {example}")
    @exits_on_keel_error
    def handler(
        ctx: typer.Context,
        release: ReleaseOption = None,
        as_json: JsonOption = False,
        router_url: RouterUrlOption = None,
        control_socket: ControlSocketOption = None,
        token_file: TokenFileOption = None,
        memory_url: MemoryUrlOption = None,
    ) -> None:
        _request(
            ctx,
            command,
            release=release,
            as_json=as_json,
            router_url=router_url,
            control_socket=control_socket,
            token_file=token_file,
            memory_url=memory_url,
        )


_request_command(
    "promote",
    "Skip the remaining waits: the new version gets 100 % and becomes stable now.",
    "keel rollout promote",
)
_request_command(
    "pause",
    "Hold the rollout where it is (weights stay; paused time does not count).",
    "keel rollout pause",
)
_request_command(
    "resume",
    "Continue a paused rollout, or one whose controller was killed (this process takes over).",
    "keel rollout resume",
)
_request_command(
    "abort",
    "Roll the code back now: new sessions to the previous version, the new one drained.",
    "keel rollout abort --release v2-20261201T123000",
)
