"""The ``keel`` command line: parse, call, print.

    keel [--config keel.yaml] [--env NAME] [--data-dir DIR] COMMAND

Commands stay thin: they load settings (``config_cmd.load_cli_settings``),
call into the package, and print with Rich. Expected errors print one red
line and exit 2 (configuration) or 1 (runtime); see ``output.py``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated

import typer

from agentkeel.cli import chat as chat_cmd
from agentkeel.cli import config_cmd, config_diff_cmd, eval_cmd, rollback_cmd
from agentkeel.cli import up as up_cmd
from agentkeel.cli.audit_cmd import audit_app
from agentkeel.cli.config_cmd import CliState
from agentkeel.cli.flags_cmd import flags_app
from agentkeel.cli.golden_cmd import golden_app
from agentkeel.cli.keys_cmd import keys_app
from agentkeel.cli.logs_cmd import logs_app
from agentkeel.cli.memory_cmd import memory_app, snapshot_app
from agentkeel.cli.output import stdout_console
from agentkeel.cli.render_cmd import render_app
from agentkeel.cli.rollout_cmd import rollout_app
from agentkeel.cli.router_cmd import router_app
from agentkeel.cli.secrets_cmd import secrets_app
from agentkeel.cli.serve import serve_app
from agentkeel.cli.sessions_cmd import sessions_app
from agentkeel.cli.usage_cmd import usage_app

app = typer.Typer(
    name="keel",
    help="Run AI agents in production: serve, meter, protect, ship and roll back.",
    epilog="Example: keel up   (then, in another terminal: keel chat)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

config_app = typer.Typer(
    name="config",
    help="Inspect the effective settings: per layer, per user, per environment.",
    no_args_is_help=True,
)


@app.callback()
def _global_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="KEEL_CONFIG",
            help="The keel.yaml to read (values in KEEL_* variables still win over it).",
        ),
    ] = None,
    environment: Annotated[
        str | None,
        typer.Option(
            "--env",
            help="Environment whose overlay keel.NAME.yaml (beside the keel.yaml, else in "
            "the working directory) is read over keel.yaml (default: KEEL_ENV).",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Directory of state, logs and the local stack's credentials "
            "(default: KEEL_DATA_DIR, else ./.keel).",
        ),
    ] = None,
) -> None:
    ctx.obj = CliState(config_path=config, data_dir=data_dir, environment=environment)


app.command(
    "up",
    epilog="Example: keel up --replicas 2 --data-dir ./.keel",
)(up_cmd.up)
app.command(
    "chat",
    epilog="Example: keel chat --url http://127.0.0.1:8081 --url http://127.0.0.1:8082",
)(chat_cmd.chat)
app.command(
    "eval",
    epilog="Example: keel eval local-smoke --min-score 0.7   (or --url http://127.0.0.1:8081)",
)(eval_cmd.eval_command)
app.command(
    "rollback",
    epilog="Example: keel rollback --dry-run   (then: keel rollback --release v2-20261201T1230)",
)(rollback_cmd.rollback_command)
app.add_typer(serve_app, name="serve", epilog="Example: keel serve agent --port 8081")
config_app.command(
    "show",
    epilog="Example: keel --config keel.yaml --env production config show --user bob --org acme",
)(config_cmd.show)
config_app.command(
    "diff",
    epilog="Example: keel --config keel.yaml config diff staging production --exit-code",
)(config_diff_cmd.diff)
app.add_typer(config_app, name="config", epilog="Example: keel config show")
app.add_typer(memory_app, name="memory")
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(sessions_app, name="sessions")
app.add_typer(usage_app, name="usage")
app.add_typer(golden_app, name="golden")
app.add_typer(rollout_app, name="rollout")
app.add_typer(router_app, name="router")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(flags_app, name="flags")
app.add_typer(render_app, name="render")
app.add_typer(logs_app, name="logs")

app.add_typer(secrets_app, name="secrets")


@app.command("version", epilog="Example: keel version")
def version() -> None:
    """Print the installed agentkeel version."""
    try:
        installed = package_version("agentkeel")
    except PackageNotFoundError:
        installed = "unknown (not installed as a package)"
    stdout_console().print(f"agentkeel {installed}")


def main() -> None:
    """Entry point of the ``keel`` script."""
    app(prog_name="keel")


if __name__ == "__main__":
    main()
