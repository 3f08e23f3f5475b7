"""``keel keys …``: the API keys the front door accepts.

    keel keys create --name ci --org acme --scope chat [--user ana] [--expires 90d]
    keel keys list [--json]
    keel keys revoke NAME

The keys file is ``auth.api_keys_file``, else a mounted
``<secrets_dir>/<auth.api_keys_secret>``, else ``<data dir>/api_keys.yaml``
(``--file`` wins). It holds digests only; ``create`` prints the key once. Every
change writes an audit line with the local user as actor (``cli:<login>``).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from agentkeel.cli.auditing import record_audit
from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import exits_on_keel_error, print_json, stderr_console, stdout_console
from agentkeel.errors import ConfigError
from agentkeel.identity.apikeys import ApiKeyRecord, ApiKeyStore
from agentkeel.identity.principal import SCOPES
from agentkeel.telemetry.audit import audit

keys_app = typer.Typer(
    name="keys",
    help="API keys for the front door: create, list, revoke.",
    epilog="Example: keel keys create --name ci --org acme --scope chat --expires 90d",
    no_args_is_help=True,
)

FileOption = Annotated[
    Path | None,
    typer.Option(
        "--file",
        help="The API keys file (default: auth.api_keys_file, else "
        "<secrets_dir>/api_keys when mounted, else <data dir>/api_keys.yaml).",
    ),
]

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_expiry(text: str, *, now: float) -> datetime:
    """``90d``, ``12h``, ``2w`` … from ``now``, or an ISO 8601 time (UTC if no zone)."""
    match = _DURATION.match(text.strip())
    if match:
        seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
        return datetime.fromtimestamp(int(now + seconds), tz=UTC)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--expires '{text}' is neither a duration (90d, 12h, 2w) nor an ISO time "
            "(2027-01-31T00:00:00Z)."
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def keys_path(ctx: typer.Context, file: Path | None) -> Path:
    """The keys file of this invocation: ``--file``, else the settings' (see module doc)."""
    if file is not None:
        return file
    settings = load_cli_settings(ctx).settings
    return settings.auth.api_keys_path(secrets_dir=settings.secrets_dir, data_dir=settings.data_dir)


@keys_app.command(
    "create",
    epilog="Example: keel keys create --name ci --org acme --scope chat --scope sessions:read "
    "--expires 90d",
)
@exits_on_keel_error
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="A unique name, shown in audit lines.")],
    org: Annotated[str, typer.Option("--org", help="The organization the key belongs to.")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", help=f"A scope to grant (repeat it): {', '.join(SCOPES)}."),
    ],
    user: Annotated[
        str | None,
        typer.Option(
            "--user", help="Bind the key to one user (default: any user of the organization)."
        ),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option("--expires", help="When it stops working: 90d, 12h, 2w or an ISO time."),
    ] = None,
    file: FileOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Make a new API key and print it once (only its digest is stored)."""
    actor = record_audit(ctx)
    path = keys_path(ctx, file)
    expires_at = parse_expiry(expires, now=time.time()) if expires else None
    made = ApiKeyStore(path).create(
        name=name, organization=org, user=user, scopes=scope, expires_at=expires_at
    )
    audit(
        "keys.create",
        actor=actor,
        key_name=name,
        key_id=made.record.id,
        organization=org,
        scopes=",".join(made.record.scopes),
    )
    if json_out:
        print_json({**_row(made.record), "key": made.key})
        return
    out = stdout_console()
    out.print(made.key, soft_wrap=True, markup=False)
    stderr_console().print(
        f"Made the key '{escape(name)}' (id {made.record.id}) in {escape(str(path))}. "
        "This is the only time it is shown: store it now. Send it as "
        "'Authorization: Bearer <key>'.",
        soft_wrap=True,
    )


@keys_app.command("list", epilog="Example: keel keys list --json")
@exits_on_keel_error
def list_keys(
    ctx: typer.Context,
    file: FileOption = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
) -> None:
    """Show the keys (names, ids, grants, dates; never a key or its digest)."""
    records = ApiKeyStore(keys_path(ctx, file)).records()
    rows = [_row(record) for record in records]
    if json_out:
        print_json(rows)
        return
    table = Table("name", "id", "org", "user", "scopes", "created", "expires", "status")
    for row in rows:
        table.add_row(
            *(escape(str(row[column] or "-")) for column in ("name", "id", "organization", "user")),
            escape(" ".join(row["scopes"])),
            row["created_at"],
            row["expires_at"] or "-",
            row["status"] if row["status"] != "revoked" else f"revoked {row['revoked_at']}",
        )
    stdout_console().print(table)


@keys_app.command("revoke", epilog="Example: keel keys revoke ci")
@exits_on_keel_error
def revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The name of the key to revoke.")],
    file: FileOption = None,
) -> None:
    """Revoke a key: the front door refuses it from its next request on."""
    actor = record_audit(ctx)
    record = ApiKeyStore(keys_path(ctx, file)).revoke(name)
    audit("keys.revoke", actor=actor, key_name=name, key_id=record.id)
    stdout_console().print(f"Revoked the key '{escape(name)}' (id {record.id}).")


def _row(record: ApiKeyRecord) -> dict[str, Any]:
    def iso(moment: datetime | None) -> str | None:
        return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return {
        "name": record.name,
        "id": record.id,
        "organization": record.organization,
        "user": record.user,
        "scopes": list(record.scopes),
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
        "revoked_at": iso(record.revoked_at),
        "status": record.status(time.time()),
    }
