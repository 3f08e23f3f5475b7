"""``keel up``: the whole embedded stack on one machine, supervised until Ctrl-C.

It starts the local model server (port 8090) unless it is disabled, then N
agent replicas (8081, 8082, ...) once the model answers, each as
``python -m agentkeel.cli.main serve agent --port P``. State (the SQLite
``sessions.db``), logs (``logs/<service>.log``) and the admin token live in
the data directory (``./.keel`` by default). Ctrl-C drains the replicas
(turns in flight finish), then stops the model server; a second Ctrl-C kills
everything at once.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.status import Status
from rich.table import Table

from agentkeel.cli.config_cmd import cli_state, load_cli_settings
from agentkeel.cli.output import exits_on_keel_error, stderr_console, stdout_console
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import ConfigError
from agentkeel.ops.local_model import (
    check_server_installed,
    local_model_command,
    local_model_ready_url,
)
from agentkeel.ops.supervisor import ServiceSpec, ServiceStatus, Supervisor, SupervisorEvent

LOCAL_MODEL_SERVICE = "local-model"
ADMIN_TOKEN_FILE = "admin_token"
# After a replica's drain: uvicorn's own graceful shutdown and closing the store.
_REPLICA_STOP_MARGIN_S = 10.0
_MODEL_STOP_TIMEOUT_S = 10.0


def ensure_admin_token(data_dir: Path) -> Path:
    """``<data_dir>/admin_token`` (mode 0600), created with a random token on first use."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / ADMIN_TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    return path


def replica_name(index: int) -> str:
    return f"replica-{index}"


def plan_services(
    settings: KeelSettings,
    *,
    config_path: Path | None,
    start_local_model: bool,
    admin_token_file: Path,
    python: str | None = None,
) -> list[ServiceSpec]:
    """The children of ``keel up``: the local model (optional), then the replicas after it.

    Replicas get the data directory, the admin token file, their replica id and
    the config file through ``KEEL_*`` variables, so they load the same
    settings as ``keel up`` did; only the port differs.
    """
    interpreter = python or sys.executable
    data_dir = settings.data_dir.absolute()
    services: list[ServiceSpec] = []
    depends_on: tuple[str, ...] = ()
    if start_local_model:
        model = settings.local_model
        services.append(
            ServiceSpec(
                name=LOCAL_MODEL_SERVICE,
                command=local_model_command(model, python=interpreter),
                env={"PYTHONUNBUFFERED": "1"},
                port=model.port,
                ready_url=local_model_ready_url(model),
                stop_timeout_s=_MODEL_STOP_TIMEOUT_S,
                ready_timeout_s=settings.up.ready_timeout_s,
            )
        )
        depends_on = (LOCAL_MODEL_SERVICE,)
    host = settings.server.host
    for index in range(1, settings.up.replicas + 1):
        port = settings.up.base_port + index - 1
        env = {
            "PYTHONUNBUFFERED": "1",
            "KEEL_DATA_DIR": str(data_dir),
            "KEEL_SERVER__ADMIN_TOKEN_FILE": str(admin_token_file.absolute()),
            "KEEL_SERVER__REPLICA_ID": replica_name(index),
        }
        if config_path is not None:
            env["KEEL_CONFIG"] = str(config_path.absolute())
        services.append(
            ServiceSpec(
                name=replica_name(index),
                command=[
                    interpreter,
                    "-m",
                    "agentkeel.cli.main",
                    "serve",
                    "agent",
                    "--host",
                    host,
                    "--port",
                    str(port),
                ],
                env=env,
                port=port,
                health_url=f"http://{_url_host(host)}:{port}/health",
                ready_url=f"http://{_url_host(host)}:{port}/ready",
                depends_on=depends_on,
                stop_timeout_s=settings.server.drain_timeout_s + _REPLICA_STOP_MARGIN_S,
                ready_timeout_s=settings.up.ready_timeout_s,
            )
        )
    return services


def check_ports_free(services: list[ServiceSpec], *, host: Mapping[str, str]) -> None:
    """Raise ``ConfigError`` naming the first port something else already listens on.

    Checked before starting: a ready check would otherwise be answered by the
    other process (often an earlier ``keel up``) instead of the new child.
    """
    for spec in services:
        if spec.port is None:
            continue
        address = host.get(spec.name, "127.0.0.1")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, spec.port))
            except OSError as exc:
                raise ConfigError(
                    f"Port {spec.port} on {address} (for {spec.name}) is already in use "
                    f"({exc.strerror}). Stop whatever listens there (another keel up?) or "
                    "choose other ports: up.base_port for replicas, local_model.port for "
                    "the model server."
                ) from exc


def _url_host(host: str) -> str:
    # Listening on every interface still means connecting over loopback.
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


