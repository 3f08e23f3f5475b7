"""Requests the router forwards straight from its parser callback (a cached pin and an
idle pooled connection): the same answers as the general path, including the cases
that fall back to awaiting (a 503 draining retried elsewhere, a 410 that drops the pin),
and response heads passed on as they came unless a header must change."""

from __future__ import annotations

import asyncio

import httpx

from tests.router.backends import RawBackend, Seen, draining, write_json
from tests.router.conftest import StartRouter
from tests.router.test_faults import raw_exchange


def session_backend(session_id: str, *, turns: str) -> RawBackend:
    """Creates ``session_id`` (version v1); a turn gets ``turns``: "ok" (200),
    "drain" (503 draining) or "gone" (410); any other request 200."""

    async def respond(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.method == "POST" and seen.path == "/v1/sessions":
            await write_json(writer, 201, b'{"session_id":"%s"}' % session_id.encode())
        elif seen.path.endswith("/messages") and turns == "drain":
            return await draining(seen, writer)
        elif seen.path.endswith("/messages") and turns == "gone":
            await write_json(writer, 410, b'{"error":{"code":"session_ended","message":"x"}}')
        elif seen.method == "GET" and seen.path == f"/v1/sessions/{session_id}":
            # As a replica answers: the session names the version that started it.
            body = b'{"session_id":"%s","version":"v1","turns":[]}' % session_id.encode()
            await write_json(writer, 200, body)
        else:
            await write_json(writer, 200, b'{"reply":"ok"}')
        return True

    return RawBackend(respond)


async def test_a_pooled_turn_that_meets_draining_goes_to_another_replica(
    start_router: StartRouter,
) -> None:
    """Both replicas of the version hold a pooled connection; the one that answers 503
    draining gets one turn, and every turn is answered 200 by the other."""
    drainer = await session_backend("s1", turns="drain").start()
    taker = await session_backend("s1", turns="ok").start()
    router = await start_router([f"v1={drainer.url}", f"v1={taker.url}"], probe_interval_s=60)
    async with httpx.AsyncClient(base_url=router.url) as client:
        assert (await client.post("/v1/sessions", json={})).status_code == 201
        for _ in range(2):  # one pooled connection to each replica
            assert (await client.get("/v1/sessions/s1")).status_code == 200
        answers = [
            await client.post("/v1/sessions/s1/messages", json={"content": "hi"}) for _ in range(3)
        ]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    drained_turns = [s for s in drainer.v1_requests if s.path.endswith("/messages")]
    taken_turns = [s for s in taker.v1_requests if s.path.endswith("/messages")]
    assert len(drained_turns) == 1 and len(taken_turns) == 3
    await drainer.stop()
    await taker.stop()


async def test_a_410_on_a_pooled_connection_drops_the_pin_and_serves_on(
    start_router: StartRouter,
) -> None:
    """A turn answered 410 ends the session's pin; the client connection keeps serving."""
    backend = await session_backend("s-gone", turns="gone").start()
    router = await start_router([f"v1={backend.url}"])
    async with httpx.AsyncClient(base_url=router.url) as client:
        assert (await client.post("/v1/sessions", json={})).status_code == 201
        assert await router.pin_counts() == {"v1": 1}
        assert (await client.get("/v1/sessions/s-gone")).status_code == 200
        turn = await client.post("/v1/sessions/s-gone/messages", json={"content": "hi"})
        assert turn.status_code == 410
        assert await router.pin_counts() == {"v1": 0}
        # The ended session can still be read (it is looked up again on a replica).
        assert (await client.get("/v1/sessions/s-gone")).status_code == 200
    await backend.stop()


async def test_response_heads_change_only_where_they_must(start_router: StartRouter) -> None:
    """An echoed id leaves the head as the replica wrote it (its reason phrase too); a
    missing id is added; hop-by-hop headers are dropped; a closing client gets
    ``connection: close``."""

    async def respond(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        cid = seen.headers.get("x-correlation-id", "").encode()
        if seen.path == "/v1/echoed":
            extra = b"x-correlation-id: " + cid + b"\r\n"
        elif seen.path == "/v1/hop":
            extra = b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nx-kept: 1\r\n"
        else:
            extra = b"x-kept: 1\r\n"
        await write_json(writer, 200, b"{}", extra=extra)
        return True

    backend = await RawBackend(respond).start()
    router = await start_router([f"v1={backend.url}"])
    request = b"GET /v1/%s HTTP/1.1\r\nhost: x\r\nx-correlation-id: id-1\r\n%s\r\n"
    async with httpx.AsyncClient(base_url=router.url) as client:
        await client.get("/v1/warm")  # a pooled connection for what follows
    echoed = await raw_exchange(router.port, request % (b"echoed", b"connection: close\r\n"))
    head = echoed.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200 x\r\n")
    assert head.count(b"x-correlation-id: id-1") == 1
    assert b"connection: close" in head
    async with httpx.AsyncClient(base_url=router.url) as client:
        hop = await client.get("/v1/hop", headers={"x-correlation-id": "id-2"})
        added = await client.get("/v1/plain", headers={"x-correlation-id": "id-3"})
    assert "keep-alive" not in hop.headers and hop.headers["x-kept"] == "1"
    assert hop.headers["x-correlation-id"] == "id-2"
    assert hop.headers.get("connection") is None
    assert added.headers["x-correlation-id"] == "id-3" and added.headers["x-kept"] == "1"
    await backend.stop()


async def test_router_request_figures_reach_metrics(start_router: StartRouter) -> None:
    """Requests forwarded from the parser callback are counted and timed per version and
    route, with cumulative histogram buckets."""
    backend = await session_backend("s-m", turns="ok").start()
    router = await start_router([f"v1={backend.url}"])
    async with httpx.AsyncClient(base_url=router.url) as client:
        await client.post("/v1/sessions", json={})
        for _ in range(3):
            await client.post("/v1/sessions/s-m/messages", json={"content": "hi"})
    labels = {"version": "v1", "route": "turn"}
    sample = router.registry.get_sample_value
    bucket = "agent_router_request_duration_seconds_bucket"
    figures = {
        "requests": sample("agent_router_requests_total", {**labels, "status": "200"}),
        "count": sample("agent_router_request_duration_seconds_count", labels),
        "inf": sample(bucket, {**labels, "le": "+Inf"}),
        "first_at_most_inf": (sample(bucket, {**labels, "le": "0.0005"}) or 0) <= 3,
        "timed": (sample("agent_router_request_duration_seconds_sum", labels) or 0) > 0,
    }
    await backend.stop()
    assert figures == {
        "requests": 3,
        "count": 3,
        "inf": 3,
        "first_at_most_inf": True,
        "timed": True,
    }
