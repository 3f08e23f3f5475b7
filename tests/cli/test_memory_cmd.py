"""`keel memory …` and `keel snapshot …` against a real memory server on a free port."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import uvicorn
import yaml
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner, Result

from agentkeel.cli.main import app as keel_app
from agentkeel.cli.memory_cmd import memory_app, snapshot_app
from agentkeel.cli.stack import StackFile
from agentkeel.config.memory import MemorySettings
from agentkeel.memory.app import create_app
from tests.integration.test_drain import free_port

TOKEN = "cli-test-token-" + "c" * 24
ADMIN = "cli-test-admin-" + "a" * 24
NS = "agent:cli/user:1"


@dataclass
class Served:
    url: str
    admin_file: Path
    token_file: Path
    data_dir: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A memory server (SQLite, no scheduler) under uvicorn in a thread."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        yaml.safe_dump({"tokens": {TOKEN: {"name": "cli", "read": [NS], "write": [NS]}}})
    )
    admin_file = tmp_path / "admin_token"
    admin_file.write_text(ADMIN)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    settings = MemorySettings(
        data_dir=tmp_path / "memory",
        secrets_dir=None,
        tokens_file=tokens,
        admin_token_file=admin_file,
    )
    app = create_app(settings, registry=CollectorRegistry(), run_scheduler=False)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "memory server did not start"
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", admin_file, token_file, settings.data_dir)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def keel() -> typer.Typer:
    """The two sub-apps mounted as `keel` mounts them."""
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """keel"""

    root.add_typer(memory_app, name="memory")
    root.add_typer(snapshot_app, name="snapshot")
    return root


WIDE = {"COLUMNS": "250"}


def run(served: Served, *args: str, admin: bool = True, input: str | None = None) -> Result:
    token = served.admin_file if admin else served.token_file
    return CliRunner().invoke(
        keel(),
        [*args, "--url", served.url, "--token-file", str(token)],
        input=input,
        env=WIDE,
    )


def run_json(served: Served, *args: str, admin: bool = True) -> dict[str, object]:
    result = run(served, *args, "--json", admin=admin)
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


COMMANDS = [
    ["memory"],
    ["memory", "search"],
    ["memory", "get"],
    ["memory", "put"],
    ["memory", "delete"],
    ["memory", "integrity"],
    ["memory", "quarantine"],
    ["memory", "quarantine", "list"],
    ["memory", "quarantine", "replay"],
    ["snapshot"],
    ["snapshot", "create"],
    ["snapshot", "list"],
    ["snapshot", "verify"],
    ["snapshot", "restore"],
    ["snapshot", "prune"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_help_shows_an_example(command: list[str]) -> None:
    """`--help` of every memory and snapshot command succeeds and shows an example."""
    result = CliRunner().invoke(keel(), [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Example: keel" in result.output
    if len(command) > 1 and command[-1] != "quarantine":
        assert "--json" in result.output


def test_put_get_search_delete(served: Served) -> None:
    """A namespace token can put, get, search (table and JSON) and delete its memories."""
    created = run_json(
        served,
        "memory",
        "put",
        NS,
        "Prefers email over phone",
        "--tag",
        "contact",
        "--importance",
        "0.8",
        "--metadata",
        '{"source": "cli"}',
        admin=False,
    )
    memory = created["memory"]
    assert isinstance(memory, dict)
    memory_id = str(memory["id"])
    assert memory["tags"] == ["contact"] and memory["metadata"] == {"source": "cli"}

    shown = run(served, "memory", "get", memory_id, admin=False)
    assert shown.exit_code == 0, shown.output
    assert "Prefers email over phone" in shown.stdout and "contact" in shown.stdout

    table = run(served, "memory", "search", NS, "email", admin=False)
    assert table.exit_code == 0, table.output
    assert memory_id in table.stdout and "1 memories in" in table.stdout
    found = run_json(served, "memory", "search", NS, "email", "--tag", "contact", admin=False)
    assert found["count"] == 1
    assert run_json(served, "memory", "search", NS, "nothing-like-this")["count"] == 0

    deleted = run(served, "memory", "delete", memory_id, "--version", "1", admin=False)
    assert deleted.exit_code == 0, deleted.output
    assert f"deleted memory {memory_id}" in deleted.stdout
    gone = run(served, "memory", "get", memory_id, admin=False)
    assert gone.exit_code == 1
    assert "was not found" in gone.stderr


def test_errors_are_one_red_line_with_exit_codes(served: Served, tmp_path: Path) -> None:
    """Refusals and an unreachable server exit 1 with one line on stderr; a missing token
    file exits 2; bad --metadata says what to send."""
    forbidden = run(served, "memory", "put", "agent:other", "x", admin=False)
    assert forbidden.exit_code == 1
    assert forbidden.stderr.count("\n") == 1 and "may not write namespace" in forbidden.stderr
    assert forbidden.stdout == ""

    nowhere = CliRunner().invoke(
        keel(),
        [
            "memory",
            "search",
            NS,
            "--url",
            f"http://127.0.0.1:{free_port()}",
            "--token-file",
            str(served.token_file),
        ],
        env=WIDE,
    )
    assert nowhere.exit_code == 1
    assert "cannot reach the memory server" in nowhere.stderr

    missing = CliRunner().invoke(
        keel(), ["snapshot", "list", "--token-file", str(tmp_path / "nope")], env=WIDE
    )
    assert missing.exit_code == 2 and "does not exist" in missing.stderr

    bad = run(served, "memory", "put", NS, "x", "--metadata", "{not json", admin=False)
    assert bad.exit_code == 1 and "--metadata is not valid JSON" in bad.stderr

    not_admin = run(served, "snapshot", "list", admin=False)
    assert not_admin.exit_code == 1 and "admin token" in not_admin.stderr


def test_token_file_comes_from_the_settings_when_not_given(served: Served) -> None:
    """Without --token-file the memory admin token file named in the settings is used."""
    result = CliRunner().invoke(
        keel(),
        ["snapshot", "list", "--url", served.url, "--json"],
        env={"KEEL_MEMORY__ADMIN_TOKEN_FILE": str(served.admin_file)},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"snapshots": []}


def local_stack(data_dir: Path, memory_url: str, admin_file: Path | None) -> Path:
    """A data directory as keel up leaves it: its admin token and a live stack file."""
    data_dir.mkdir(parents=True)
    if admin_file is not None:
        (data_dir / "admin_token").write_text(admin_file.read_text())
    StackFile(data_dir=data_dir).write(
        services={"memory": (memory_url, int(memory_url.rsplit(":", 1)[1]))}, state="running"
    )
    return data_dir


def test_commands_find_the_local_stack_without_flags(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --url or --token-file, the memory server and admin token of the keel up stack
    in the data directory are used, on its own port: the directory named by --data-dir,
    by KEEL_DATA_DIR, or ./.keel in the working directory."""
    data = local_stack(tmp_path / "data", served.url, served.admin_file)
    runner = CliRunner()
    by_flag = runner.invoke(
        keel_app, ["--data-dir", str(data), "snapshot", "create", "--kind", "deploy"], env=WIDE
    )
    assert by_flag.exit_code == 0, by_flag.output
    assert "snapshot taken" in by_flag.stdout
    by_env = runner.invoke(
        keel_app, ["memory", "integrity"], env={**WIDE, "KEEL_DATA_DIR": str(data)}
    )
    assert by_env.exit_code == 0, by_env.output
    assert "hash chain" in by_env.stdout
    local_stack(tmp_path / "project" / ".keel", served.url, served.admin_file)
    monkeypatch.chdir(tmp_path / "project")
    by_cwd = runner.invoke(keel_app, ["memory", "put", NS, "Prefers email", "--tag", "contact"])
    assert by_cwd.exit_code == 0, by_cwd.output
    assert "stored memory" in by_cwd.stdout


