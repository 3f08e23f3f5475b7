"""``keel memory …`` and ``keel snapshot …``: the memory server from the command line.

    keel memory search|get|put|delete        memories, with a namespace token or the admin's
    keel memory integrity                    hash chain + state check (admin)
    keel memory quarantine list|replay       events a restore moved aside (admin)
    keel snapshot create|list|verify|restore|prune                       (admin)

Every command takes ``--url``, ``--token-file`` and ``--json``. Without them the
URL and the token come from the settings, else from the local stack that
``keel up`` describes in its data directory (``cli/stack.py``): right after
``keel up`` every command works as is, whatever ports it was given. Tables go
to stdout, spinners to stderr, so ``--json`` output stays clean for scripts.
A failed integrity check or verification exits 1, like any other error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import (
    EXIT_RUNTIME,
    exits_on_keel_error,
    print_json,
    stderr_console,
    stdout_console,
)
from agentkeel.cli.stack import LocalStack
from agentkeel.errors import InvalidRequest, MemoryUnavailable
from agentkeel.memory.api_client import MemoryApiClient

_T = TypeVar("_T")

SHORT_TIMEOUT_S = 30.0
# Snapshots, verification, restores and integrity checks read the whole store.
LONG_TIMEOUT_S = 1800.0

memory_app = typer.Typer(
    name="memory",
    help="Read and write memories; check the store's integrity; inspect quarantines.",
    epilog='Example: keel memory search agent:support/user:42 "favourite drink"',
    no_args_is_help=True,
)
quarantine_app = typer.Typer(
    name="quarantine",
    help="Events a restore moved out of the live log: list them, apply them again.",
    epilog="Example: keel memory quarantine list --events",
    no_args_is_help=True,
)
snapshot_app = typer.Typer(
    name="snapshot",
    help="Snapshots of the memory store: take, list, verify, restore, prune.",
    epilog="Example: keel snapshot create --kind deploy --label v42",
    no_args_is_help=True,
)
memory_app.add_typer(quarantine_app, name="quarantine")

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The memory server's base URL (default: memory_client.url, else the memory "
        "server of the keel up stack in the data directory, else http://127.0.0.1:8788).",
    ),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help="File holding the bearer token (default: the token files the settings name, "
        "else the keel up stack's admin_token in the data directory).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TagOption = Annotated[
    list[str] | None, typer.Option("--tag", "-t", help="A tag; repeat for several.")
]


# -- plumbing ---------------------------------------------------------------------------


def _call(
    ctx: typer.Context,
    url: str | None,
    token_file: Path | None,
    call: Callable[[MemoryApiClient], Awaitable[_T]],
    *,
    timeout_s: float = SHORT_TIMEOUT_S,
) -> _T:
    """Run ``call`` against the memory server with a fresh client, from sync code.

    The URL and token come from the flags, else the settings, else the local stack
    (``cli/stack.py``); a server that cannot be reached is reported with where its
    URL came from.
    """
    stack = LocalStack.from_settings(load_cli_settings(ctx))
    path = stack.memory_token_file(token_file)
    target = stack.memory_url(url)

    async def run() -> _T:
        async with MemoryApiClient(
            base_url=target.value, token_file=path, timeout_s=timeout_s
        ) as api:
            return await call(api)

    try:
        return asyncio.run(run())
    except MemoryUnavailable as exc:
        if target.source == "--url":
            raise
        raise MemoryUnavailable(
            f"{exc.message} The URL is from {target.source}; start keel up, or pass --url "
            "with the memory server's address.",
            retry_after=exc.retry_after,
        ) from exc


@contextmanager
def _working(message: str, *, quiet: bool = False) -> Iterator[None]:
    """A spinner on stderr while a long operation runs on the server."""
    if quiet:
        yield
        return
    with stderr_console().status(message, spinner="dots"):
        yield


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _fail(message: str) -> typer.Exit:
    stderr_console().print(f"[bold red]keel:[/] [red]{escape(message)}[/]", soft_wrap=True)
    return typer.Exit(EXIT_RUNTIME)


def _memory_table(memories: Sequence[Mapping[str, Any]], scores: Sequence[Any]) -> Table:
    # Fits 80 columns with room for the content; importance, times and versions
    # are in `keel memory get` and in --json.
    table = Table(title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("content", overflow="fold", ratio=3, min_width=20)
    table.add_column("tags", overflow="fold", ratio=1)
    table.add_column("score", justify="right", no_wrap=True)
    for memory, score in zip(memories, scores, strict=True):
        table.add_row(
            escape(str(memory["id"])),
            escape(str(memory["content"])),
            escape(", ".join(memory.get("tags", []))),
            "-" if score is None else f"{float(score):.2f}",
        )
    return table


# -- keel memory ------------------------------------------------------------------------


@memory_app.command(
    "search",
    epilog='Example: keel memory search agent:support/user:42 "favourite drink" --tag preference',
)
@exits_on_keel_error
def search(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="The namespace to search.")],
    query: Annotated[
        str | None, typer.Argument(help="Words to look for; leave out to list the newest.")
    ] = None,
    tag: TagOption = None,
    since: Annotated[
        str | None, typer.Option(help="Created at or after: ISO 8601 or epoch seconds.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Created at or before: ISO 8601 or epoch seconds.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Results at most.")] = 20,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search one namespace by full text (ranked), or list its newest memories."""
    hits = _call(
        ctx,
        url,
        token_file,
        lambda api: api.request(
            "GET",
            "/v1/memories",
            params=[
                ("namespace", namespace),
                ("limit", limit),
                *([("q", query)] if query else []),
                *([("tags", ",".join(tag))] if tag else []),
                *([("since", since)] if since else []),
                *([("until", until)] if until else []),
            ],
        ),
    )
    if as_json:
        print_json(hits)
        return
    results = hits["results"]
    if not results:
        stdout_console().print(f"no memories matched in {escape(namespace)}")
        return
    table = _memory_table([r["memory"] for r in results], [r["score"] for r in results])
    table.title = f"{len(results)} memories in {escape(namespace)}"
    stdout_console().print(table)


