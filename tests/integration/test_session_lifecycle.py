"""Two real replica processes sharing one SQLite store: their sweepers end idle sessions on
their own, each end is recorded by exactly one of them, and `/admin/sessions/live` and the
live gauges agree across the two."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_drain import free_port, replica_env, wait_ready

pytestmark = pytest.mark.slow

TOKEN = "lifecycle-e2e-admin-" + "x" * 24
IDLE_S = 3


@pytest.fixture
def two_replicas(tmp_path: Path) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    """replica-1 and replica-2 on free ports, one sessions.db, a 3 s idle timeout and
    sweeps every half second."""
    db = tmp_path / "sessions.db"
    token_file = tmp_path / "admin_token"
    token_file.write_text(TOKEN)
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    logs = []
    try:
        for index in (1, 2):
            port = free_port()
            env = replica_env(tmp_path, port=port, db=db, latency_s=0.0)
            env.update(
                {
                    "KEEL_SERVER__REPLICA_ID": f"replica-{index}",
                    "KEEL_SERVER__ADMIN_TOKEN_FILE": str(token_file),
                    "KEEL_SESSIONS__IDLE_TIMEOUT_S": str(IDLE_S),
                    "KEEL_SESSIONS__SWEEP_INTERVAL_S": "0.5",
                    "KEEL_SESSIONS__SWEEP_GRACE_S": "0",
                    "KEEL_SESSIONS__LIVE_REFRESH_S": "0",
                }
            )
            log = (tmp_path / f"replica-{index}.log").open("wb")
            logs.append(log)
            process = subprocess.Popen(
                [sys.executable, "-m", "agentkeel.runtime.serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            started.append((process, f"http://127.0.0.1:{port}"))
        yield started
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        for log in logs:
            log.close()


def sample(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_replicas_sweep_idle_sessions_once_and_agree_on_live_counts(
    two_replicas: list[tuple[subprocess.Popen[bytes], str]],
) -> None:
    """Sessions on both replicas count as live on both; once idle past the timeout the
    sweepers end all of them with no request, the two replicas' histograms together
    observe each session once, and the live counts fall to 0 everywhere."""
    clients = [httpx.AsyncClient(base_url=url, timeout=30) for _, url in two_replicas]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        for client, (process, _) in zip(clients, two_replicas, strict=True):
            await wait_ready(client, process)
        sessions = []
        for n in range(6):
            client = clients[n % 2]
            created = await client.post("/v1/sessions", json={"user_id": f"user-{n}"})
            session_id = created.json()["session_id"]
            reply = await client.post(f"/v1/sessions/{session_id}/messages", json={"content": "hi"})
            assert reply.status_code == 200
            sessions.append(session_id)
        live = [(await c.get("/admin/sessions/live", headers=headers)).json() for c in clients]
        assert [report["total"] for report in live] == [6, 6]
        assert live[0]["by_replica"] == {"replica-1": 3, "replica-2": 3}

        deadline = time.monotonic() + 30
        while True:
            texts = [(await client.get("/metrics")).text for client in clients]
            ended = sum(sample(text, "agent_sessions_ended_total{") for text in texts)
            if ended >= 6 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)

        assert ended == 6
        observed = sum(sample(text, "agent_session_duration_seconds_count{") for text in texts)
        assert observed == 6
        for text in texts:
            assert sample(text, "agent_live_sessions{") == 0
        for session_id in sessions:
            stored = (await clients[0].get(f"/v1/sessions/{session_id}")).json()
            assert stored["end_reason"] == "idle_timeout"
    finally:
        for client in clients:
            await client.aclose()
