"""``keel secrets put`` and ``keel secrets list``: secret values in the configured source.

    keel secrets put PATH [--value-file F]   store a value (read from F, else stdin)
    keel secrets list [PREFIX]               paths, generations and age; never values

They act on ``secrets.source`` (files under ``secrets_dir``, or Vault). ``put``
writes one active version, one generation above the one it replaces (a dual-key
rotation is ``keel secrets rotate``). Every ``put`` is audited.
"""

from __future__ import annotations

import getpass
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr
from rich.markup import escape
from rich.table import Table

from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import exits_on_keel_error, print_json, stdout_console
from agentkeel.errors import ConfigError, SecretError
from agentkeel.secrets.cache import CachedSecretSource
from agentkeel.secrets.factory import build_secret_source
from agentkeel.secrets.paths import check_path
from agentkeel.secrets.source import SecretVersion
from agentkeel.telemetry.audit import audit

_MAX_SECRET_BYTES = 64 * 1024


def register(secrets_app: typer.Typer) -> None:
    """Add ``put`` and ``list`` to the ``keel secrets`` group."""
    secrets_app.command(
        "put",
        epilog="Example: keel secrets put orgs/acme/openai --value-file ./acme-openai.key",
    )(put)
    secrets_app.command("list", epilog="Example: keel secrets list byok/")(list_secrets)


def _source(ctx: typer.Context) -> CachedSecretSource:
    return build_secret_source(load_cli_settings(ctx).settings)


@exits_on_keel_error
def put(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="The secret's path, e.g. orgs/acme/openai.")],
    value_file: Annotated[
        Path | None,
        typer.Option("--value-file", help="File that holds the value (default: read stdin)."),
    ] = None,
) -> None:
    """Store a secret's value as its new active version (never printed)."""
    check_path(path)
    raw = value_file.read_bytes() if value_file is not None else sys.stdin.buffer.read()
    if len(raw) > _MAX_SECRET_BYTES:
        raise ConfigError(f"The value for '{path}' is {len(raw)} bytes; at most 64 KiB.")
    value = raw.decode("utf-8").strip()
    if not value:
        raise ConfigError(f"No value for '{path}': pass --value-file FILE or pipe it on stdin.")
    source = _source(ctx)
    previous = source.refresh(path)
    generation = (max(previous.generations) + 1) if previous is not None else 1
    now = time.time()
    source.write(
        path,
        [SecretVersion(SecretStr(value), generation, created_at=now, activated_at=now)],
    )
    audit(
        "secrets.put",
        actor=f"cli:{getpass.getuser()}",
        path=path,
        source=source.kind,
        generation=generation,
    )
    stdout_console().print(
        f"Stored [bold]{escape(path)}[/] generation {generation} in {escape(source.where(path))}."
    )


@exits_on_keel_error
def list_secrets(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="Only paths under this prefix.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List secret paths with their generations and age (never their values)."""
    source = _source(ctx)
    now = time.time()
    rows: list[dict[str, object]] = []
    for path in source.paths(prefix.strip("/")):
        try:
            secret = source.read(path)
        except SecretError as exc:
            rows.append(
                {
                    "path": path,
                    "generations": [],
                    "current": None,
                    "age_days": None,
                    "error": exc.message,
                }
            )
            continue
        if secret is None:
            continue
        rows.append(
            {
                "path": path,
                "generations": list(secret.generations),
                "current": secret.current.generation,
                "age_days": round(secret.age_s(now) / 86400, 1),
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table("path", "generations", "current", "age (days)")
    for row in rows:
        generations = row["generations"]
        assert isinstance(generations, list)
        table.add_row(
            escape(str(row["path"])),
            ", ".join(str(g) for g in generations) or str(row.get("error", "")),
            str(row["current"] or "-"),
            str(row["age_days"] if row["age_days"] is not None else "-"),
        )
    stdout_console().print(table)