def test_an_unreachable_stack_names_where_the_url_came_from(served: Served, tmp_path: Path) -> None:
    """When the stack's memory server does not answer, the error says the URL came from
    the stack file and to pass --url."""
    dead_url = f"http://127.0.0.1:{free_port()}"
    data = local_stack(tmp_path / "data", dead_url, served.admin_file)
    result = CliRunner().invoke(keel_app, ["--data-dir", str(data), "memory", "integrity"])
    assert result.exit_code == 1
    assert f"cannot reach the memory server at {dead_url}" in result.stderr
    assert "stack.json" in result.stderr and "--url" in result.stderr


def test_snapshot_create_list_verify_and_restore_with_quarantine(served: Served) -> None:
    """Take a snapshot, verify it, write more, restore to the snapshot: the later write
    is quarantined, listed, and replayed back."""
    run_json(served, "memory", "put", NS, "kept by the snapshot")
    snap = run_json(served, "snapshot", "create", "--kind", "deploy", "--label", "v1")
    snapshot_id = str(snap["id"])
    listing = run(served, "snapshot", "list")
    assert listing.exit_code == 0 and snapshot_id in listing.stdout and "deploy" in listing.stdout

    verified = run(served, "snapshot", "verify", snapshot_id)
    assert verified.exit_code == 0, verified.output
    assert "scratch_restore" in verified.stdout and "FAILED" not in verified.stdout
    deep = run_json(served, "snapshot", "verify", "--deep", snapshot_id)
    checks = deep["checks"]
    assert isinstance(checks, list)
    log_detail = {check["name"]: check["detail"] for check in checks}["log"]
    assert deep["ok"] is True and "replay of the log" in log_detail

    run_json(served, "memory", "put", NS, "written after the snapshot")
    restored = run_json(served, "snapshot", "restore", "--snapshot", snapshot_id, "--yes")
    assert restored["quarantined_events"] == 1 and restored["memories"] == 1
    search = run_json(served, "memory", "search", NS)
    assert search["count"] == 1

    quarantines = run_json(served, "memory", "quarantine", "list", "--events")["quarantines"]
    assert isinstance(quarantines, list) and len(quarantines) == 1
    assert quarantines[0]["events"][0]["op"] == "create"
    table = run(served, "memory", "quarantine", "list", "--events")
    assert table.exit_code == 0 and "events in" in table.stdout

    replayed = run(served, "memory", "quarantine", "replay", str(quarantines[0]["id"]))
    assert replayed.exit_code == 0, replayed.output
    assert "1 event(s) applied, 0 skipped" in replayed.stdout
    assert run_json(served, "memory", "search", NS)["count"] == 2
    # The restore's own fence came down: writes work again.
    assert run(served, "memory", "put", NS, "after the restore").exit_code == 0


