"""`keel rollback` against a real router, real agent servers, a real memory server and keel
up's control channel (see ``rollback_stack.py``): the code and the state go back, a
session of the bad version moves at its next turn, and the command's plan, progress,
failures and exit codes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from agentkeel.cli.main import app
from agentkeel.cli.rollback_cmd import RollbackTargets, roll_back
from agentkeel.deploy.rollback import STEPS
from agentkeel.ops.golden import load_golden_suite
from tests.cli.rollback_stack import RELEASE, RollbackStack, rollback_stack
from tests.tools.servers import free_port


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RollbackStack]:
    with rollback_stack(tmp_path) as running:
        yield running


def targets(stack: RollbackStack, **changes: Any) -> RollbackTargets:
    values: dict[str, Any] = {
        "rollouts_db": stack.data_dir / "rollouts.db",
        "router_url": stack.router_url,
        "router_token_file": stack.admin_token_file,
        "control_socket": stack.control_socket,
        "memory_url": stack.memory_url,
        "memory_token_file": stack.admin_token_file,
        "golden": load_golden_suite("local-smoke"),
        "drain_timeout_s": 20.0,
        "heartbeat_timeout_s": 5.0,
        "poll_interval_s": 0.05,
    }
    return RollbackTargets(**(values | changes))


def versions(stack: RollbackStack) -> dict[str, dict[str, Any]]:
    return {entry["version"]: entry for entry in stack.routing()["versions"]}  # type: ignore[attr-defined]


def next_turn_once_retired(stack: RollbackStack, replies: list[dict[str, Any]]) -> threading.Thread:
    """The v2 session's user sends a turn as soon as the router has retired v2."""

    def run() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if versions(stack).get("v2", {}).get("retired"):
                response = httpx.post(
                    f"{stack.router_url}/v1/sessions/{stack.session_on_v2}/messages",
                    json={"content": "still there?"},
                    timeout=10,
                )
                replies.append({"status": response.status_code, **response.json()})
                return
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_the_code_and_the_state_go_back(stack: RollbackStack) -> None:
    """v1 takes every session and is the only version left; v2's replica is stopped; its
    session moved to v1 at its next turn (the stored turns say so); memory is the
    snapshot's with v2's write in a quarantine; the golden checks passed on v1; the
    release is rolled_back; a second run changes nothing."""
    replies: list[dict[str, Any]] = []
    mover = next_turn_once_retired(stack, replies)
    report = asyncio.run(roll_back(targets(stack), release=None, code_only=False, dry_run=False))
    mover.join(20)
    assert report.passed, report.to_json()
    assert [step.status for step in report.steps] == ["done"] * len(STEPS)

    routing = stack.routing()
    assert routing["stable"] == "v1"
    assert [(v["version"], v["weight"]) for v in routing["versions"]] == [("v1", 100)]  # type: ignore[attr-defined]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{stack.v2_url}/health")

    assert replies and replies[0]["status"] == 200, replies
    assert replies[0]["version"] == "v1"
    session = httpx.get(f"{stack.router_url}/v1/sessions/{stack.session_on_v2}").json()
    assert [turn["version"] for turn in session["turns"]] == ["v2", "v1"]
    drain = next(s for s in report.steps if s.name == "drain_and_stop_bad_version")
    # No drain wait by default: the session moved at its next turn (the stored turns say
    # so), whether that turn came before or after the count was read.
    assert drain.data["in_router"] is True and drain.data["waited_s"] < 1

    assert stack.memories() == ["before the deploy"]
    [quarantine] = stack.quarantined()
    payloads = [json.loads(event["payload"]) for event in quarantine["events"]]  # type: ignore[attr-defined]
    assert [payload.get("content") for payload in payloads] == ["written by v2"]
    assert "golden checks passed against" in report.steps[-1].detail

    release = stack.release()
    assert release.state == "rolled_back"
    assert release.detail["rollback"]["report"]["passed"] is True

    again = asyncio.run(roll_back(targets(stack), release=RELEASE, code_only=False, dry_run=False))
    assert not again.changed
    assert [step.status for step in again.steps] == ["already_done"] * len(STEPS)


