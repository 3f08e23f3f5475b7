"""Sessions through the router to real agent replicas: weighted assignment, pinning,
server-sent events, moves at turn boundaries, pins across a restart and between two
routers sharing Redis. What a turn ran on is read from the stored turns (each records
the version of the replica that ran it), not from the router's logs."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentkeel.router import RouterApp
from tests.router.backends import AgentReplica, agent_replicas
from tests.router.conftest import StartRouter

pytestmark = pytest.mark.slow


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[AgentReplica]]:
    """Two replicas of v1 and one of v2, sharing one session store."""
    with agent_replicas(tmp_path / "replicas", ["v1", "v1", "v2"]) as started:
        yield started


def backends_of(replicas: list[AgentReplica]) -> list[str]:
    return [f"{replica.version}={replica.url}" for replica in replicas]


async def turn(client: httpx.AsyncClient, session: str, text: str = "hi") -> httpx.Response:
    answer = await client.post(f"/v1/sessions/{session}/messages", json={"content": text})
    assert answer.status_code == 200, answer.text
    return answer


async def stored_turn_versions(client: httpx.AsyncClient, session: str) -> list[str]:
    data = (await client.get(f"/v1/sessions/{session}")).json()
    return [t["version"] for t in data["turns"]]


async def moves(router: RouterApp, old: str, new: str) -> float:
    value = router.registry.get_sample_value(
        "agent_router_session_moves_total", {"from_version": old, "to_version": new}
    )
    return value or 0.0


async def test_new_sessions_follow_the_weights_and_stay_on_their_version(
    replicas: list[AgentReplica], start_router: StartRouter, admin_headers: dict[str, str]
) -> None:
    """With weights 50/50 both versions get sessions; every turn of a session is stored by
    a replica of the version the session started on; the pin counts agree."""
    router = await start_router(backends_of(replicas))
    async with httpx.AsyncClient(base_url=router.url, timeout=10) as client:
        await client.post(
            "/admin/weights", json={"weights": {"v1": 50, "v2": 50}}, headers=admin_headers
        )
        sessions: dict[str, str] = {}
        for index in range(16):
            made = await client.post("/v1/sessions", json={"user_id": f"u{index}"})
            assert made.status_code == 201
            sessions[made.json()["session_id"]] = made.json()["version"]
        for session in sessions:
            for _ in range(3):
                await turn(client, session)
        for session, version in sessions.items():
            assert await stored_turn_versions(client, session) == [version] * 3
        pins = (await client.get("/admin/pins", headers=admin_headers)).json()
    started = list(sessions.values())
    assert {"v1", "v2"} <= set(started)
    assert pins == {
        "total": 16,
        "by_version": {"v1": started.count("v1"), "v2": started.count("v2")},
    }


async def test_a_streamed_turn_arrives_event_by_event(
    tmp_path: Path, start_router: StartRouter
) -> None:
    """A turn that calls a tool, then waits a second in the model: the tool events reach the
    client through the router a second before the reply does (nothing is buffered)."""
    script = (
        "on_end: echo\nsteps:\n"
        "  - tool_calls:\n      - {tool: calculator, arguments: {expression: '2 + 2'}}\n"
        "  - wait: 1.0\n  - say: four\n"
    )
    with agent_replicas(tmp_path / "sse", ["v1"], script=script, tools=["calculator"]) as started:
        router = await start_router(backends_of(started))
        async with httpx.AsyncClient(base_url=router.url, timeout=10) as client:
            session = (await client.post("/v1/sessions", json={"user_id": "u"})).json()[
                "session_id"
            ]
            arrivals: list[tuple[float, str]] = []
            async with client.stream(
                "POST",
                f"/v1/sessions/{session}/messages",
                json={"content": "what is 2 + 2?"},
                headers={"accept": "text/event-stream"},
            ) as answer:
                assert answer.status_code == 200
                assert answer.headers["content-type"].startswith("text/event-stream")
                async for line in answer.aiter_lines():
                    if line.startswith("event: "):
                        arrivals.append((time.monotonic(), line.removeprefix("event: ")))
    events = [name for _, name in arrivals]
    assert events[0] == "tool_call" and events[-1] == "reply", events
    first_tool = arrivals[0][0]
    reply = arrivals[-1][0]
    assert reply - first_tool >= 0.8, arrivals


async def test_move_at_turn_moves_a_session_only_when_its_next_turn_arrives(
    replicas: list[AgentReplica],
    start_router: StartRouter,
    admin_headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """v2 retired with move-at-turn: reads still go where they went and nothing moves;
    the next turn moves the pin to the stable v1, is stored by v1, is logged and counted
    once, and later turns stay on v1."""
    router = await start_router(backends_of(replicas))
    async with httpx.AsyncClient(base_url=router.url, timeout=10) as client:
        await client.post(
            "/admin/weights", json={"weights": {"v1": 0, "v2": 100}}, headers=admin_headers
        )
        session = (await client.post("/v1/sessions", json={"user_id": "u"})).json()["session_id"]
        await turn(client, session)
        await client.post("/admin/weights", json={"weights": {"v1": 100}}, headers=admin_headers)
        retired = await client.post(
            "/admin/versions/v2/retire", json={"policy": "move-at-turn"}, headers=admin_headers
        )
        assert retired.status_code == 200, retired.text
        assert (await client.get(f"/v1/sessions/{session}")).status_code == 200
        assert (await client.get("/admin/pins", headers=admin_headers)).json()["by_version"] == {
            "v1": 0,
            "v2": 1,
        }
        assert await moves(router, "v2", "v1") == 0
        with caplog.at_level(logging.INFO, logger="agentkeel.router"):
            await turn(client, session)
            await turn(client, session)
        assert await stored_turn_versions(client, session) == ["v2", "v1", "v1"]
        pins = (await client.get("/admin/pins", headers=admin_headers)).json()
    assert pins["by_version"] == {"v1": 1, "v2": 0}
    assert await moves(router, "v2", "v1") == 1
    moved = [r for r in caplog.records if r.getMessage().startswith("session moved")]
    assert len(moved) == 1 and getattr(moved[0], "session_id", None) == session


async def test_pinned_policy_keeps_sessions_on_a_retired_version(
    replicas: list[AgentReplica], start_router: StartRouter, admin_headers: dict[str, str]
) -> None:
    """Retired with the default policy: no new sessions on v2, but its live session's turns
    stay on v2 until it ends; ending it drops its pin."""
    router = await start_router(backends_of(replicas))
    async with httpx.AsyncClient(base_url=router.url, timeout=10) as client:
        await client.post(
            "/admin/weights", json={"weights": {"v1": 0, "v2": 100}}, headers=admin_headers
        )
        session = (await client.post("/v1/sessions", json={"user_id": "u"})).json()["session_id"]
        await client.post("/admin/weights", json={"weights": {"v1": 100}}, headers=admin_headers)
        await client.post("/admin/versions/v2/retire", headers=admin_headers)
        fresh = (await client.post("/v1/sessions", json={"user_id": "w"})).json()
        await turn(client, session)
        await turn(client, session)
        assert await stored_turn_versions(client, session) == ["v2", "v2"]
        assert fresh["version"] == "v1"
        ended = await client.delete(f"/v1/sessions/{session}")
        assert ended.status_code in (200, 204), ended.text
        pins = (await client.get("/admin/pins", headers=admin_headers)).json()
    assert pins["by_version"] == {"v1": 1, "v2": 0}
    assert await moves(router, "v2", "v1") == 0


async def test_a_session_whose_version_lost_its_replicas_is_read_and_ended_by_stable(
    replicas: list[AgentReplica], start_router: StartRouter, admin_headers: dict[str, str]
) -> None:
    """v2 still in the table but without a replica (stopped after a promotion): GET and
    DELETE of its session are served by v1 from the shared store; a turn is not moved."""
    router = await start_router(backends_of(replicas))
    async with httpx.AsyncClient(base_url=router.url, timeout=10) as client:
        await client.post(
            "/admin/weights", json={"weights": {"v1": 0, "v2": 100}}, headers=admin_headers
        )
        session = (await client.post("/v1/sessions", json={"user_id": "u"})).json()["session_id"]
        await turn(client, session)
        await client.post("/admin/weights", json={"weights": {"v1": 100}}, headers=admin_headers)
        removed = await client.post(
            "/admin/replicas/remove",
            json={"url": replicas[2].url},
            headers=admin_headers,
        )
        assert removed.status_code == 200, removed.text
        refused = await client.post(f"/v1/sessions/{session}/messages", json={"content": "x"})
        assert refused.status_code == 503
        read = await client.get(f"/v1/sessions/{session}")
        assert read.status_code == 200, read.text
        assert [t["version"] for t in read.json()["turns"]] == ["v2"]
        ended = await client.delete(f"/v1/sessions/{session}")
        assert ended.status_code in (200, 204), ended.text
        pins = (await client.get("/admin/pins", headers=admin_headers)).json()
    assert pins["by_version"]["v2"] == 0


async def test_an_unknown_session_is_the_replicas_404(
    replicas: list[AgentReplica], start_router: StartRouter
) -> None:
    """No pin and no such session: the replica's own 404 passes through unchanged."""
    router = await start_router(backends_of(replicas))
    async with httpx.AsyncClient(timeout=10) as client:
        through = await client.post(
            f"{router.url}/v1/sessions/nope/messages", json={"content": "x"}
        )
        direct = await client.post(
            f"{replicas[0].url}/v1/sessions/nope/messages", json={"content": "x"}
        )
    assert through.status_code == direct.status_code == 404
    assert through.json() == direct.json()


