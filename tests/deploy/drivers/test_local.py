"""LocalDriver against keel up's control channel on a real unix socket (fake replicas)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from agentkeel.deploy.drivers import LocalDriver
from agentkeel.deploy.types import ReplicaDriver, ReplicaSpec
from agentkeel.errors import InvalidRequest, NotFound, Unavailable
from tests.ops.fake_stack import fake_stack


async def test_a_v2_replica_starts_answers_and_drains_its_turn_in_flight(tmp_path: Path) -> None:
    """start_replicas returns a ready v2 replica; stop_replica with drain lets a turn in
    flight finish; the replica is then gone from the list and its port closed."""
    async with fake_stack(tmp_path) as stack, LocalDriver(stack.socket_path) as local:
        # Typed as the protocol the rollout controller holds (mypy checks the fit).
        driver: ReplicaDriver = local
        [v2] = await driver.start_replicas(ReplicaSpec(version="v2"), 1)
        assert (v2.name, v2.version, v2.state) == ("agent-v2-1", "v2", "ready")
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            ready = await client.get(f"{v2.url}/ready")
            assert ready.json()["version"] == "v2"
            turn = asyncio.create_task(client.post(f"{v2.url}/turn?s=1.5"))
            await asyncio.sleep(0.3)
            await driver.stop_replica(v2.name, drain=True)
            finished = await turn
            assert finished.status_code == 200
            assert finished.json() == {"reply": "done", "version": "v2", "replica": "agent-v2-1"}
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{v2.url}/ready")
        assert [(r.name, r.version) for r in await driver.list_replicas()] == [("replica-1", "v1")]


async def test_a_relative_config_is_made_absolute_where_the_caller_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver sends the config path as an absolute path of the caller's directory."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "v2.yaml").write_text("agent:\n  system_prompt: Hi.\n")
    monkeypatch.chdir(project)
    async with fake_stack(tmp_path) as stack, LocalDriver(stack.socket_path) as driver:
        await driver.start_replicas(ReplicaSpec(version="v2", config="v2.yaml"), 1)
        env = json.loads((stack.record_dir / "agent-v2-1.json").read_text())
    assert env["KEEL_CONFIG"] == str(project / "v2.yaml")


async def test_errors_come_back_as_keel_errors_naming_the_socket(tmp_path: Path) -> None:
    """A bad spec is InvalidRequest, an unknown replica NotFound, a replica that never gets
    ready Unavailable naming its log; each message names the control socket."""
    async with fake_stack(tmp_path) as stack, LocalDriver(stack.socket_path) as driver:
        with pytest.raises(InvalidRequest) as bad:
            await driver.start_replicas(ReplicaSpec(version="v2", env={"PATH": "/x"}), 1)
        assert str(stack.socket_path) in bad.value.message
        assert "only KEEL_" in bad.value.message
        with pytest.raises(NotFound) as unknown:
            await driver.stop_replica("agent-v9-1")
        assert str(stack.socket_path) in unknown.value.message
        with pytest.raises(Unavailable) as broken:
            await driver.start_replicas(ReplicaSpec(version="v3", entrypoint="broken:agent"), 1)
        assert "agent-v3-1.log" in broken.value.message
        assert str(stack.socket_path) in broken.value.message


async def test_no_keel_up_on_the_socket_is_unavailable_naming_it(tmp_path: Path) -> None:
    """Without a keel up listening, every call is Unavailable naming the socket and what to do."""
    path = tmp_path / "control.sock"
    async with LocalDriver(path) as driver:
        with pytest.raises(Unavailable) as caught:
            await driver.list_replicas()
    assert caught.value.code == "control_unavailable"
    assert str(path) in caught.value.message
    assert "Is keel up running" in caught.value.message


async def test_an_answer_that_is_not_the_control_api_is_refused(tmp_path: Path) -> None:
    """Something else answering on the socket (no replicas list, bad entries) is Unavailable
    saying so, not a crash."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/replicas":
            return httpx.Response(200, json={"replicas": [{"name": "x", "state": "dancing"}]})
        return httpx.Response(200, text="hello")

    driver = LocalDriver(tmp_path / "control.sock", transport=httpx.MockTransport(handler))
    with pytest.raises(Unavailable, match="not the control API"):
        await driver.list_replicas()
    with pytest.raises(Unavailable, match="not the control API"):
        await driver.stop_replica("x")
    await driver.aclose()