class UpView:
    """Renders supervisor events: a spinner while starting, one line per change after."""

    def __init__(self, *, out: Console, err: Console) -> None:
        self._out = out
        self._err = err
        self._status: Status | None = None

    def begin(self, text: str) -> None:
        self._status = self._err.status(text)
        self._status.start()

    def end(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def note(self, markup: str) -> None:
        self._err.print(markup)

    def on_event(self, event: SupervisorEvent) -> None:
        name = event.service
        if event.kind == "starting":
            self._spin(f"Starting {name} (pid {event.pid})...")
        elif event.kind == "waiting":
            self._spin(f"Waiting for {name}: {event.detail}...")
        elif event.kind == "ready":
            self._err.print(f"[green]ready[/]     {name} (pid {event.pid})")
        elif event.kind == "exited":
            self._err.print(f"[yellow]exited[/]    {name} with code {event.returncode}")
        elif event.kind == "restarting":
            self._err.print(f"[yellow]restart[/]   {name} in {event.delay_s:.1f}s")
        elif event.kind == "stopping":
            what = "draining" if name != LOCAL_MODEL_SERVICE else "stopping"
            self._err.print(f"[cyan]{what:<9}[/] {name} (pid {event.pid})")
        elif event.kind == "stopped":
            self._err.print(f"[dim]stopped   {name}[/]")
        elif event.kind == "killed":
            self._err.print(f"[red]killed[/]    {name}: it did not stop in time")

    def _spin(self, text: str) -> None:
        if self._status is not None:
            self._status.update(text)

    def print_services(
        self, statuses: list[ServiceStatus], specs: list[ServiceSpec], data_dir: Path
    ) -> None:
        urls = {spec.name: _base_url(spec) for spec in specs}
        table = Table(title="keel up", title_justify="left")
        table.add_column("service", no_wrap=True)
        table.add_column("url", no_wrap=True)
        table.add_column("pid", justify="right")
        table.add_column("log", overflow="fold")
        for status in statuses:
            table.add_row(
                status.name,
                urls.get(status.name, "-"),
                str(status.pid or "-"),
                _short(status.log_path),
            )
        self._out.print(table)
        self._out.print(f"data dir: {data_dir}  admin token: {data_dir / ADMIN_TOKEN_FILE}")
        self._out.print(
            "keel up is running. Talk to it with `keel chat`; "
            "Ctrl-C stops it (replicas drain first)."
        )


def _short(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _base_url(spec: ServiceSpec) -> str:
    url = spec.ready_url or spec.health_url or ""
    for suffix in ("/v1/models", "/ready", "/health"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url or "-"


async def _supervise(supervisor: Supervisor, view: UpView, on_started: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    requests = 0

    def on_signal() -> None:
        nonlocal requests
        requests += 1
        view.end()
        if requests == 1:
            view.note(
                "[bold]Stopping:[/] replicas drain first (turns in flight finish). "
                "Press Ctrl-C again to kill everything now."
            )
        else:
            view.note("[bold red]Killing every service now.[/]")
        supervisor.request_stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        await supervisor.run(on_started=on_started)
    finally:
        view.end()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


@exits_on_keel_error
def up(
    ctx: typer.Context,
    replicas: Annotated[
        int | None,
        typer.Option(min=1, max=32, help="How many agent replicas (up.replicas, default 2)."),
    ] = None,
    no_local_model: Annotated[
        bool,
        typer.Option(
            "--no-local-model", help="Do not start the local model server (use remote models)."
        ),
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Where state and logs go (default ./.keel)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="keel.yaml to read (overrides --config).")
    ] = None,
) -> None:
    """Start the local model server and the agent replicas, and supervise them until Ctrl-C."""
    overrides = {"up": {"replicas": replicas}} if replicas is not None else None
    loaded = load_cli_settings(ctx, config_path=config, data_dir=data_dir, overrides=overrides)
    settings = loaded.settings
    config_path = config or cli_state(ctx).config_path
    start_model = settings.local_model.enabled and not no_local_model
    if start_model:
        check_server_installed()
    data = settings.data_dir.absolute()
    token_file = ensure_admin_token(data)
    specs = plan_services(
        settings,
        config_path=config_path,
        start_local_model=start_model,
        admin_token_file=token_file,
    )
    hosts = {spec.name: settings.server.host for spec in specs}
    hosts[LOCAL_MODEL_SERVICE] = settings.local_model.host
    check_ports_free(specs, host=hosts)

    view = UpView(out=stdout_console(), err=stderr_console())
    supervisor = Supervisor(services=specs, log_dir=data / "logs", on_event=view.on_event)

    def on_started() -> None:
        view.end()
        view.print_services(supervisor.status(), specs, data)

    view.begin("Starting keel services...")
    asyncio.run(_supervise(supervisor, view, on_started))
    stderr_console().print("[green]keel up stopped cleanly.[/]")
