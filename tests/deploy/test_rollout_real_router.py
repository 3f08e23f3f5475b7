"""The controller against a real router, real agent servers, a real memory server and the
real rollback: sessions created through the router stay on the version they started on,
new ones follow the weights, and an abort sends them back to the previous version.

The one double is the replica driver: it starts and stops in-process agent servers where
keel up would start and stop processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from agentkeel.config.rollout import BlueGreenSettings, RolloutSettings
from agentkeel.config.router import RouterSettings
from agentkeel.deploy.controller import ReleasePlan, RolloutController
from agentkeel.deploy.rollback import Rollback
from agentkeel.deploy.rollback_journal import RollbackJournal
from agentkeel.deploy.state import RolloutStore
from agentkeel.deploy.strategies import RolloutDeps
from agentkeel.deploy.types import ReplicaInfo, ReplicaSpec
from agentkeel.memory.api_client import MemoryApiClient
from agentkeel.memory.app import create_app as create_memory_app
from agentkeel.router.admin_client import RouterAdminClient
from agentkeel.router.app import create_router
from tests.deploy.rollout_doubles import until
from tests.memory.apphelpers import write_tokens
from tests.ops.golden.agents import agent_app
from tests.tools.servers import LiveServer


class ServerDriver:
    """Replicas as in-process agent servers sharing one session store."""

    def __init__(self, tmp_path: Path, shared: Path) -> None:
        self.tmp_path, self.shared = tmp_path, shared
        self.servers: dict[str, tuple[str, LiveServer, bool]] = {}

    async def add(self, version: str) -> ReplicaInfo:
        name = f"replica-{len(self.servers) + 1}"
        server = LiveServer(agent_app(self.tmp_path / name, version=version, data_dir=self.shared))
        await server.start()
        self.servers[name] = (version, server, True)
        return ReplicaInfo(name=name, version=version, url=server.url, state="ready")

    async def start_replicas(self, spec: ReplicaSpec, count: int) -> list[ReplicaInfo]:
        return [await self.add(spec.version) for _ in range(count)]

    async def stop_replica(self, name: str, *, drain: bool = True) -> None:
        version, server, _ = self.servers[name]
        await server.stop()
        self.servers[name] = (version, server, False)

    async def list_replicas(self) -> list[ReplicaInfo]:
        return [
            ReplicaInfo(name=n, version=v, url=s.url, state="ready" if up else "stopped")
            for n, (v, s, up) in self.servers.items()
        ]

    async def aclose(self) -> None:
        for _, server, up in self.servers.values():
            if up:
                await server.stop()


@dataclass
class Stack:
    router_url: str
    admin: str
    deps: RolloutDeps
    store: RolloutStore
    driver: ServerDriver

    async def new_session(self) -> tuple[str, str]:
        async with httpx.AsyncClient(base_url=self.router_url) as client:
            created = await client.post("/v1/sessions", json={"user_id": "ana"})
        assert created.status_code == 201, created.text
        return created.json()["session_id"], created.json()["version"]

    async def turn_version(self, session_id: str) -> str:
        """The version that stored the turn (read from the session, not from the router)."""
        async with httpx.AsyncClient(base_url=self.router_url, timeout=10) as client:
            turn = await client.post(f"/v1/sessions/{session_id}/messages", json={"content": "hi"})
            assert turn.status_code == 200, turn.text
            session = await client.get(f"/v1/sessions/{session_id}")
        assert session.status_code == 200, session.text
        return str(session.json()["version"])


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    (tmp_path / "memory").mkdir()
    memory_settings = write_tokens(tmp_path / "memory")
    token_file = memory_settings.admin_token_file
    assert token_file is not None
    memory = LiveServer(
        create_memory_app(memory_settings, registry=CollectorRegistry(), run_scheduler=False)
    )
    await memory.start()
    driver = ServerDriver(tmp_path, tmp_path / "agents")
    v1 = await driver.add("v1")
    data_dir = tmp_path / "data"
    router = create_router(
        RouterSettings(
            port=0,
            backends=[f"v1={v1.url}"],
            admin_token_file=token_file,
            probe_interval_s=0.05,
        ),
        data_dir=data_dir,
    )
    await router.start()
    try:
        async with (
            RouterAdminClient(base_url=router.url, token_file=token_file) as admin,
            MemoryApiClient(base_url=memory.url, token_file=token_file) as memory_api,
            RollbackJournal(data_dir / "rollouts.db") as journal,
            RolloutStore(data_dir / "rollouts.db") as store,
        ):
            rollback = Rollback(
                admin, driver, memory_api, journal, drain_timeout_s=2.0, poll_interval_s=0.05
            )
            deps = RolloutDeps(router=admin, driver=driver, rollback=rollback, memory=memory_api)
            yield Stack(router.url, token_file.read_text(), deps, store, driver)
    finally:
        await router.aclose()
        await driver.aclose()
        await memory.stop()


def settings() -> RolloutSettings:
    return RolloutSettings(
        bluegreen=BlueGreenSettings(drain_deadline_s=3600, switch_back_window_s=3600),
        poll_interval_s=0.05,
    )


async def test_bluegreen_switch_and_switch_back_through_a_real_router(stack: Stack) -> None:
    """A v1 session from before the switch stays on v1; after the switch new sessions are
    v2's; after the abort new sessions are v1's again, the v2 session moved to v1 at its
    next turn, v2's replica stopped. Versions are read from the stored sessions."""
    before, version = await stack.new_session()
    assert version == "v1"
    controller = RolloutController(store=stack.store, deps=stack.deps, settings=settings())
    release = await controller.begin(ReleasePlan(version="v2", strategy="bluegreen"))
    task = asyncio.create_task(controller.drive(release))
    await until(lambda: release.phase == "switched", ticks=2000, pause_s=0.01)
    assert release.snapshot_id is not None

    # The router probes the new replica every 50 ms; a new session waits for that.
    for _ in range(100):
        during, version = await stack.new_session()
        if version == "v2":
            break
        await asyncio.sleep(0.05)
    assert version == "v2"
    assert await stack.turn_version(before) == "v1"
    assert await stack.turn_version(during) == "v2"

    await stack.store.request(release.release, "abort", requested_by="test")
    done = await asyncio.wait_for(task, timeout=30)
    assert done.state == "aborted", done.reason
    after, version = await stack.new_session()
    assert version == "v1"
    assert await stack.turn_version(after) == "v1"
    assert await stack.turn_version(before) == "v1"
    rollback = done.detail["rollback"]["report"]
    assert rollback["passed"] and rollback["code_only"]
    assert [r.version for r in await stack.driver.list_replicas() if r.state == "ready"] == ["v1"]


async def test_rolling_replaces_the_replica_and_promotes(stack: Stack) -> None:
    """One v1 replica replaced by one v2 replica: v2 becomes stable, v1 is retired and
    its replica stops once its session count is 0; new sessions are v2's."""
    controller = RolloutController(store=stack.store, deps=stack.deps, settings=settings())
    plan = ReleasePlan(version="v2", strategy="rolling", time_scale=3600)
    done = await asyncio.wait_for(controller.start(plan), timeout=30)
    assert done.state == "promoted", done.reason
    stable, versions = await stack.deps.router.versions()
    assert stable == "v2" and [v.version for v in versions] == ["v2"]
    for _ in range(100):
        session, version = await stack.new_session()
        if version == "v2":
            break
        await asyncio.sleep(0.05)
    assert await stack.turn_version(session) == "v2"
