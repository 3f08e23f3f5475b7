"""A small real stack to roll back, in a background thread with its own event loop: a real
router (v1 stable, v2 the canary) in front of two real agent servers sharing one session
store, a real memory server holding a pre-deploy snapshot and a later write, keel up's
control channel on a unix socket, and the release in the rollout state.

The one test double is the driver behind the control channel (``LiveServerDriver``):
it stops an in-process agent server where keel up would stop a process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from agentkeel.config.router import RouterSettings
from agentkeel.deploy.state import Release, RolloutStore
from agentkeel.deploy.types import ReplicaInfo, ReplicaSpec
from agentkeel.memory.app import create_app as create_memory_app
from agentkeel.ops.control import ControlServer, create_control_app
from agentkeel.router.app import create_router
from tests.memory.apphelpers import ADMIN, TOKEN_A, auth, write_tokens
from tests.ops.golden.agents import agent_app
from tests.tools.servers import LiveServer

NS = "agent:a"
RELEASE = "v2-20261201T1230"


class LiveServerDriver:
    """Replicas that are in-process servers; ``stop_replica`` stops one."""

    def __init__(self, replicas: dict[str, tuple[str, LiveServer]]) -> None:
        self.replicas = replicas
        self.stopped: list[str] = []

    async def start_replicas(self, spec: ReplicaSpec, count: int) -> list[ReplicaInfo]:
        raise AssertionError("a rollback never starts replicas")

    async def stop_replica(self, name: str, *, drain: bool = True) -> None:
        await self.replicas[name][1].stop()
        self.stopped.append(name)

    async def list_replicas(self) -> list[ReplicaInfo]:
        return [
            ReplicaInfo(
                name=name,
                version=version,
                url=server.url,
                state="stopped" if name in self.stopped else "ready",
            )
            for name, (version, server) in self.replicas.items()
        ]


@dataclass
class RollbackStack:
    data_dir: Path
    admin_token_file: Path
    router_url: str
    memory_url: str
    control_socket: Path
    v1_url: str
    v2_url: str
    session_on_v2: str
    snapshot_id: str

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.router_url, headers={"Authorization": f"Bearer {ADMIN}"})

    def routing(self) -> dict[str, object]:
        with self.admin() as client:
            response = client.get("/admin/versions")
        assert response.status_code == 200, response.text
        data: dict[str, object] = response.json()
        return data

    def memories(self) -> list[str]:
        response = httpx.get(
            f"{self.memory_url}/v1/memories",
            params={"namespace": NS, "limit": 100},
            headers=auth(TOKEN_A),
        )
        return sorted(item["memory"]["content"] for item in response.json()["results"])

    def quarantined(self) -> list[dict[str, object]]:
        response = httpx.get(
            f"{self.memory_url}/v1/quarantine",
            params={"events": "true"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        quarantines: list[dict[str, object]] = response.json()["quarantines"]
        return quarantines

    def release(self) -> Release:
        async def read() -> Release:
            async with RolloutStore(self.data_dir / "rollouts.db") as store:
                found = await store.get(RELEASE)
            assert found is not None
            return found

        return asyncio.run(read())


async def _build(tmp_path: Path, stack: AsyncExitStack) -> RollbackStack:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (tmp_path / "memory").mkdir()
    memory_settings = write_tokens(tmp_path / "memory")
    admin_token_file = memory_settings.admin_token_file
    assert admin_token_file is not None
    memory = LiveServer(
        create_memory_app(memory_settings, registry=CollectorRegistry(), run_scheduler=False)
    )
    await memory.start()
    stack.push_async_callback(memory.stop)
    shared = tmp_path / "agents"
    v1 = LiveServer(agent_app(tmp_path / "v1", version="v1", data_dir=shared))
    v2 = LiveServer(agent_app(tmp_path / "v2", version="v2", data_dir=shared))
    for server in (v1, v2):
        await server.start()
        stack.push_async_callback(server.stop)
    router = create_router(
        RouterSettings(
            port=0,
            backends=[f"v1={v1.url}", f"v2={v2.url}"],
            admin_token_file=admin_token_file,
            probe_interval_s=0.1,
        ),
        data_dir=data_dir,
    )
    await router.start()
    stack.push_async_callback(router.aclose)
    driver = LiveServerDriver({"replica-1": ("v1", v1), "replica-3": ("v2", v2)})
    control = ControlServer(app=create_control_app(driver), path=data_dir / "control.sock")
    await control.start()
    stack.push_async_callback(control.stop)

    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=router.url, headers=admin) as client:
        # A session that starts while v2 takes every new session, then the canary weights.
        assert (
            await client.post("/admin/weights", json={"weights": {"v1": 0, "v2": 100}})
        ).status_code == 200
        created = await client.post("/v1/sessions", json={"user_id": "ana"})
        assert created.status_code == 201, created.text
        session_id = str(created.json()["session_id"])
        assert created.json()["version"] == "v2"
        turn = await client.post(f"/v1/sessions/{session_id}/messages", json={"content": "hi"})
        assert turn.status_code == 200, turn.text
        weights = {"weights": {"v1": 95, "v2": 5}, "stable": "v1"}
        assert (await client.post("/admin/weights", json=weights)).status_code == 200
    async with httpx.AsyncClient(base_url=memory.url) as client:
        before = {"namespace": NS, "content": "before the deploy"}
        assert (
            await client.post("/v1/memories", json=before, headers=auth(TOKEN_A))
        ).status_code == 201
        snapshot = await client.post(
            "/v1/snapshots", json={"label": RELEASE, "kind": "deploy"}, headers=admin
        )
        assert snapshot.status_code == 201, snapshot.text
        later = {"namespace": NS, "content": "written by v2"}
        assert (
            await client.post("/v1/memories", json=later, headers=auth(TOKEN_A))
        ).status_code == 201
    now = time.time()
    async with RolloutStore(data_dir / "rollouts.db") as store:
        await store.create(
            Release(
                release=RELEASE,
                version="v2",
                previous="v1",
                strategy="canary",
                started_at=now,
                updated_at=now,
                state="running",
                snapshot_id=str(snapshot.json()["id"]),
            )
        )
    return RollbackStack(
        data_dir=data_dir,
        admin_token_file=admin_token_file,
        router_url=router.url,
        memory_url=memory.url,
        control_socket=data_dir / "control.sock",
        v1_url=v1.url,
        v2_url=v2.url,
        session_on_v2=session_id,
        snapshot_id=str(snapshot.json()["id"]),
    )


@contextmanager
def rollback_stack(tmp_path: Path) -> Iterator[RollbackStack]:
    """The stack above, served from a background thread until the block ends."""
    ready: list[RollbackStack | BaseException] = []
    started = threading.Event()
    stopping: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def main() -> None:
        stop = asyncio.Event()
        stopping.append((asyncio.get_running_loop(), stop))
        async with AsyncExitStack() as stack:
            try:
                ready.append(await _build(tmp_path, stack))
            except BaseException as exc:
                # Handed to the test's thread, which raises it there.
                ready.append(exc)
                started.set()
                return
            started.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert started.wait(60), "the rollback stack did not start"
    outcome = ready[0]
    if isinstance(outcome, BaseException):
        thread.join(10)
        raise outcome
    try:
        yield outcome
    finally:
        loop, stop = stopping[0]
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
