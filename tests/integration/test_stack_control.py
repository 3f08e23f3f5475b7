"""`keel up`'s control channel and router, with real processes on loopback.

A real `keel up` (scripted model, no local model) and the LocalDriver: a replica
of another version is started while the stack runs, answers /ready as that
version, shares the stack's session store, and drains a turn in flight when it
is stopped. With the router on, the stack's front door serves the conversation,
a replica started later is not added to it (the controller does that), and
Ctrl-C lets a turn in flight through the router finish: replicas drain while the
router still relays them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import time
from pathlib import Path

import httpx
import pytest

from agentkeel.deploy.drivers import LocalDriver
from agentkeel.deploy.types import ReplicaSpec
from agentkeel.testing.ports import free_port_run
from tests.integration import test_keel_up_e2e as e2e

pytestmark = pytest.mark.slow

start_keel_up = e2e.start_keel_up
IN_FLIGHT = re.compile(r"^agent_turns_in_flight(\{[^}]*\})? 1\.0$", re.M)


def scripted_config(tmp_path: Path, *, base_port: int, router_port: int, latency_s: float) -> str:
    script = tmp_path / "script.yaml"
    script.write_text("on_end: echo\nsteps: []\n")
    return f"""
models:
  - {{name: scripted, kind: scripted, latency_s: {latency_s}, script: {script}}}
router:
  port: {router_port}
up:
  base_port: {base_port}
  replicas: 1
server:
  drain_timeout_s: 20
"""


async def wait_in_flight(client: httpx.AsyncClient, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if IN_FLIGHT.search((await client.get(f"{url}/metrics")).text):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"no turn in flight on {url}")


async def test_a_v2_replica_starts_serves_the_stack_sessions_and_drains(
    tmp_path: Path, start_keel_up: e2e.StartKeelUp
) -> None:
    """Through the control socket (mode 0600) a v2 replica starts, answers /ready as v2 and
    serves the stack's sessions; stopped with drain, its turn in flight completes and is
    stored; it leaves the replica list and stack.json."""
    base_port = free_port_run(3)
    keel = start_keel_up(
        scripted_config(tmp_path, base_port=base_port, router_port=base_port + 2, latency_s=1.5),
        "--no-local-model",
        "--no-memory",
        "--no-tools",
        "--no-router",
    )
    keel.wait_running()
    stack = json.loads((keel.data_dir / "stack.json").read_text())
    socket_path = keel.data_dir / stack["control_socket"]
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
    assert "router" not in stack["services"] and stack["router"] is None

    v1 = f"http://127.0.0.1:{base_port}"
    async with (
        LocalDriver(socket_path) as driver,
        httpx.AsyncClient(timeout=60, trust_env=False) as client,
    ):
        [v2] = await driver.start_replicas(ReplicaSpec(version="v2"), 1)
        assert (v2.name, v2.version, v2.state) == ("agent-v2-1", "v2", "ready")
        assert int(v2.url.rsplit(":", 1)[1]) > base_port
        ready = await client.get(f"{v2.url}/ready")
        assert ready.status_code == 200 and ready.json()["version"] == "v2"
        listed = [(r.name, r.version, r.state) for r in await driver.list_replicas()]
        assert listed == [("replica-1", "v1", "ready"), ("agent-v2-1", "v2", "ready")]
        services = json.loads((keel.data_dir / "stack.json").read_text())["services"]
        assert services["agent-v2-1"]["url"] == v2.url

        created = await client.post(f"{v2.url}/v1/sessions", json={"user_id": "ana"})
        assert created.status_code == 201, created.text
        assert created.json()["version"] == "v2"
        session_id = created.json()["session_id"]
        turn = asyncio.create_task(
            client.post(f"{v2.url}/v1/sessions/{session_id}/messages", json={"content": "hi"})
        )
        await wait_in_flight(client, v2.url)
        await driver.stop_replica(v2.name, drain=True)
        answered = await turn
        assert answered.status_code == 200, f"{answered.text}\n{keel.diagnostics()}"
        assert answered.json()["turn"] == 1
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{v2.url}/ready")
        # Stored in the stack's session store: the v1 replica reads it.
        session = (await client.get(f"{v1}/v1/sessions/{session_id}")).json()
        assert session["turn_count"] == 1 and session["version"] == "v2"
        assert [r.name for r in await driver.list_replicas()] == ["replica-1"]
    services = json.loads((keel.data_dir / "stack.json").read_text())["services"]
    assert "agent-v2-1" not in services
    assert keel.interrupt() == 0, keel.diagnostics()
    assert not socket_path.exists()
    # Each action on the control channel is one audit line in keel up's own log files.
    audit = [
        json.loads(line)
        for line in (keel.data_dir / "logs" / "audit" / "keel-up.jsonl").read_text().splitlines()
    ]
    assert [(line["action"], line["outcome"]) for line in audit] == [
        ("stack.replicas.start", "ok"),
        ("stack.replicas.stop", "ok"),
    ]
    assert audit[1]["replica"] == "agent-v2-1"


async def test_the_router_fronts_keel_up_and_outlives_the_drain(
    tmp_path: Path, start_keel_up: e2e.StartKeelUp
) -> None:
    """keel up's router serves the conversation as agent.version; a replica started later is
    not in its table; Ctrl-C with a turn in flight through the router: the turn completes."""
    base_port = free_port_run(3)
    router_port = base_port + 2
    keel = start_keel_up(
        scripted_config(tmp_path, base_port=base_port, router_port=router_port, latency_s=1.5),
        "--no-local-model",
        "--no-memory",
        "--no-tools",
    )
    pids = keel.wait_running()
    assert set(pids) == {"replica-1", "router"}, keel.diagnostics()
    stack = json.loads((keel.data_dir / "stack.json").read_text())
    router = f"http://127.0.0.1:{router_port}"
    assert stack["router"] == {"url": router}
    token = (keel.data_dir / "admin_token").read_text().strip()
    admin = {"Authorization": f"Bearer {token}"}

    async with (
        LocalDriver(keel.data_dir / "control.sock") as driver,
        httpx.AsyncClient(timeout=60, trust_env=False) as client,
    ):
        created = await client.post(f"{router}/v1/sessions", json={"user_id": "ana"})
        assert created.status_code == 201, f"{created.text}\n{keel.diagnostics()}"
        assert created.json()["version"] == "v1"
        session_id = created.json()["session_id"]
        one = await client.post(
            f"{router}/v1/sessions/{session_id}/messages", json={"content": "one"}
        )
        assert one.status_code == 200 and one.json()["turn"] == 1, one.text

        await driver.start_replicas(ReplicaSpec(version="v2"), 1)
        table = (await client.get(f"{router}/admin/versions", headers=admin)).json()
        assert table["stable"] == "v1"
        assert [v["version"] for v in table["versions"]] == ["v1"]
        assert [r["url"] for r in table["versions"][0]["replicas"]] == [
            f"http://127.0.0.1:{base_port}"
        ]

        turn = asyncio.create_task(
            client.post(f"{router}/v1/sessions/{session_id}/messages", json={"content": "two"})
        )
        await wait_in_flight(client, f"http://127.0.0.1:{base_port}")
        keel.proc.send_signal(signal.SIGINT)
        answered = await turn
        assert answered.status_code == 200, f"{answered.text}\n{keel.diagnostics()}"
        assert answered.json()["turn"] == 2
    assert keel.proc.wait(timeout=e2e.STOP_TIMEOUT_S) == 0, keel.diagnostics()
    for port in (base_port, router_port):
        assert not e2e.listening(port)
