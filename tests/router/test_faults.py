"""The router against replicas that refuse, drain, drop or are missing, and clients that
send too much or nonsense. Small raw backends stand in for the replicas."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.integration.test_drain import free_port
from tests.router.backends import RawBackend, Seen, created, draining, drop, echo
from tests.router.conftest import StartRouter


async def raw_exchange(port: int, data: bytes, *, until_close: bool = True) -> bytes:
    """Send raw bytes to the router and read until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(-1), timeout=5)
    finally:
        writer.close()


async def test_body_and_correlation_id_pass_unchanged(start_router: StartRouter) -> None:
    """The replica gets the exact body bytes (a chunked body arrives whole, with a
    Content-Length) and the caller's correlation id; the answer echoes the id."""
    backend = await RawBackend(echo).start()
    router = await start_router([f"v1={backend.url}"])
    body = '{"content": "h\\u00e9llo \u2603", "n": [1, 2]}'.encode()

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:7]
        yield body[7:]

    async with httpx.AsyncClient(base_url=router.url) as client:
        answer = await client.post(
            "/v1/anything?x=1", content=chunks(), headers={"X-Correlation-ID": "abc-123"}
        )
    assert answer.status_code == 200
    assert answer.content == body
    assert answer.headers["x-correlation-id"] == "abc-123"
    assert answer.headers["x-seen-correlation-id"] == "abc-123"
    seen = backend.v1_requests[0]
    assert (seen.method, seen.path, seen.body) == ("POST", "/v1/anything?x=1", body)
    assert seen.headers["content-length"] == str(len(body))
    assert "transfer-encoding" not in seen.headers
    await backend.stop()


async def test_a_minted_correlation_id_goes_both_ways(start_router: StartRouter) -> None:
    """Without an id the router mints one, sends it to the replica and answers with it."""
    backend = await RawBackend(echo).start()
    router = await start_router([f"v1={backend.url}"])
    async with httpx.AsyncClient(base_url=router.url) as client:
        first = await client.get("/v1/x")
        second = await client.get("/v1/x")
    minted = first.headers["x-correlation-id"]
    assert len(minted) == 32 and minted == first.headers["x-seen-correlation-id"]
    assert second.headers["x-correlation-id"] != minted
    await backend.stop()


async def test_keep_alive_reuses_one_replica_connection(start_router: StartRouter) -> None:
    """Twenty requests on one client connection travel over one pooled replica connection."""
    backend = await RawBackend(echo).start()
    router = await start_router([f"v1={backend.url}"], probe_interval_s=30)
    before = backend.connections
    async with httpx.AsyncClient(base_url=router.url) as client:
        for _ in range(20):
            assert (await client.get("/v1/x")).status_code == 200
    assert backend.connections - before <= 1
    await backend.stop()


async def test_pipelined_requests_are_answered_in_order(start_router: StartRouter) -> None:
    """Two requests in one packet get their two answers in order."""
    backend = await RawBackend(echo).start()
    router = await start_router([f"v1={backend.url}"])
    one = b"POST /v1/a HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\none"
    two = b"POST /v1/b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\ntwo"
    raw = await raw_exchange(router.port, one + two)
    assert raw.index(b"\r\n\r\none") < raw.index(b"\r\n\r\ntwo")
    assert raw.count(b"HTTP/1.1 200") == 2
    await backend.stop()


async def test_a_replica_that_is_not_ready_gets_nothing_new(start_router: StartRouter) -> None:
    """/ready 503 on one replica: every new session goes to the other one."""
    sick = await RawBackend(created("s-sick"), ready_status=503).start()
    well = await RawBackend(created("s-well")).start()
    router = await start_router([f"v1={sick.url}", f"v1={well.url}"])
    async with httpx.AsyncClient(base_url=router.url) as client:
        answers = [await client.post("/v1/sessions", json={"user_id": "u"}) for _ in range(6)]
    assert [a.status_code for a in answers] == [201] * 6
    assert sick.v1_requests == []
    assert len(well.v1_requests) == 6
    await sick.stop()
    await well.stop()


