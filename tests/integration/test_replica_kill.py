"""A replica killed mid-turn loses only that turn: another replica continues the session."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from tests.integration.test_drain import free_port, replica_env, turns_in_flight, wait_ready

pytestmark = pytest.mark.slow

Launch = Callable[[str], tuple[subprocess.Popen[bytes], str]]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Starts replica processes that share one SQLite file; kills leftovers at the end."""
    db = tmp_path / "sessions.db"
    started: list[tuple[subprocess.Popen[bytes], BinaryIO]] = []

    def start(name: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        log = (tmp_path / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "agentkeel.runtime.serve"],
            env=replica_env(tmp_path, port=port, db=db, latency_s=1.0),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((process, log))
        return process, f"http://127.0.0.1:{port}"

    yield start
    for process, log in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        log.close()


async def test_sigkill_mid_turn_then_retry_on_the_other_replica(launch: Launch) -> None:
    """SIGKILL during turn 2 on replica A: retrying on B stores turn 2, the turn numbers
    stay contiguous, the killed attempt left nothing behind, and the session goes on."""
    process_a, url_a = launch("a")
    process_b, url_b = launch("b")
    async with (
        httpx.AsyncClient(base_url=url_a, timeout=30) as a,
        httpx.AsyncClient(base_url=url_b, timeout=30) as b,
    ):
        await wait_ready(a, process_a)
        await wait_ready(b, process_b)
        session_id = (await a.post("/v1/sessions", json={"user_id": "erin"})).json()["session_id"]
        path = f"/v1/sessions/{session_id}/messages"
        first = await a.post(path, json={"content": "first"})
        assert first.json()["turn"] == 1

        doomed = asyncio.create_task(
            a.post(path, json={"content": "second"}, headers={"X-Correlation-ID": "killed"})
        )
        deadline = time.monotonic() + 10
        while await turns_in_flight(a) < 1:
            assert time.monotonic() < deadline, "turn 2 never started on replica A"
            await asyncio.sleep(0.02)
        process_a.send_signal(signal.SIGKILL)
        with pytest.raises(httpx.TransportError):
            await doomed
        assert process_a.wait(timeout=10) == -signal.SIGKILL

        retried = await b.post(
            path, json={"content": "second"}, headers={"X-Correlation-ID": "retried"}
        )
        assert retried.status_code == 200
        assert retried.json()["turn"] == 2
        third = await b.post(path, json={"content": "third"})
        assert third.json()["turn"] == 3

        session = (await b.get(f"/v1/sessions/{session_id}")).json()

    turns = session["turns"]
    assert [t["turn"] for t in turns] == [1, 2, 3]
    assert [t["parent"] for t in turns] == [0, 1, 2]
    assert [t["content"] for t in turns] == ["first", "second", "third"]
    assert turns[1]["correlation_id"] == "retried"
    assert "killed" not in {t["correlation_id"] for t in turns}
    assert session["turn_count"] == 3
    assert session["head"] == 3
