"""``keel secrets …``: the secrets group; ``rotate`` and ``status`` live here.

    keel secrets rotate NAME [--new-value-file F | --generate] [--deadline 24h]
                             [--service URL ...] [--force] [--dry-run]
    keel secrets status [NAME]

``rotate`` runs the dual-key rotation of ``secrets/rotation.py`` and journals
it in ``<data dir>/rotations.db``; run again, it finishes an interrupted
rotation. Against ``keel up`` the services are the stack's (replicas, router,
memory and tool servers); elsewhere list them with ``--service``. Exit codes:
0 done (or not due yet, or a dry run), 1 a step failed (run it again to
resume), 2 refused (a rollout is running or paused) or bad configuration.
``put`` and ``list`` come from ``secret_values_cmd``.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import secrets as token_bytes
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agentkeel.cli import secret_values_cmd
from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import (
    EXIT_CONFIG,
    EXIT_RUNTIME,
    exits_on_keel_error,
    print_error,
    print_json,
    stderr_console,
    stdout_console,
)
from agentkeel.cli.stack import LocalStack
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import ConfigError, KeelError
from agentkeel.ops.rotation_services import HttpSecretHolder, ReplicaSessionCensus, rollout_guard
from agentkeel.secrets.factory import build_secret_source
from agentkeel.secrets.files import FileSecretSource
from agentkeel.secrets.rotation import (
    Rotation,
    RotationOutcome,
    RotationRefused,
    RotationTimings,
    due_at,
    refused_by_rollout,
)
from agentkeel.secrets.rotation_journal import ROTATIONS_FILE, RotationJournal, Step
from agentkeel.secrets.source import SecretSource, WritableSecretSource

__all__ = ["parse_duration", "secrets_app"]

secrets_app = typer.Typer(
    name="secrets",
    help="Secrets in the configured source (files or Vault): put, list, rotate, status.",
    epilog="Example: keel secrets rotate openai_api_key --new-value-file ./new.key",
    no_args_is_help=True,
)
secret_values_cmd.register(secrets_app)

EXIT_REFUSED = 2
GENERATED_TOKEN_BYTES = 32

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, *, option: str = "--deadline") -> float:
    """Seconds in ``90s``, ``30m``, ``24h``, ``2d`` or a plain number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"{option} {text!r} is not a duration; write it as 90s, 30m, 24h or 2d.")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