def test_restore_to_a_sequence_asks_first_and_needs_one_target(served: Served) -> None:
    """restore needs exactly one target (exit 2); without --yes it asks, and "n" aborts."""
    neither = run(served, "snapshot", "restore")
    assert neither.exit_code == 2 and "exactly one" in neither.output
    both = run(served, "snapshot", "restore", "--seq", "0", "--at", "0")
    assert both.exit_code == 2
    run_json(served, "memory", "put", NS, "one")
    declined = run(served, "snapshot", "restore", "--seq", "0", input="n\n")
    assert declined.exit_code == 1
    assert run_json(served, "memory", "search", NS)["count"] == 1
    accepted = run(served, "snapshot", "restore", "--seq", "0", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "1 later event(s) quarantined" in accepted.stdout
    assert run_json(served, "memory", "search", NS)["count"] == 0


def test_verify_of_a_damaged_snapshot_exits_1(served: Served) -> None:
    """A snapshot file changed on disk fails verification: FAILED in the table, exit 1."""
    run_json(served, "memory", "put", NS, "some state")
    snap = run_json(served, "snapshot", "create")
    path = Path(str(snap["path"]))
    with gzip.open(path, "ab") as handle:
        handle.write(b'{"tampered": true}\n')
    result = run(served, "snapshot", "verify", str(snap["id"]))
    assert result.exit_code == 1
    assert "FAILED" in result.stdout and "checksum" in result.stdout
    assert "failed verification (checksum)" in result.stderr
    listed = run_json(served, "snapshot", "list")["snapshots"]
    assert isinstance(listed, list) and listed[0]["verified_ok"] is False


def test_integrity_and_prune(served: Served) -> None:
    """integrity reports ok (table and JSON); prune --dry-run keeps the newest and
    removes nothing."""
    run_json(served, "memory", "put", NS, "checked")
    table = run(served, "memory", "integrity")
    assert table.exit_code == 0, table.output
    assert "hash chain" in table.stdout and "ok" in table.stdout
    report = run_json(served, "memory", "integrity")
    assert report["ok"] is True and report["events"] == 1
    first = run_json(served, "snapshot", "create")
    second = run_json(served, "snapshot", "create")
    plan = run_json(served, "snapshot", "prune", "--dry-run")
    assert plan["dry_run"] is True
    assert plan["remove"] == [first["id"]]
    assert list(plan["keep"]) == [second["id"]]  # type: ignore[call-overload]
    pruned = run(served, "snapshot", "prune")
    assert pruned.exit_code == 0 and "removed" in pruned.stdout
    remaining = run_json(served, "snapshot", "list")["snapshots"]
    assert [s["id"] for s in remaining] == [second["id"]]  # type: ignore[attr-defined]