@memory_app.command("get", epilog="Example: keel memory get 3f2a9c0d41e84b57a1c2d3e4f5a6b7c8")
@exits_on_keel_error
def get(
    ctx: typer.Context,
    memory_id: Annotated[str, typer.Argument(help="The memory's id.")],
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one memory with every field."""
    memory = _call(ctx, url, token_file, lambda api: api.get(memory_id)).to_json()
    if as_json:
        print_json({"memory": memory})
        return
    table = Table(show_header=False, title=f"memory {escape(memory_id)}", title_justify="left")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in memory.items():
        if key in ("created_at", "updated_at"):
            shown = _when(value)
        elif isinstance(value, list | dict):
            shown = json.dumps(value, ensure_ascii=False)
        else:
            shown = str(value)
        table.add_row(key, escape(shown))
    stdout_console().print(table)


@memory_app.command(
    "put",
    epilog='Example: keel memory put agent:support/user:42 "Prefers email" --tag contact',
)
@exits_on_keel_error
def put(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="The namespace to write in.")],
    content: Annotated[str, typer.Argument(help="The memory's text.")],
    tag: TagOption = None,
    importance: Annotated[float, typer.Option(min=0, max=1, help="From 0 to 1.")] = 0.5,
    metadata: Annotated[
        str | None, typer.Option(help='A JSON object, e.g. \'{"source": "import"}\'.')
    ] = None,
    memory_id: Annotated[
        str | None, typer.Option("--id", help="The id to use (default: a new one).")
    ] = None,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a memory."""
    extra: dict[str, Any] = {}
    if metadata is not None:
        try:
            extra = json.loads(metadata)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(
                f"--metadata is not valid JSON ({exc.msg}); give an object such as "
                '\'{"source": "import"}\'.'
            ) from exc
        if not isinstance(extra, dict):
            raise InvalidRequest('--metadata must be a JSON object, e.g. \'{"source": "x"}\'.')
    result = _call(
        ctx,
        url,
        token_file,
        lambda api: api.create(
            namespace,
            content,
            tags=tag or (),
            importance=importance,
            metadata=extra,
            memory_id=memory_id,
        ),
    )
    if as_json:
        print_json(result)
        return
    stdout_console().print(
        f"stored memory [bold]{escape(result['memory']['id'])}[/] in {escape(namespace)} "
        f"(log seq {result['seq']})"
    )


@memory_app.command("delete", epilog="Example: keel memory delete 3f2a9c0d41e84b57 --version 2")
@exits_on_keel_error
def delete(
    ctx: typer.Context,
    memory_id: Annotated[str, typer.Argument(help="The memory's id.")],
    version: Annotated[
        int | None, typer.Option(min=1, help="Only if the memory is still at this version.")
    ] = None,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a memory (the log keeps its history; a restore can bring it back)."""
    result = _call(ctx, url, token_file, lambda api: api.delete(memory_id, version=version))
    if as_json:
        print_json(result)
        return
    stdout_console().print(f"deleted memory {escape(memory_id)} (log seq {result['seq']})")


@memory_app.command("integrity", epilog="Example: keel memory integrity --json")
@exits_on_keel_error
def integrity(
    ctx: typer.Context,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check the hash chain and that the current state equals a replay of the log.

    Exits 1 when the check fails (the server then refuses writes until an operator
    repairs the store and clears read-only).
    """
    with _working("Checking the hash chain and replaying the log…", quiet=as_json):
        report = _call(ctx, url, token_file, lambda api: api.integrity(), timeout_s=LONG_TIMEOUT_S)
    if as_json:
        print_json(report)
    else:
        table = Table(show_header=False, title="memory integrity", title_justify="left")
        table.add_column("check", style="bold", no_wrap=True)
        table.add_column("result", overflow="fold")
        chain, state = report["chain"], report["state"]
        table.add_row("hash chain", _verdict(chain["ok"], chain.get("problem")))
        table.add_row(
            "state = replay",
            _verdict(state["ok"], "; ".join(state.get("problems", [])[:3]) or None),
        )
        table.add_row("events", str(report["events"]))
        table.add_row("memories", str(report["memories"]))
        table.add_row("head", f"seq {report['head_seq']} {str(report['head_hash'])[:16]}…")
        table.add_row("took", f"{report['duration_s']:.2f}s")
        table.add_row("read-only", "yes" if report.get("read_only") else "no")
        stdout_console().print(table)
    if not report["ok"]:
        raise _fail(str(report.get("summary") or "the integrity check failed"))


def _verdict(ok: bool, problem: str | None) -> str:
    if ok:
        return "[green]ok[/]"
    return f"[red]FAILED[/] {escape(problem or '')}"


@quarantine_app.command("list", epilog="Example: keel memory quarantine list --events")
@exits_on_keel_error
def quarantine_list(
    ctx: typer.Context,
    events: Annotated[bool, typer.Option("--events", help="Show each quarantined event.")] = False,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the quarantines restores created (newest last)."""
    quarantines = _call(ctx, url, token_file, lambda api: api.list_quarantines(events=events))
    if as_json:
        print_json({"quarantines": quarantines})
        return
    if not quarantines:
        stdout_console().print("no quarantines: no restore has moved events aside")
        return
    table = Table(title="quarantines", title_justify="left")
    table.add_column("id", no_wrap=True)
    for column in ("created", "reason", "restored to", "events", "seq range", "replayed"):
        table.add_column(column, overflow="fold")
    for item in quarantines:
        table.add_row(
            escape(item["id"]),
            _when(item["created_at"]),
            escape(item["reason"]),
            f"seq {item['target_seq']}",
            str(item["event_count"]),
            f"{item['from_seq']}-{item['to_seq']}",
            _when(item["replayed_at"]) if item["replayed_at"] else "no",
        )
    console = stdout_console()
    console.print(table)
    for item in quarantines if events else []:
        detail = Table(title=f"events in {escape(item['id'])}", title_justify="left")
        for column in ("seq", "time", "op", "memory", "namespace"):
            detail.add_column(column, overflow="fold")
        for event in item.get("events", []):
            detail.add_row(
                str(event["seq"]),
                _when(event["time"]),
                event["op"],
                escape(event["memory_id"]),
                escape(event["namespace"]),
            )
        console.print(detail)


@quarantine_app.command(
    "replay", epilog="Example: keel memory quarantine replay 5d41402abc4b2a76b9719d911017c592"
)
@exits_on_keel_error
def quarantine_replay(
    ctx: typer.Context,
    quarantine_id: Annotated[str, typer.Argument(help="The quarantine's id (from list).")],
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Apply a quarantine's events again, as new events.

    Events the current state no longer allows are skipped and listed.
    """
    with _working("Replaying the quarantined events…", quiet=as_json):
        result = _call(
            ctx,
            url,
            token_file,
            lambda api: api.replay_quarantine(quarantine_id),
            timeout_s=LONG_TIMEOUT_S,
        )
    if as_json:
        print_json(result)
        return
    console = stdout_console()
    skipped = result["skipped"]
    console.print(
        f"replayed quarantine {escape(quarantine_id)}: {result['applied']} event(s) applied, "
        f"{len(skipped)} skipped"
    )
    if skipped:
        table = Table(title="skipped", title_justify="left")
        for column in ("seq", "memory", "reason"):
            table.add_column(column, overflow="fold")
        for item in skipped:
            table.add_row(str(item["seq"]), escape(item["memory_id"]), escape(item["reason"]))
        console.print(table)


# -- keel snapshot ----------------------------------------------------------------------


def _snapshot_table(snapshots: Sequence[Mapping[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    # The id carries the time it was taken (snap-YYYYmmddTHHMMSSZ-…).
    table.add_column("id", no_wrap=True)
    for column in ("kind", "seq", "count", "verified"):
        table.add_column(column, no_wrap=True)
    table.add_column("label", overflow="fold", min_width=5)
    for snap in snapshots:
        verified_ok = snap.get("verified_ok")
        verified = (
            "-" if verified_ok is None else ("[green]ok[/]" if verified_ok else "[red]FAILED[/]")
        )
        table.add_row(
            escape(snap["id"]),
            snap["kind"],
            str(snap["seq"]),
            str(snap["memories"]),
            verified,
            escape(snap.get("label") or ""),
        )
    return table


@snapshot_app.command("create", epilog="Example: keel snapshot create --kind deploy --label v42")
@exits_on_keel_error
def snapshot_create(
    ctx: typer.Context,
    label: Annotated[str, typer.Option(help="A note, e.g. the release it precedes.")] = "",
    kind: Annotated[
        str, typer.Option(help="deploy, daily, weekly or manual (retention keeps by kind).")
    ] = "manual",
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Take a consistent snapshot of the current state, with a checksum."""
    with _working("Taking a snapshot…", quiet=as_json):
        snap = _call(
            ctx,
            url,
            token_file,
            lambda api: api.create_snapshot(label=label, kind=kind),
            timeout_s=LONG_TIMEOUT_S,
        )
    if as_json:
        print_json(snap)
        return
    stdout_console().print(_snapshot_table([snap], "snapshot taken"))
    stdout_console().print(
        f"verify it before relying on it: keel snapshot verify {escape(snap['id'])}"
    )


@snapshot_app.command("list", epilog="Example: keel snapshot list --json")
@exits_on_keel_error
def snapshot_list(
    ctx: typer.Context,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the snapshots, oldest first, with their verification results."""
    snapshots = _call(ctx, url, token_file, lambda api: api.list_snapshots())
    if as_json:
        print_json({"snapshots": snapshots})
        return
    if not snapshots:
        stdout_console().print("no snapshots yet: keel snapshot create")
        return
    stdout_console().print(_snapshot_table(snapshots, f"{len(snapshots)} snapshot(s)"))


@snapshot_app.command(
    "verify", epilog="Example: keel snapshot verify snap-20250131T120000Z-1a2b3c4d"
)
@exits_on_keel_error
def snapshot_verify(
    ctx: typer.Context,
    snapshot_id: Annotated[str, typer.Argument(help="The snapshot's id (from list).")],
    deep: Annotated[
        bool,
        typer.Option(
            "--deep", help="Also walk the hash chain and compare with a replay of the log."
        ),
    ] = False,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check a snapshot's checksum and restore it into a scratch store.

    --deep also compares it with a replay of the log. Exits 1 when any check fails.
    """
    with _working(f"Verifying {snapshot_id}…", quiet=as_json):
        outcome = _call(
            ctx,
            url,
            token_file,
            lambda api: api.verify_snapshot(snapshot_id, deep=deep),
            timeout_s=LONG_TIMEOUT_S,
        )
    if as_json:
        print_json(outcome)
    else:
        table = Table(title=f"verification of {escape(snapshot_id)}", title_justify="left")
        table.add_column("check", no_wrap=True)
        table.add_column("result", no_wrap=True)
        table.add_column("detail", overflow="fold")
        for check in outcome["checks"]:
            table.add_row(
                check["name"],
                "[green]ok[/]" if check["ok"] else "[red]FAILED[/]",
                escape(check["detail"]),
            )
        stdout_console().print(table)
    if not outcome["ok"]:
        failed = [c["name"] for c in outcome["checks"] if not c["ok"]]
        raise _fail(f"snapshot {snapshot_id} failed verification ({', '.join(failed)})")


@snapshot_app.command(
    "restore",
    epilog="Example: keel snapshot restore --at 2025-01-31T12:00:00Z --reason 'bad import' --yes",
)
@exits_on_keel_error
def snapshot_restore(
    ctx: typer.Context,
    snapshot_id: Annotated[
        str | None, typer.Option("--snapshot", help="Restore to this snapshot.")
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="Restore to this time: ISO 8601 or epoch seconds.")
    ] = None,
    seq: Annotated[
        int | None, typer.Option(min=0, help="Restore to this log sequence number.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why; kept with the quarantine.")] = "keel restore",
    fence: Annotated[
        bool,
        typer.Option(
            "--fence/--no-fence",
            help="Refuse writes while restoring (clients queue them), lifted afterwards.",
        ),
    ] = True,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restore the memory state to a snapshot, a time or a sequence number.

    Nothing is deleted: events after the restore point move to a quarantine that
    `keel memory quarantine list` shows and `replay` can apply again.
    """
    targets = {"snapshot": snapshot_id, "time": at, "seq": seq}
    given = [(name, value) for name, value in targets.items() if value is not None]
    if len(given) != 1:
        raise typer.BadParameter(
            "give exactly one of --snapshot ID, --at TIME or --seq N", param_hint="target"
        )
    target = f"{given[0][0]} {given[0][1]}"
    if not yes:
        typer.confirm(
            f"Restore memory to {target}? Later events move to a quarantine (nothing is deleted).",
            abort=True,
        )

    async def run(api: MemoryApiClient) -> dict[str, Any]:
        already = False
        if fence:
            raised = await api.raise_fence(f"restore to {target}: {reason}")
            already = bool(raised.get("already_fenced"))
        try:
            return await api.restore(snapshot_id=snapshot_id, at=at, seq=seq, reason=reason)
        finally:
            # A fence an operator raised before stays up; ours comes down.
            if fence and not already:
                await api.lift_fence()

    with _working(f"Restoring to {target}…", quiet=as_json):
        result = _call(ctx, url, token_file, run, timeout_s=LONG_TIMEOUT_S)
    if as_json:
        print_json(result)
        return
    console = stdout_console()
    console.print(
        f"restored to seq {result['target_seq']}: {result['memories']} memories now; "
        f"{result['quarantined_events']} later event(s) quarantined"
    )
    if result.get("quarantine_id"):
        console.print(
            f"inspect: keel memory quarantine list --events; apply again: keel memory "
            f"quarantine replay {escape(result['quarantine_id'])}"
        )


@snapshot_app.command("prune", epilog="Example: keel snapshot prune --dry-run")
@exits_on_keel_error
def snapshot_prune(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would go; remove nothing.")
    ] = False,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Apply the retention policy: remove the snapshots it does not keep.

    memory.retention decides: by default the newest deploy snapshot, the newest one of
    the last 24 hours and one per week for 4 weeks stay; the rest go (files and catalog
    rows).
    """
    with _working("Pruning snapshots…", quiet=as_json):
        decision = _call(
            ctx,
            url,
            token_file,
            lambda api: api.prune_snapshots(dry_run=dry_run),
            timeout_s=LONG_TIMEOUT_S,
        )
    if as_json:
        print_json(decision)
        return
    table = Table(
        title="retention (dry run: nothing removed)" if dry_run else "retention",
        title_justify="left",
    )
    table.add_column("snapshot", no_wrap=True)
    table.add_column("decision", overflow="fold")
    for snapshot_id, reasons in decision["keep"].items():
        table.add_row(escape(snapshot_id), "[green]keep[/]: " + escape(", ".join(reasons)))
    verb = "would remove" if dry_run else "removed"
    for snapshot_id in decision["remove"]:
        table.add_row(escape(snapshot_id), f"[red]{verb}[/]")
    stdout_console().print(table)