async def test_connection_refused_goes_to_another_replica_of_the_version(
    start_router: StartRouter, admin_headers: dict[str, str]
) -> None:
    """A replica that was ready and then refuses connections: the request goes to the other
    replica of the same version, and the refusing one is marked not ready."""
    gone = await RawBackend(created("s-gone")).start()
    other = await RawBackend(created("s-other")).start()
    elsewhere = await RawBackend(created("s-v2")).start()
    router = await start_router(
        [f"v1={gone.url}", f"v1={other.url}", f"v2={elsewhere.url}"], probe_interval_s=60
    )
    await gone.stop()
    await asyncio.sleep(0.05)
    async with httpx.AsyncClient(base_url=router.url) as client:
        answer = await client.post("/v1/sessions", json={"user_id": "u"})
        status = (await client.get("/admin/versions", headers=admin_headers)).json()
    assert answer.status_code == 201, answer.text
    assert answer.json()["session_id"] == "s-other"
    assert elsewhere.v1_requests == []
    replicas = {r["url"]: r for v in status["versions"] for r in v["replicas"]}
    assert replicas[gone.url]["ready"] is False
    assert replicas[other.url]["ready"] is True
    await other.stop()
    await elsewhere.stop()


async def test_503_draining_goes_to_another_replica(start_router: StartRouter) -> None:
    """A replica that answers 503 draining (nothing ran) is skipped for another replica of
    the same version; the client sees only the 201."""
    drainer = await RawBackend(draining).start()
    taker = await RawBackend(created("s-taken")).start()
    router = await start_router([f"v1={drainer.url}", f"v1={taker.url}"], probe_interval_s=60)
    async with httpx.AsyncClient(base_url=router.url) as client:
        answer = await client.post("/v1/sessions", json={"user_id": "u"})
    assert answer.status_code == 201
    assert answer.json()["session_id"] == "s-taken"
    assert len(drainer.v1_requests) == 1 and len(taker.v1_requests) == 1
    await drainer.stop()
    await taker.stop()


