"""``keel serve <service>``: run one agentkeel service in the foreground.

``agent`` is here now; the memory and tool servers join as ``serve memory``
and ``serve tools``: each is one function registered on ``serve_app``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import exits_on_keel_error

serve_app = typer.Typer(
    name="serve",
    help="Run one agentkeel service in the foreground (keel up runs them all).",
    no_args_is_help=True,
)


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
    config: Annotated[
        Path | None, typer.Option("--config", help="keel.yaml to read (overrides --config).")
    ] = None,
) -> None:
    """Serve one agent replica (HTTP API v1) until SIGTERM or Ctrl-C, which drain it first."""
    server: dict[str, Any] = {}
    if host is not None:
        server["host"] = host
    if port is not None:
        server["port"] = port
    overrides = {"server": server} if server else None
    settings = load_cli_settings(ctx, config_path=config, overrides=overrides).settings
    # Imported here: the server stack is heavy and most keel commands never need it.
    from agentkeel.runtime.serve import run_agent_server

    code = run_agent_server(settings, agent_entrypoint=entrypoint)
    if code:
        raise typer.Exit(code)