class _RichProgress:
    """Each step as a line with a tick, waits as dim notes."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last_note = ""

    def step(self, step: Step, text: str) -> None:
        self.console.print(f"[green]✓[/] [bold]{step}[/]: {escape(text)}", soft_wrap=True)

    def note(self, text: str) -> None:
        if text != self._last_note:  # a wait repeats its line every poll
            self.console.print(f"  [dim]{escape(text)}[/]", soft_wrap=True)
            self._last_note = text


@secrets_app.command(
    "rotate",
    epilog="Example: keel secrets rotate openai_api_key --new-value-file ./openai-new.key "
    "--deadline 24h   (admin tokens: keel secrets rotate admin_token --generate)",
)
def rotate(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The secret's path, e.g. openai_api_key.")],
    new_value_file: Annotated[
        Path | None,
        typer.Option("--new-value-file", help="File that holds the new value (never printed)."),
    ] = None,
    generate: Annotated[
        bool,
        typer.Option("--generate", help="Generate a random new value (tokens agentkeel owns)."),
    ] = False,
    deadline: Annotated[
        str | None,
        typer.Option(
            "--deadline",
            help="How long sessions started before the activation keep the old value "
            "(default: secrets.rotation.deadline_s, 24h).",
        ),
    ] = None,
    service: Annotated[
        list[str] | None,
        typer.Option(
            "--service",
            help="A service's base URL to wait for (repeatable; default: the keel up stack's).",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="The services' admin token file (default: keel up's)."),
    ] = None,
    accept_timeout: Annotated[
        str, typer.Option("--accept-timeout", help="How long to wait for the services.")
    ] = "120s",
    force: Annotated[
        bool, typer.Option("--force", help="Rotate even when the last rotation is not due yet.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would happen.")] = False,
) -> None:
    """Rotate a secret with two keys overlapping, or finish an interrupted rotation.

    Steps: provisioned (new value, not used yet), accepted (every service holds it),
    activated (new sessions use it), drained (older sessions ended, or the
    deadline passed), revoked (old value removed), done. Exit 0 done, 1 failed
    (run it again to resume), 2 refused (a rollout is running).
    """
    err = stderr_console()
    try:
        outcome = asyncio.run(
            _rotate(
                ctx,
                name,
                new_value_file=new_value_file,
                generate=generate,
                deadline=deadline,
                services=service or [],
                token_file=token_file,
                accept_timeout=accept_timeout,
                force=force,
                dry_run=dry_run,
                console=err,
            )
        )
    except RotationRefused as exc:
        print_error(exc, console=err)
        raise typer.Exit(EXIT_REFUSED) from None
    except (ConfigError, KeelError) as exc:
        print_error(exc, console=err)
        code = EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_RUNTIME
        raise typer.Exit(code) from None
    out = stdout_console()
    out.print(escape(outcome.message), soft_wrap=True)
    if outcome.status == "done" and outcome.due_at is not None:
        out.print(f"Next rotation due on {_date(outcome.due_at)}.", soft_wrap=True)


async def _rotate(
    ctx: typer.Context,
    name: str,
    *,
    new_value_file: Path | None,
    generate: bool,
    deadline: str | None,
    services: list[str],
    token_file: Path | None,
    accept_timeout: str,
    force: bool,
    dry_run: bool,
    console: Console,
) -> RotationOutcome:
    if new_value_file is not None and generate:
        raise ConfigError("Pass --new-value-file or --generate, not both.")
    loaded = load_cli_settings(ctx)
    settings = loaded.settings
    stack = LocalStack.from_settings(loaded)
    source, provider = _source_for(settings, stack, name)
    config = settings.secrets.rotation
    timings = RotationTimings(
        due_days=config.due_days,
        deadline_s=parse_duration(deadline) if deadline else config.deadline_s,
        accept_timeout_s=parse_duration(accept_timeout, option="--accept-timeout"),
    )
    guard = rollout_guard(settings.data_dir)
    # Before looking for services and tokens: a refusal needs neither.
    release = await guard()
    if release is not None:
        raise refused_by_rollout(name, release)
    urls, replicas = _services(stack, services)
    token = stack.admin_token_file(token_file) if urls else None
    holders = [HttpSecretHolder(url, token_file=token) for url in urls] if token else []
    census = ReplicaSessionCensus(replicas, token_file=token) if token and replicas else None
    new_value: Callable[[], str] | None = None
    if generate:
        new_value = lambda: token_bytes.token_urlsafe(GENERATED_TOKEN_BYTES)  # noqa: E731
    elif new_value_file is not None:
        file = new_value_file
        new_value = lambda: file.read_text(encoding="utf-8")  # noqa: E731
    async with RotationJournal(settings.data_dir / ROTATIONS_FILE) as journal:
        rotation = Rotation(
            source=source,
            journal=journal,
            holders=holders,
            census=census,
            active_rollout=guard,
            actor=f"cli:{getpass.getuser()}",
            timings=timings,
            progress=_RichProgress(console),
            provider=provider,
        )
        return await rotation.run(name, new_value=new_value, force=force, dry_run=dry_run)


@secrets_app.command(
    "status", epilog="Example: keel secrets status openai_api_key   (or: keel secrets status)"
)
@exits_on_keel_error
def status(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(help="One secret (default: the configured ones).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Generations, ages and due dates of secrets, and the step of a running rotation."""
    rows = asyncio.run(_status(ctx, name))
    if json_output:
        print_json({"secrets": rows})
        return
    table = Table("secret", "generations", "current", "age", "due", "rotation")
    for row in rows:
        table.add_row(
            escape(row["name"]),
            ", ".join(str(g) for g in row["generations"]) or "-",
            str(row["current"] or "-"),
            _age(row["age_s"]),
            _date(row["due_at"]) if row["due_at"] else "-",
            escape(row["rotation"]),
        )
    stdout_console().print(table)