def keel(stack: RollbackStack, *args: str, memory_url: str | None = None) -> Result:
    return CliRunner().invoke(
        app,
        [
            "--data-dir",
            str(stack.data_dir),
            "rollback",
            "--router-url",
            stack.router_url,
            "--memory-url",
            memory_url or stack.memory_url,
            "--control-socket",
            str(stack.control_socket),
            "--token-file",
            str(stack.admin_token_file),
            *args,
        ],
        env={"COLUMNS": "200"},
    )


def test_dry_run_prints_the_plan_and_changes_nothing(stack: RollbackStack) -> None:
    """--dry-run --json: every step planned, the snapshot named; routing and memory as before."""
    before = versions(stack)
    result = keel(stack, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["dry_run"] is True
    assert [s["status"] for s in plan["steps"]] == ["planned"] * 5 + ["skipped"]
    assert stack.snapshot_id in plan["steps"][2]["detail"]
    assert "replica-3" in plan["steps"][3]["detail"]
    assert versions(stack) == before
    assert stack.memories() == ["before the deploy", "written by v2"]
    assert stack.release().state == "running"


def test_code_only_shows_each_step_and_leaves_memory(stack: RollbackStack) -> None:
    """--code-only: progress per step on stderr, the table on stdout, exit 0; the memory
    state keeps v2's write; the bad version is gone from the router."""
    result = keel(stack, "--code-only", "--drain-timeout", "0")
    assert result.exit_code == 0, result.output
    assert "route_new_sessions_to_previous started" in result.stderr
    assert "drain_and_stop_bad_version done" in result.stderr
    assert "fence_memory" in result.stdout and "skipped" in result.stdout
    assert set(versions(stack)) == {"v1"}
    assert stack.memories() == ["before the deploy", "written by v2"]


def test_a_failing_step_exits_1_naming_it_and_a_rerun_continues(stack: RollbackStack) -> None:
    """The memory server unreachable: the run stops at fence_memory (exit 1, the step named,
    the routing already done); run again with the right URL, it continues and finishes."""
    down = f"http://127.0.0.1:{free_port()}"
    failed = keel(stack, "--no-golden", memory_url=down)
    assert failed.exit_code == 1, failed.output
    assert "failed at step fence_memory" in failed.stderr
    assert "cannot reach the memory server" in failed.stderr
    assert "Traceback" not in failed.output
    assert versions(stack)["v2"]["weight"] == 0

    resumed = keel(stack, "--no-golden", "--drain-timeout", "0", "--json")
    assert resumed.exit_code == 0, resumed.output
    statuses = [s["status"] for s in json.loads(resumed.stdout)["steps"]]
    assert statuses == ["already_done", "done", "done", "done", "done", "skipped"]
    assert stack.memories() == ["before the deploy"]


def test_without_rollout_state_there_is_nothing_to_roll_back(tmp_path: Path) -> None:
    """No rollouts.db in the data dir: exit 1 saying where it looked."""
    (tmp_path / "control.sock").touch()
    token = tmp_path / "admin_token"
    token.write_text("t" * 32)
    result = CliRunner().invoke(
        app,
        [
            "--data-dir",
            str(tmp_path),
            "rollback",
            "--code-only",
            "--control-socket",
            str(tmp_path / "control.sock"),
            "--token-file",
            str(token),
        ],
    )
    assert result.exit_code == 1
    assert "no rollout state at" in result.stderr
    assert str(tmp_path / "rollouts.db") in result.stderr


def test_without_a_control_socket_it_says_which_flag_to_pass(tmp_path: Path) -> None:
    """No running keel up and no --control-socket: exit 2 naming the flag."""
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "rollback", "--dry-run"])
    assert result.exit_code == 2
    assert "--control-socket" in result.stderr


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["rollback", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Example: keel rollback --dry-run" in result.stdout
