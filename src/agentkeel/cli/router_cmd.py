"""``keel router …``: the router's admin API from the command line.

    keel router status                  versions, weights, replicas, pins and what the router saw
    keel router weights v1=90 v2=10     set weights in one change (--stable to switch stable)
    keel router drain URL               send nothing new to a replica
    keel router pins                    live pins per version

Every command takes ``--url`` (default: the router of the running ``keel up``,
else ``router.host``/``router.port``, http://127.0.0.1:8080), ``--token-file``
(default: ``router.admin_token_file``, then the data directory's
``admin_token`` as ``keel up`` writes it, then the secrets directory's) and
``--json``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import exits_on_keel_error, print_json, stdout_console
from agentkeel.cli.stack import STACK_FILE, LocalStack, Resolved
from agentkeel.errors import ConfigError
from agentkeel.router.admin_client import RouterAdminClient

_T = TypeVar("_T")

router_app = typer.Typer(
    name="router",
    help="The session-aware router: versions, weights, replicas and pins.",
    epilog="Example: keel router weights v1=95 v2=5",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The router's base URL (default: keel up's router, else router.host/port, "
        "http://127.0.0.1:8080).",
    ),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help="File holding the router's admin token (default: router.admin_token_file, then "
        "<data dir>/admin_token, then <secrets_dir>/admin_token).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def router_url(stack: LocalStack, flag: str | None) -> Resolved:
    """``--url``, then ``router.host``/``router.port`` when set, then the running stack's
    router (``router.url`` in its stack file), then http://127.0.0.1:<router.port>."""
    if flag:
        return Resolved(flag.rstrip("/"), "--url")
    router = stack.settings.router
    host = "127.0.0.1" if router.host in ("0.0.0.0", "") else router.host
    configured = f"http://{host}:{router.port}"
    if stack.loaded.source_of("router.port") != "default" or (
        stack.loaded.source_of("router.host") != "default"
    ):
        return Resolved(configured, "router.host/port")
    from_stack = _stack_router_url(stack)
    if from_stack:
        return Resolved(from_stack, stack.describe())
    return Resolved(configured, f"the default ({stack.describe()})")


def _stack_router_url(stack: LocalStack) -> str | None:
    """The router URL a running ``keel up`` recorded (``router.url``, or a ``router``
    service), if any."""
    if not stack.running:
        return None
    try:
        data: Any = json.loads((stack.data_dir / STACK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    router = data.get("router") if isinstance(data, dict) else None
    if isinstance(router, dict) and isinstance(router.get("url"), str):
        return str(router["url"]).rstrip("/")
    service = stack.record.services.get("router") if stack.record is not None else None
    return service.url.rstrip("/") if service is not None else None


def _call(
    ctx: typer.Context,
    url: str | None,
    token_file: Path | None,
    call: Callable[[RouterAdminClient], Awaitable[_T]],
) -> _T:
    stack = LocalStack.from_settings(load_cli_settings(ctx))
    target = router_url(stack, url)
    token = stack.router_admin_token_file(token_file)

    async def run() -> _T:
        async with RouterAdminClient(base_url=target.value, token_file=token) as api:
            return await call(api)

    return asyncio.run(run())


@router_app.command("status", epilog="Example: keel router status --json")
@exits_on_keel_error
def status(
    ctx: typer.Context,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show each version (weight, policy, pins), its replicas (ready, draining, in flight)
    and the requests the router has seen per version."""

    async def both(api: RouterAdminClient) -> tuple[dict[str, Any], dict[str, Any]]:
        return await api.status(), await api.stats()

    versions, stats = _call(ctx, url, token_file, both)
    if as_json:
        print_json({**versions, "stats": stats.get("versions", {})})
        return
    console = stdout_console()
    seen = stats.get("versions", {})
    table = Table(title=f"router: stable version {versions.get('stable')}", title_justify="left")
    for column in ("version", "weight", "policy", "pins", "requests", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column in ("version", "policy") else "right")
    for item in versions.get("versions", []):
        name = str(item["version"])
        figures = seen.get(name, {})
        label = name + (" (retired)" if item.get("retired") else "")
        table.add_row(
            escape(label),
            str(item["weight"]),
            escape(str(item["policy"])),
            str(item.get("pinned_sessions", 0)),
            str(figures.get("requests", 0)),
            _ms(figures.get("p50_ms")),
            _ms(figures.get("p99_ms")),
        )
    console.print(table)
    replicas = Table(title="replicas", title_justify="left")
    for column in ("url", "version", "state", "in flight"):
        replicas.add_column(column, justify="right" if column == "in flight" else "left")
    for item in versions.get("versions", []):
        for replica in item.get("replicas", []):
            state = (
                "draining"
                if replica.get("draining")
                else ("ready" if replica.get("ready") else "not ready")
            )
            replicas.add_row(
                escape(str(replica["url"])),
                escape(str(replica["version"])),
                state,
                str(replica.get("in_flight", 0)),
            )
    console.print(replicas)


def _ms(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def _parse_weights(pairs: list[str]) -> dict[str, int]:
    weights: dict[str, int] = {}
    for pair in pairs:
        version, sep, number = pair.partition("=")
        try:
            if not sep or not version:
                raise ValueError
            weights[version] = int(number)
        except ValueError:
            raise ConfigError(
                f"weight {pair!r} is not VERSION=NUMBER; e.g. keel router weights v1=90 v2=10"
            ) from None
    return weights


@router_app.command(
    "weights", epilog="Example: keel router weights v1=90 v2=10   (or: --stable v2 v2=100 v1=0)"
)
@exits_on_keel_error
def weights(
    ctx: typer.Context,
    pairs: Annotated[list[str], typer.Argument(help="VERSION=WEIGHT pairs, set in one change.")],
    stable: Annotated[
        str | None, typer.Option("--stable", help="Also make this version the stable one.")
    ] = None,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set the share of new sessions per version (relative weights; live sessions stay
    where they are)."""
    chosen = _parse_weights(pairs)

    async def change(api: RouterAdminClient) -> dict[str, Any]:
        await api.set_weights(chosen, stable=stable)
        return await api.status()

    report = _call(ctx, url, token_file, change)
    if as_json:
        print_json(report)
        return
    shown = ", ".join(f"{item['version']}={item['weight']}" for item in report["versions"])
    stdout_console().print(f"weights set: {escape(shown)} (stable {report['stable']})")


@router_app.command("drain", epilog="Example: keel router drain http://127.0.0.1:8082")
@exits_on_keel_error
def drain(
    ctx: typer.Context,
    replica: Annotated[str, typer.Argument(help="The replica's URL, as the router lists it.")],
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send nothing new to one replica; what it is doing finishes (its sessions' next
    turns go to the other replicas of their version)."""

    async def change(api: RouterAdminClient) -> dict[str, Any]:
        await api.drain_replica(replica)
        return await api.status()

    report = _call(ctx, url, token_file, change)
    if as_json:
        print_json(report)
        return
    stdout_console().print(f"draining {escape(replica)}: the router sends it nothing new")


@router_app.command("pins", epilog="Example: keel router pins --json")
@exits_on_keel_error
def pins(
    ctx: typer.Context,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Count the live session pins per version."""
    report = _call(ctx, url, token_file, lambda api: api.pins())
    if as_json:
        print_json(report)
        return
    table = Table(title=f"{report.get('total', 0)} pinned session(s)", title_justify="left")
    table.add_column("version")
    table.add_column("sessions", justify="right")
    for version, count in report.get("by_version", {}).items():
        table.add_row(escape(str(version)), str(count))
    stdout_console().print(table)