async def _status(ctx: typer.Context, name: str | None) -> list[dict[str, Any]]:
    loaded = load_cli_settings(ctx)
    settings = loaded.settings
    stack = LocalStack.from_settings(loaded)
    due_days = settings.secrets.rotation.due_days
    now = time.time()
    path = settings.data_dir / ROTATIONS_FILE
    async with RotationJournal(path) as journal:
        names = [name] if name else _configured_names(settings)
        if not name:
            names += [r.name for r in await journal.history(limit=200) if r.name not in names]
        rows: list[dict[str, Any]] = []
        for each in names:
            source, _ = _source_for(settings, stack, each)
            secret = source.read(each)
            unfinished = await journal.unfinished(each)
            last = await journal.last_finished(each)
            current = secret.current if secret is not None else None
            since = None
            if current is not None:
                since = current.activated_at or current.created_at
            if last is not None and last.finished_at is not None:
                since = last.finished_at
            if unfinished is not None:
                rotation = (
                    f"to generation {unfinished.to_generation}: after "
                    f"{unfinished.step or 'start'}, next {unfinished.next_step}"
                )
            elif last is not None and last.finished_at is not None:
                rotation = f"rotated {_date(last.finished_at)}"
            else:
                rotation = "never rotated"
            rows.append(
                {
                    "name": each,
                    "source": source.kind,
                    "generations": list(secret.generations) if secret is not None else [],
                    "current": current.generation if current is not None else None,
                    "age_s": secret.age_s(now) if secret is not None else None,
                    "due_at": due_at(since, due_days=due_days) if since is not None else None,
                    "rotation": rotation,
                    "running": unfinished.to_json() if unfinished is not None else None,
                }
            )
    return rows


# -- where a secret lives, and who uses it -------------------------------------------------


def _configured_names(settings: KeelSettings) -> list[str]:
    names: list[str] = []
    for provider in settings.models:
        if provider.api_key_file is not None:
            names.append(provider.api_key_file.name)
        elif provider.api_key_secret is not None:
            names.append(provider.api_key_secret)
    names.append(settings.server.admin_token_secret)
    return list(dict.fromkeys(names))


def _source_for(
    settings: KeelSettings, stack: LocalStack, name: str
) -> tuple[WritableSecretSource, str | None]:
    """The source that holds ``name`` and the provider whose key it is, if any: a
    provider's ``api_key_file`` and keel up's admin token are files of their own (their
    directory is the source); anything else is in ``secrets.source``."""
    for provider in settings.models:
        file = provider.api_key_file
        if file is not None and file.name == name:
            return FileSecretSource(root=file.parent), provider.name
    provider_name = next(
        (p.name for p in settings.models if p.api_key_secret == name and p.kind != "scripted"),
        None,
    )
    if name == settings.server.admin_token_secret and provider_name is None:
        token = settings.server.admin_token_file or stack.credential("admin_token")
        if token is not None and token.name == name:
            return FileSecretSource(root=token.parent), None
    source: SecretSource = build_secret_source(settings)
    assert isinstance(source, WritableSecretSource)
    return source, provider_name


def _services(stack: LocalStack, flags: list[str]) -> tuple[list[str], list[str]]:
    """(every service to wait for, the replicas among them that count sessions)."""
    if flags:
        return list(flags), list(flags)
    replicas, _ = stack.replica_urls(None)
    urls = list(replicas)
    if stack.running and stack.record is not None:
        urls += [s.url for s in stack.record.services.values() if s.url not in urls]
        router = stack.router_url()
        if router and router not in urls:
            urls.append(router)
    return urls, replicas


def _date(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 86400:
        return f"{seconds / 86400:.0f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds:.0f}s"