async def test_a_session_from_before_the_router_is_pinned_to_its_recorded_version(
    replicas: list[AgentReplica], start_router: StartRouter, admin_headers: dict[str, str]
) -> None:
    """A session the router never saw (made on a replica directly) is looked up once, pinned
    to the version it records, and its turns go there."""
    async with httpx.AsyncClient(timeout=10) as client:
        made = await client.post(f"{replicas[2].url}/v1/sessions", json={"user_id": "u"})
    session = made.json()["session_id"]
    router = await start_router(backends_of(replicas))
    async with httpx.AsyncClient(base_url=router.url, timeout=10) as client:
        await turn(client, session)
        assert await stored_turn_versions(client, session) == ["v2"]
        pins = (await client.get("/admin/pins", headers=admin_headers)).json()
    assert pins["by_version"]["v2"] == 1


async def test_pins_and_table_survive_a_router_restart(
    replicas: list[AgentReplica], start_router: StartRouter, admin_headers: dict[str, str]
) -> None:
    """A second router on the same SQLite file keeps the first one's weights (not its own
    --backend seed), finds the pin in the store, and routes the session to its version."""
    first = await start_router(backends_of(replicas))
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:
        await client.post(
            "/admin/weights", json={"weights": {"v1": 0, "v2": 100}}, headers=admin_headers
        )
        session = (await client.post("/v1/sessions", json={"user_id": "u"})).json()["session_id"]
    await first.aclose(drain_timeout_s=0)
    second = await start_router([f"v1={replicas[0].url}"])
    assert second.pins.cache.get(session) is None
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as client:
        table = (await client.get("/admin/versions", headers=admin_headers)).json()
        await turn(client, session)
        assert await stored_turn_versions(client, session) == ["v2"]
    weights = {v["version"]: v["weight"] for v in table["versions"]}
    assert weights == {"v1": 0, "v2": 100}
    assert await second.store.get(session) == "v2"


