"""Audit records of local commands: who ran them, and the file they are chained into."""

from __future__ import annotations

import getpass

import typer

from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.telemetry.audit_file import install_audit_file


def cli_actor() -> str:
    """The audit actor of a local command: ``cli:<login>``."""
    try:
        login = getpass.getuser()
    except (OSError, KeyError):
        login = "unknown"
    return f"cli:{login}"


def record_audit(ctx: typer.Context) -> str:
    """Chain this command's audit records into the data directory's audit file; its actor."""
    install_audit_file(load_cli_settings(ctx).settings.data_dir, service="cli")
    return cli_actor()
