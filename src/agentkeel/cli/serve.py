"""``keel serve <service>``: run one agentkeel service in the foreground.

``agent``, ``memory``, ``tools`` and ``router``: each is one function registered on
``serve_app``; the server stack is imported only by the command that runs it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import exits_on_keel_error

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", help="keel.yaml to read; wins over the global keel --config and KEEL_CONFIG."
    ),
]

serve_app = typer.Typer(
    name="serve",
    help="Run one agentkeel service in the foreground (keel up runs them all).",
    no_args_is_help=True,
)


@serve_app.callback()
def _serve_options(
    app_dir: Annotated[
        Path,
        typer.Option(
            "--app-dir",
            help="Directory your agent and tool modules are imported from (default: here).",
        ),
    ] = Path("."),
) -> None:
    # As uvicorn's --app-dir: `keel` runs from .venv/bin, so the working directory
    # is not on sys.path unless we put it there.
    path = str(app_dir.resolve())
    if path not in sys.path:
        sys.path.insert(0, path)


@serve_app.command(
    "agent",
    epilog="Example: keel serve agent --agent myapp.agents:support --port 8081",
)
@exits_on_keel_error
def agent(
    ctx: typer.Context,
    entrypoint: Annotated[
        str | None,
        typer.Option(
            "--agent",
            help="Your agent as package.module:object (default: agent.entrypoint or ToolAgent).",
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (server.port).")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve one agent replica (HTTP API v1) until SIGTERM or Ctrl-C, which drain it first."""
    server: dict[str, Any] = {}
    if host is not None:
        server["host"] = host
    if port is not None:
        server["port"] = port
    overrides = {"server": server} if server else None
    loaded = load_cli_settings(ctx, config_path=config, overrides=overrides)
    # Imported here: the server stack is heavy and most keel commands never need it.
    from agentkeel.runtime.serve import run_agent_server

    code = run_agent_server(
        loaded.settings, agent_entrypoint=entrypoint, source_of=loaded.source_of
    )
    if code:
        raise typer.Exit(code)


def _host_port(host: str | None, port: int | None) -> dict[str, Any]:
    return {k: v for k, v in {"host": host, "port": port}.items() if v is not None}


@serve_app.command("memory", epilog="Example: keel serve memory --port 8788")
@exits_on_keel_error
def memory(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (memory.port, default 8788).")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve the memory API (memories, snapshots, restore, integrity) until SIGTERM or Ctrl-C."""
    server = _host_port(host, port)
    overrides = {"memory": server} if server else None
    settings = load_cli_settings(ctx, config_path=config, overrides=overrides).settings
    from agentkeel.memory.serve import run_memory_server

    code = run_memory_server(settings)
    if code:
        raise typer.Exit(code)


@serve_app.command("tools", epilog="Example: keel serve tools --tools myapp.tools --port 9090")
@exits_on_keel_error
def tools(
    ctx: typer.Context,
    modules: Annotated[
        list[str] | None,
        typer.Option(
            "--tools", help="package.module whose public functions are served (repeatable)."
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (tools.server.port, default 9090).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Serve MCP tools over streamable HTTP at /mcp until SIGTERM or Ctrl-C."""
    server = _host_port(host, port)
    overrides = {"tools": {"server": server}} if server else None
    settings = load_cli_settings(ctx, config_path=config, overrides=overrides).settings
    from agentkeel.tools.serve import run_tool_server

    code = run_tool_server(settings, tools_modules=modules or [])
    if code:
        raise typer.Exit(code)


@serve_app.command(
    "router",
    epilog="Example: keel serve router --port 8080 --backend v1=http://127.0.0.1:8081 "
    "--backend v1=http://127.0.0.1:8082",
)
@exits_on_keel_error
def router(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (router.port, default 8080).")] = None,
    backends: Annotated[
        list[str] | None,
        typer.Option(
            "--backend",
            help="A replica as VERSION=URL (repeatable); the first version named is the "
            "stable one. Seeds the routing table while the pin store holds none.",
        ),
    ] = None,
    pins: Annotated[
        str | None,
        typer.Option(
            "--pins",
            help="sqlite:///PATH.db (one router) or redis://HOST:PORT/DB (routers sharing "
            "pins); default sqlite in the data dir (router.db).",
        ),
    ] = None,
    admin_token_file: Annotated[
        Path | None,
        typer.Option("--admin-token-file", help="File holding the admin API's bearer token."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Serve the session-aware router in front of agent replicas until SIGTERM or Ctrl-C."""
    section: dict[str, Any] = _host_port(host, port)
    if backends:
        section["backends"] = list(backends)
    if pins is not None:
        section["pins"] = pins
    if admin_token_file is not None:
        section["admin_token_file"] = str(admin_token_file)
    overrides = {"router": section} if section else None
    settings = load_cli_settings(ctx, config_path=config, overrides=overrides).settings
    from agentkeel.router.serve import run_router_server

    code = run_router_server(settings)
    if code:
        raise typer.Exit(code)