@pytest.mark.redis
async def test_two_routers_sharing_redis_route_a_session_to_one_version(
    replicas: list[AgentReplica],
    start_router: StartRouter,
    admin_headers: dict[str, str],
    redis_url: str,
) -> None:
    """Routers A and B on one Redis: sessions made through either have every turn, through
    either, on their version; a retire on B moves each v2 session once, whichever router
    gets its next turn."""
    shared = {"pins": redis_url, "redis_prefix": f"keel-test:{uuid.uuid4().hex}"}
    a = await start_router(backends_of(replicas), **shared)
    b = await start_router([f"v1={replicas[0].url}"], seed=11, **shared)
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=10) as via_a,
        httpx.AsyncClient(base_url=b.url, timeout=10) as via_b,
    ):
        await via_a.post(
            "/admin/weights", json={"weights": {"v1": 50, "v2": 50}}, headers=admin_headers
        )
        await until(lambda: b.table.doc.revision == a.table.doc.revision)
        sessions: dict[str, str] = {}
        for index in range(12):
            client = via_a if index % 2 else via_b
            made = (await client.post("/v1/sessions", json={"user_id": f"u{index}"})).json()
            sessions[made["session_id"]] = made["version"]
        for session in sessions:
            for client in (via_a, via_b, via_b, via_a):
                await turn(client, session)
        for session, version in sessions.items():
            assert await stored_turn_versions(via_a, session) == [version] * 4
        assert {"v1", "v2"} <= set(sessions.values())

        await via_b.post("/admin/weights", json={"weights": {"v1": 100}}, headers=admin_headers)
        await via_b.post(
            "/admin/versions/v2/retire", json={"policy": "move-at-turn"}, headers=admin_headers
        )
        await until(lambda: a.table.doc.revision == b.table.doc.revision)
        for session in sessions:
            for client in (via_a, via_b):
                await turn(client, session)
        for session in sessions:
            assert (await stored_turn_versions(via_b, session))[4:] == ["v1", "v1"]
    on_v2 = list(sessions.values()).count("v2")
    assert await moves(a, "v2", "v1") + await moves(b, "v2", "v1") == on_v2


async def until(condition: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
