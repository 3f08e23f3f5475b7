"""A real replica drains on SIGTERM: turns in flight finish, new work is refused, exit 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentkeel.runtime.serve import EXIT_FORCED
from agentkeel.runtime.stores import open_store

pytestmark = pytest.mark.slow

TURNS = 50
LATENCY_S = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def replica_env(tmp_path: Path, *, port: int, db: Path, latency_s: float) -> dict[str, str]:
    script = tmp_path / "script.yaml"
    script.write_text("on_end: echo\nsteps: []\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update(
        {
            "KEEL_MODELS": json.dumps(
                [
                    {
                        "name": "scripted",
                        "kind": "scripted",
                        "script": str(script),
                        "latency_s": latency_s,
                    }
                ]
            ),
            "KEEL_STORE__URL": f"sqlite:///{db}",
            "KEEL_DATA_DIR": str(tmp_path),
            "KEEL_SERVER__PORT": str(port),
            "KEEL_SERVER__DRAIN_TIMEOUT_S": "30",
        }
    )
    return env


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """One agent replica process on a free port with a 1 s scripted model."""
    port = free_port()
    db = tmp_path / "sessions.db"
    log = (tmp_path / "replica.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "agentkeel.runtime.serve"],
        env=replica_env(tmp_path, port=port, db=db, latency_s=LATENCY_S),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process, f"http://127.0.0.1:{port}", db
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        log.close()


async def wait_ready(client: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the replica exited during startup"
        try:
            if (await client.get("/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the replica did not become ready within 30 s")


async def turns_in_flight(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("agent_turns_in_flight "):
            return float(line.split()[1])
    return 0.0


async def wait_draining(client: httpx.AsyncClient) -> httpx.Response:
    """Poll /ready until the replica reports draining (a signal lands asynchronously)."""
    deadline = time.monotonic() + 5
    ready = await client.get("/ready")
    while ready.status_code == 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        ready = await client.get("/ready")
    return ready


async def test_sigterm_drains_fifty_turns_in_flight_then_exits_zero(
    replica: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    """SIGTERM mid-flight: all 50 turns answer 200 and are stored, /ready is 503 and a new
    session is refused with 503 during the drain, and the process exits 0."""
    process, base_url, db = replica
    limits = httpx.Limits(max_connections=TURNS + 10)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        await wait_ready(client, process)
        sessions = []
        for n in range(TURNS):
            created = await client.post("/v1/sessions", json={"user_id": f"user-{n % 5}"})
            assert created.status_code == 201
            sessions.append(created.json()["session_id"])
        turns = [
            asyncio.create_task(
                client.post(f"/v1/sessions/{sid}/messages", json={"content": f"hello {sid}"})
            )
            for sid in sessions
        ]
        deadline = time.monotonic() + 10
        while await turns_in_flight(client) < TURNS:
            assert time.monotonic() < deadline, "the turns did not all start"
            await asyncio.sleep(0.02)

        process.send_signal(signal.SIGTERM)
        ready = await wait_draining(client)
        late = await client.post("/v1/sessions", json={"user_id": "late"})
        still_running = sum(not turn.done() for turn in turns)
        responses = await asyncio.gather(*turns)

    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "draining"
    assert still_running > 0, "the drain was not observed while turns were in flight"
    assert late.status_code == 503
    assert late.json()["error"]["code"] == "draining"
    assert "retry-after" in late.headers
    assert [r.status_code for r in responses] == [200] * TURNS
    assert all(r.json()["reply"].startswith("echo: hello") for r in responses)
    assert process.wait(timeout=20) == 0

    store = open_store(f"sqlite:///{db}")
    await store.open()
    try:
        for sid in sessions:
            session = await store.get_session(sid)
            assert session is not None
            assert session.turn_count == 1
    finally:
        await store.aclose()


async def test_second_sigterm_exits_at_once_with_the_forced_exit_code(
    replica: tuple[subprocess.Popen[bytes], str, Path], tmp_path: Path
) -> None:
    """A second SIGTERM during the drain exits at once with code 130 (runtime/serve.py's
    EXIT_FORCED, as the README documents), logging the turn it left in flight."""
    process, base_url, _ = replica
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        await wait_ready(client, process)
        sid = (await client.post("/v1/sessions", json={"user_id": "u"})).json()["session_id"]
        turn = asyncio.create_task(
            client.post(f"/v1/sessions/{sid}/messages", json={"content": "slow"})
        )
        deadline = time.monotonic() + 10
        while await turns_in_flight(client) < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        ready = await wait_draining(client)
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "draining"
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 10)
        turn.cancel()
        await asyncio.gather(turn, return_exceptions=True)
    assert code == EXIT_FORCED == 130
    log = (tmp_path / "replica.log").read_text()
    assert "second SIGTERM: exiting now with 1 turn(s) still in flight" in log
