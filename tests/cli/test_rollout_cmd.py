"""`keel rollout`: help, status from the rollout state, and refusals with clear messages."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeel.cli.main import app
from agentkeel.deploy.state import Release, RolloutStore


def keel(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def record(data_dir: Path, **changes: object) -> Release:
    release = Release(
        release="v2-20261201T123000",
        version="v2",
        previous="v1",
        strategy="canary",
        started_at=1_764_592_200.0,
        updated_at=1_764_592_200.0,
        phase="traffic",
        step=1,
        elapsed_s=754.0,
        snapshot_id="snap-1",
        detail={
            "weights": {"v1": 75, "v2": 25},
            "sessions": {"v1": 31, "v2": 9},
            "stable": "v1",
            "analyses": 17,
            "verdict": {
                "outcome": "inconclusive",
                "rollback": False,
                "metrics": [
                    {"name": "tool_success", "outcome": "pass", "stable": 0.95, "canary": 0.951},
                    {"name": "turn_latency", "outcome": "inconclusive", "detail": "n=40"},
                ],
            },
            "events": [{"at": 1_764_592_260.0, "event": "traffic (step 2)"}],
        },
    )
    for key, value in changes.items():
        setattr(release, key, value)

    async def save() -> None:
        async with RolloutStore(data_dir / "rollouts.db") as store:
            await store.save(release)

    asyncio.run(save())
    return release


@pytest.mark.parametrize("command", ["start", "status", "promote", "pause", "resume", "abort"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    code, out, _ = keel("rollout", command, "--help")
    assert code == 0 and "Example: keel rollout" in out


def test_status_without_any_rollout(tmp_path: Path) -> None:
    code, out, _ = keel("--data-dir", str(tmp_path), "rollout", "status")
    assert code == 0 and "no rollout recorded yet" in out
    code, out, _ = keel("--data-dir", str(tmp_path), "rollout", "status", "--json")
    assert code == 0 and json.loads(out) == {"release": None}


def test_status_shows_step_weights_sessions_and_the_verdict(tmp_path: Path) -> None:
    record(tmp_path)
    code, out, _ = keel("--data-dir", str(tmp_path), "rollout", "status")
    assert code == 0, out
    assert "v2-20261201T123000" in out
    assert "step 2/4 (25 %, 12m 34s of 2h)" in out
    assert "tool_success" in out and "turn_latency" in out and "inconclusive" in out
    assert "31" in out and "9" in out
    assert "controller" in out and "none" in out

    code, out, _ = keel("--data-dir", str(tmp_path), "rollout", "status", "--json")
    data = json.loads(out)
    assert data["step"] == 1 and data["detail"]["weights"] == {"v1": 75, "v2": 25}
    assert data["controller"] is None

    code, _, err = keel("--data-dir", str(tmp_path), "rollout", "status", "--release", "nope")
    assert code == 1 and "no release nope" in err


def test_requests_on_a_finished_release_are_refused(tmp_path: Path) -> None:
    record(tmp_path, state="promoted", phase="retiring")
    code, _, err = keel("--data-dir", str(tmp_path), "rollout", "abort")
    assert code == 1
    assert "is promoted; there is nothing to abort" in err and "keel rollback" in err
    code, _, err = keel("--data-dir", str(tmp_path), "rollout", "pause")
    assert code == 1 and "nothing to pause" in err


def test_requests_without_any_rollout_state(tmp_path: Path) -> None:
    code, _, err = keel("--data-dir", str(tmp_path), "rollout", "promote")
    assert code == 1 and "no rollout recorded" in err


def test_start_refuses_bad_arguments_before_touching_anything(tmp_path: Path) -> None:
    base = ("--data-dir", str(tmp_path), "rollout", "start")
    code, _, err = keel(*base)
    assert code == 1 and "--version v2" in err
    code, _, err = keel(*base, "--version", "v2", "--strategy", "yolo")
    assert code == 1 and "'yolo' is not one of canary" in err
    code, _, err = keel(*base, "--version", "v2", "--env", "PATH=/tmp")
    assert code == 1 and "KEEL_NAME=value" in err
    # A secret is refused as keel up refuses it, before it is written anywhere.
    code, _, err = keel(*base, "--version", "v2", "--env", "KEEL_LLM__API_KEY=sk-live-abc123")
    assert code == 1 and "KEEL_LLM__API_KEY" in err
    code, _, err = keel(*base, "--version", "v2", "--policy", "sticky")
    assert code == 1 and "'sticky' is not one of pinned" in err
    # No keel up here: nothing to drive replicas with.
    code, _, err = keel(*base, "--version", "v2", "--strategy", "bluegreen")
    assert code == 2 and "control socket" in err
    assert not (tmp_path / "rollouts.db").exists()
