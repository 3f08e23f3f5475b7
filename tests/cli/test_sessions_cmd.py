"""`keel sessions live|prune|forget` against a real agent server on a free port, finding
the admin token in the data directory the way they would after `keel up`."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from rich.console import Console
from typer.testing import CliRunner, Result

from agentkeel.cli.chat import ChatClient, run_conversation
from agentkeel.cli.main import app as keel
from agentkeel.config.layers import load_settings
from agentkeel.runtime.app import create_app
from tests.integration.test_drain import free_port

TOKEN = "sessions-cli-admin-" + "k" * 24


@dataclass
class Served:
    url: str
    data_dir: Path

    def session(self, user_id: str, *, turns: int = 1) -> str:
        with httpx.Client(base_url=self.url) as client:
            created = client.post("/v1/sessions", json={"user_id": user_id})
            session_id = str(created.json()["session_id"])
            for _ in range(turns):
                reply = client.post(
                    f"/v1/sessions/{session_id}/messages", json={"content": "hello"}
                )
                assert reply.status_code == 200, reply.text
        return session_id

    def status_of(self, session_id: str) -> int:
        return httpx.get(f"{self.url}/v1/sessions/{session_id}").status_code


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """An agent server (SQLite in a data dir that holds admin_token) under uvicorn."""
    data_dir = tmp_path / "keel-data"
    data_dir.mkdir()
    (data_dir / "admin_token").write_text(TOKEN + "\n")
    script = tmp_path / "script.yaml"
    script.write_text("on_end: echo\nsteps: []\n")
    settings = load_settings(
        layers=[],
        overrides={
            "data_dir": str(data_dir),
            "secrets_dir": None,
            "models": [{"name": "scripted", "kind": "scripted", "script": str(script)}],
            "agent": {"tools": []},
            "server": {
                "replica_id": "replica-1",
                "admin_token_file": str(data_dir / "admin_token"),
            },
        },
    ).settings
    app = create_app(settings, registry=CollectorRegistry())
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "agent server did not start"
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", data_dir)
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def run(served: Served, *args: str, data_dir: Path | None = None) -> Result:
    """`keel --data-dir DIR sessions ARGS --url URL`: no --token-file, as a user types it."""
    return CliRunner().invoke(
        keel,
        ["--data-dir", str(data_dir or served.data_dir), "sessions", *args, "--url", served.url],
        env={"COLUMNS": "200"},
    )


def test_live_finds_the_token_in_the_data_dir_and_counts_by_version(served: Served) -> None:
    """`keel sessions live` reads <data dir>/admin_token and shows the live sessions."""
    served.session("ana")
    served.session("bob")

    result = run(served, "live", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["by_version"] == {"v1": 2}
    assert report["by_replica"] == {"replica-1": 2}
    table = run(served, "live")
    assert table.exit_code == 0
    assert "2 live session(s)" in table.stdout
    assert "replica-1" in table.stdout


def test_prune_dry_run_counts_and_removes_nothing(served: Served) -> None:
    """`prune --dry-run` reports counts (nothing has ended long enough ago) and exits 0."""
    session_id = served.session("ana")
    httpx.delete(f"{served.url}/v1/sessions/{session_id}")

    dry = run(served, "prune", "--dry-run", "--json")
    real = run(served, "prune")

    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["sessions"] == 0
    assert real.exit_code == 0, real.output
    assert "removed" in real.stdout
    assert served.status_of(session_id) == 200


def test_forget_removes_the_users_sessions_and_turns(served: Served) -> None:
    """`forget --user ana --yes` removes ana's sessions (GET is 404 afterwards) and
    leaves bob's; the dry run before it removed nothing."""
    mine = [served.session("ana", turns=2), served.session("ana")]
    theirs = served.session("bob")

    dry = run(served, "forget", "--user", "ana", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert (json.loads(dry.stdout)["sessions"], json.loads(dry.stdout)["turns"]) == (2, 3)
    assert served.status_of(mine[0]) == 200

    result = run(served, "forget", "--user", "ana", "--yes")

    assert result.exit_code == 0, result.output
    assert "removed" in result.stdout
    assert "no memory server is configured" in result.stdout
    assert [served.status_of(session_id) for session_id in mine] == [404, 404]
    assert served.status_of(theirs) == 200


def test_forget_of_an_unknown_user_says_so_and_exits_0(served: Served) -> None:
    """A user with no sessions is not an error: a message and exit 0."""
    result = run(served, "forget", "--user", "nobody", "--yes")
    assert result.exit_code == 0, result.output
    assert "no sessions or memories found for user 'nobody'" in result.stdout


def test_forget_with_org_touches_only_that_organizations_user(served: Served) -> None:
    """`forget --user ana --org acme` sends the organization: ana's session without one
    stays, and the message names the organization."""
    session_id = served.session("ana")
    result = run(served, "forget", "--user", "ana", "--org", "acme", "--yes")
    assert result.exit_code == 0, result.output
    assert "user 'ana' of organization 'acme'; nothing was removed" in result.stdout
    assert served.status_of(session_id) == 200
    dry = run(served, "forget", "--user", "ana", "--org", "acme", "--dry-run", "--json")
    assert json.loads(dry.stdout)["organization"] == "acme"


def test_forget_asks_before_removing_anything(served: Served) -> None:
    """Without --yes, answering no aborts and keeps the sessions."""
    session_id = served.session("ana")
    result = CliRunner().invoke(
        keel,
        ["--data-dir", str(served.data_dir), "sessions", "forget", "--user", "ana"],
        input="n\n",
    )
    assert result.exit_code == 1
    assert served.status_of(session_id) == 200


def test_a_missing_token_is_a_clear_error_with_exit_2(served: Served, tmp_path: Path) -> None:
    """With no token file anywhere the command says what it tried and what to pass."""
    empty = tmp_path / "empty-data"
    result = run(served, "live", data_dir=empty)
    assert result.exit_code == 2
    assert "no admin token file found" in result.stderr
    assert str(empty / "admin_token") in result.stderr
    assert "--token-file" in result.stderr


def test_a_wrong_token_and_an_unreachable_replica_exit_1(served: Served, tmp_path: Path) -> None:
    """A token the replica refuses is its 403 message; a closed port names the URL."""
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token")
    refused = CliRunner().invoke(
        keel, ["sessions", "live", "--url", served.url, "--token-file", str(wrong)]
    )
    assert refused.exit_code == 1
    assert "403" in refused.stderr and "admin token is not valid" in refused.stderr
    closed = f"http://127.0.0.1:{free_port()}"
    down = CliRunner().invoke(
        keel,
        ["sessions", "live", "--url", closed, "--token-file", str(served.data_dir / "admin_token")],
    )
    assert down.exit_code == 1
    assert f"cannot reach the agent server at {closed}" in down.stderr
    assert TOKEN not in refused.output + down.output


@pytest.mark.parametrize("command", [[], ["live"], ["prune"], ["forget"]])
def test_every_sessions_command_has_help_with_an_example(command: list[str]) -> None:
    """`--help` of each command works and shows an example."""
    result = CliRunner().invoke(keel, ["sessions", *command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Example: keel sessions" in result.stdout


def test_chat_starts_a_new_session_when_its_session_has_ended(served: Served) -> None:
    """`keel chat` on a session that ended prints the 410's message, starts a new session
    and carries on in it."""
    ended = served.session("ana")
    httpx.delete(f"{served.url}/v1/sessions/{ended}")
    inputs = iter(["hello", "hello again", "/quit"])
    out = io.StringIO()
    started: list[str] = []
    with httpx.Client(timeout=10) as http:
        chat = ChatClient(urls=[served.url], client=http)

        def restart() -> str:
            started.append(chat.start_session("ana"))
            return started[-1]

        code = run_conversation(
            chat,
            ended,
            ask=lambda: next(inputs),
            console=Console(file=out, width=200),
            restart=restart,
        )

    assert code == 0
    assert len(started) == 1
    text = out.getvalue()
    assert f"started a new session {started[0]}" in text
    assert "turn 1" in text
    with httpx.Client(base_url=served.url) as client:
        assert client.get(f"/v1/sessions/{started[0]}").json()["turn_count"] == 1