async def test_other_503s_pass_through_unretried(start_router: StartRouter) -> None:
    """A 503 that is not `draining` (the turn ran and failed) is the client's answer."""

    async def model_down(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        from tests.router.backends import write_json

        await write_json(writer, 503, b'{"error":{"code":"model_unavailable","message":"x"}}')
        return True

    failing = await RawBackend(model_down).start()
    spare = await RawBackend(echo).start()
    router = await start_router([f"v1={failing.url}", f"v1={spare.url}"], probe_interval_s=60)
    async with httpx.AsyncClient(base_url=router.url) as client:
        answer = await client.post("/v1/x", content=b"{}")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "model_unavailable"
    assert spare.v1_requests == []
    await failing.stop()
    await spare.stop()


async def test_a_dropped_connection_is_503_upstream_lost_and_never_resent(
    start_router: StartRouter,
) -> None:
    """The replica read the turn and closed the connection: 503 upstream_lost with
    Retry-After, and the turn was sent once (to no other replica either)."""
    make_session = created("s1")

    async def drop_turns(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.path.endswith("/messages"):
            return await drop(seen, writer)
        return await make_session(seen, writer)

    dropper = await RawBackend(drop_turns).start()
    spare = await RawBackend(echo).start()
    router = await start_router([f"v1={dropper.url}", f"v2={spare.url}"], probe_interval_s=60)
    async with httpx.AsyncClient(base_url=router.url) as client:
        session = (await client.post("/v1/sessions", json={"user_id": "u"})).json()["session_id"]
        answer = await client.post(f"/v1/sessions/{session}/messages", json={"content": "hi"})
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "upstream_lost"
    assert answer.headers["retry-after"] == "1"
    turns = [seen for seen in dropper.v1_requests if seen.path.endswith("/messages")]
    assert len(turns) == 1
    assert spare.v1_requests == []
    await dropper.stop()
    await spare.stop()


async def test_all_replicas_down_is_503_with_retry_after(start_router: StartRouter) -> None:
    """No replica answers: new sessions and turns get 503 no_ready_replica, /ready is 503."""
    router = await start_router(
        [f"v1=http://127.0.0.1:{free_port()}", f"v1=http://127.0.0.1:{free_port()}"]
    )
    async with httpx.AsyncClient(base_url=router.url) as client:
        create = await client.post("/v1/sessions", json={"user_id": "u"})
        turn = await client.post("/v1/sessions/abc/messages", json={"content": "x"})
        ready = await client.get("/ready")
        health = await client.get("/health")
    for answer in (create, turn):
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "no_ready_replica"
        assert int(answer.headers["retry-after"]) >= 1
    assert ready.status_code == 503 and health.status_code == 200


async def test_malformed_http_is_400_and_closes(start_router: StartRouter) -> None:
    """Bytes that are not HTTP: a 400 in the error shape, then the connection closes."""
    backend = await RawBackend(echo).start()
    router = await start_router([f"v1={backend.url}"])
    raw = await raw_exchange(router.port, b"THIS IS NOT HTTP\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400")
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "bad_request"
    assert backend.v1_requests == []
    await backend.stop()


async def test_huge_headers_431_and_huge_bodies_413(start_router: StartRouter) -> None:
    """Headers past max_header_bytes: 431; a body past max_body_bytes, announced or
    chunked: 413. None of them reaches a replica."""
    backend = await RawBackend(echo).start()
    router = await start_router([f"v1={backend.url}"], max_header_bytes=2048, max_body_bytes=1000)
    headers = b"GET /v1/x HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 4000 + b"\r\n\r\n"
    assert (await raw_exchange(router.port, headers)).startswith(b"HTTP/1.1 431")
    announced = b"POST /v1/x HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n"
    answer = await raw_exchange(router.port, announced)
    assert answer.startswith(b"HTTP/1.1 413") and b"input_too_large" in answer
    chunk = b"%x\r\n%s\r\n" % (600, b"b" * 600)
    chunked = b"POST /v1/x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" + chunk * 2
    assert (await raw_exchange(router.port, chunked)).startswith(b"HTTP/1.1 413")
    async with httpx.AsyncClient(base_url=router.url) as client:
        fine = await client.post("/v1/x", content=b"c" * 1000)
    assert fine.status_code == 200 and fine.content == b"c" * 1000
    assert [seen.body for seen in backend.v1_requests] == [b"c" * 1000]
    await backend.stop()


async def test_unknown_router_paths_are_404_in_the_error_shape(start_router: StartRouter) -> None:
    """Outside /v1, /admin, /health, /ready and /metrics the router itself answers 404;
    a wrong method on its own endpoints, or HEAD anywhere, 405."""
    backend = await RawBackend(echo).start()
    router = await start_router([f"v1={backend.url}"])
    async with httpx.AsyncClient(base_url=router.url) as client:
        answer = await client.get("/nowhere")
        wrong = await client.post("/health")
        head = await client.head("/v1/sessions/s")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and head.status_code == 405
    assert backend.v1_requests == []
    await backend.stop()


@pytest.mark.parametrize("stream_chunks", [1, 3])
async def test_a_stream_reaches_the_client_chunk_by_chunk(
    start_router: StartRouter, stream_chunks: int
) -> None:
    """The replica sends one event, then waits until the client has it before sending the
    next: the client sees every chunk before the replica sends the following one."""
    got = [asyncio.Event() for _ in range(stream_chunks)]

    async def stream(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        for index in range(stream_chunks):
            event = b"event: token\ndata: %d\n\n" % index
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.wait_for(got[index].wait(), timeout=5)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    backend = await RawBackend(stream).start()
    router = await start_router([f"v1={backend.url}"])
    seen: list[str] = []
    async with (
        httpx.AsyncClient(base_url=router.url) as client,
        client.stream(
            "POST",
            "/v1/stream",
            json={"content": "x"},
            headers={"accept": "text/event-stream"},
        ) as answer,
    ):
        assert answer.headers["content-type"] == "text/event-stream"
        async for text in answer.aiter_text():
            seen.append(text)
            for index in range(stream_chunks):
                if f"data: {index}\n" in text:
                    got[index].set()
    assert "".join(seen) == "".join(f"event: token\ndata: {i}\n\n" for i in range(stream_chunks))
    await backend.stop()


async def test_a_slow_reader_gets_a_large_answer_whole(start_router: StartRouter) -> None:
    """8 MiB to a client that waits before reading: the router stops reading the replica
    while the client's buffer is full, the client gets every byte, and the pooled replica
    connection serves the next request."""
    big = bytes(range(256)) * (8 * 4096)

    async def large(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        from tests.router.backends import write_json

        await write_json(writer, 200, big if seen.path == "/v1/big" else b"{}")
        return True

    backend = await RawBackend(large).start()
    router = await start_router([f"v1={backend.url}"], probe_interval_s=60)
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    writer.write(b"GET /v1/big HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.3)
    raw = await asyncio.wait_for(reader.read(-1), timeout=10)
    writer.close()
    assert raw.split(b"\r\n\r\n", 1)[1] == big
    async with httpx.AsyncClient(base_url=router.url) as client:
        assert (await client.get("/v1/small")).status_code == 200
    assert backend.connections <= 2
    await backend.stop()


async def test_an_unpinned_session_waits_when_no_replica_can_say_which_version(
    start_router: StartRouter,
) -> None:
    """The lookup of a session the router never saw answers 503 (not 404) everywhere:
    the turn is not sent to the stable version by default; the client is told to retry."""

    async def model_down(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        from tests.router.backends import write_json

        await write_json(writer, 503, b'{"error":{"code":"store_unavailable","message":"x"}}')
        return True

    failing = await RawBackend(model_down).start()
    router = await start_router([f"v1={failing.url}"], probe_interval_s=60)
    async with httpx.AsyncClient(base_url=router.url) as client:
        answer = await client.post("/v1/sessions/abc123/messages", json={"content": "hi"})
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "session_lookup_failed"
    assert "retry-after" in answer.headers
    assert [seen.method for seen in failing.v1_requests] == ["GET"]  # the lookup, no turn
    await failing.stop()


async def test_a_percent_encoded_session_id_is_refused(start_router: StartRouter) -> None:
    """`abc%2Fmessages` would be a different route once the replica decodes it: 400, and
    nothing reaches a replica."""
    backend = await RawBackend(echo).start()
    router = await start_router([f"v1={backend.url}"], probe_interval_s=60)
    async with httpx.AsyncClient(base_url=router.url) as client:
        answer = await client.post("/v1/sessions/abc%2Fmessages", json={"content": "hi"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_session_id"
    assert backend.v1_requests == []
    await backend.stop()


async def test_duplicate_identity_headers_are_refused(start_router: StartRouter) -> None:
    """Two Authorization (or X-Correlation-ID, or Host) headers: 400, nothing forwarded."""
    backend = await RawBackend(echo).start()
    router = await start_router([f"v1={backend.url}"], probe_interval_s=60)
    for name in (b"Authorization: Bearer a", b"X-Correlation-ID: one", b"Host: x"):
        answer = await raw_exchange(
            router.port,
            b"POST /v1/x HTTP/1.1\r\nHost: r\r\n%s\r\n%s\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n{}" % (name, name)
            if not name.startswith(b"Host")
            else b"POST /v1/x HTTP/1.1\r\nHost: r\r\n%s\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n{}" % name,
        )
        assert answer.startswith(b"HTTP/1.1 400"), answer
        assert b"duplicate_header" in answer
    assert backend.v1_requests == []
    await backend.stop()


async def test_headers_named_in_connection_stay_on_this_hop(start_router: StartRouter) -> None:
    """`Connection: x-secret` makes X-Secret hop-by-hop: the replica never sees it."""
    backend = await RawBackend(echo).start()
    router = await start_router([f"v1={backend.url}"], probe_interval_s=60)
    async with httpx.AsyncClient(base_url=router.url) as client:
        answer = await client.post(
            "/v1/x",
            content=b"{}",
            headers={"Connection": "keep-alive, X-Secret", "X-Secret": "1", "X-Kept": "2"},
        )
    assert answer.status_code == 200
    [seen] = backend.v1_requests
    assert "x-secret" not in seen.headers and seen.headers["x-kept"] == "2"
    await backend.stop()
