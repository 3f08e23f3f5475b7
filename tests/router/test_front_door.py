"""The router as the authenticated front door (auth on): credentials checked on both the
callback path and the awaiting path, the client's credential kept at the router and a
verifiable assertion sent instead, headers only the router may set dropped whatever the
auth setting, and the per-caller limits, whose turn slots never leak."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from agentkeel.identity.principal import CALLER_HEADER, PROVIDER_KEY_HEADER
from agentkeel.router.frontdoor import ADMITTED, UNDECIDED
from tests.router.backends import RawBackend, Seen, drop, echo, write_json
from tests.router.conftest import StartRouter
from tests.router.frontdoor_kit import (
    Identity,
    PathSpy,
    bearer,
    make_identity,
    session_replica,
)


@pytest.fixture
def identity(tmp_path: Path) -> Identity:
    return make_identity(tmp_path / "identity")


Serve = Callable[[RawBackend], Awaitable[RawBackend]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(backend)``: started, and stopped after the test even when it fails."""
    started: list[RawBackend] = []

    async def start(backend: RawBackend) -> RawBackend:
        started.append(await backend.start())
        return backend

    yield start
    for backend in started:
        await backend.stop()


def turns_of(backend: RawBackend) -> list[Seen]:
    return [seen for seen in backend.v1_requests if seen.path.endswith("/messages")]


async def test_no_credential_is_a_401_with_a_bearer_challenge(
    start_router: StartRouter, serve: Serve, identity: Identity
) -> None:
    """Without Authorization: 401 unauthenticated, WWW-Authenticate: Bearer, a message
    naming what is accepted; nothing reaches the replica, on a new connection or a
    kept-alive one with a pooled replica connection."""
    backend = await serve(session_replica())
    settings = identity.settings()
    door = identity.front_door(settings)
    router = await start_router([f"v1={backend.url}"], front_door=door)
    async with httpx.AsyncClient(base_url=router.url) as client:
        answers = [await client.post("/v1/sessions", json={}) for _ in range(2)]
        # One admitted request leaves a pooled connection, so the next refusal is decided
        # on the callback path.
        ok = await client.post("/v1/sessions", json={}, headers=bearer(identity.key))
        late = await client.get("/v1/sessions/s1")
    assert ok.status_code == 201
    for answer in [*answers, late]:
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "error=" not in answer.headers["www-authenticate"]
        error = answer.json()["error"]
        assert error["code"] == "unauthenticated"
        assert "keel keys create" in error["message"]
    assert [seen.path for seen in backend.v1_requests] == ["/v1/sessions"]
    assert door.outcomes["unauthenticated"] == 3 and door.outcomes["ok"] == 1


async def test_a_bad_key_is_a_401_invalid_token(
    start_router: StartRouter, serve: Serve, identity: Identity
) -> None:
    """An unknown API key and a revoked one: 401 with error="invalid_token", the key
    never in the answer, and nothing forwarded."""
    from agentkeel.identity.apikeys import ApiKeyStore

    backend = await serve(session_replica())
    door = identity.front_door(identity.settings())
    router = await start_router([f"v1={backend.url}"], front_door=door)
    wrong = identity.key[:-4] + ("AAAA" if not identity.key.endswith("AAAA") else "BBBB")
    async with httpx.AsyncClient(base_url=router.url) as client:
        unknown = await client.post("/v1/sessions", json={}, headers=bearer(wrong))
        ApiKeyStore(identity.api_keys_file).revoke("ci")
        await asyncio.sleep(0.05)
        revoked = await client.post("/v1/sessions", json={}, headers=bearer(identity.key))
    for answer, credential in ((unknown, wrong), (revoked, identity.key)):
        assert answer.status_code == 401
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]
        assert credential not in answer.text
    assert revoked.json()["error"]["code"] == "key_revoked"
    assert backend.v1_requests == []


async def test_a_good_key_is_forwarded_with_an_assertion_and_without_authorization(
    start_router: StartRouter, serve: Serve, identity: Identity
) -> None:
    """Every forwarded request, on the awaiting path (the first) and the callback path
    (the rest), reaches the replica without the client's Authorization and with one
    CALLER_HEADER that verifies to the key's principal."""
    backend = await serve(session_replica())
    settings = identity.settings()
    door = identity.front_door(settings)
    spy = PathSpy(door)
    router = await start_router([f"v1={backend.url}"], front_door=door)
    async with httpx.AsyncClient(base_url=router.url, headers=bearer(identity.key)) as client:
        assert (await client.post("/v1/sessions", json={})).status_code == 201
        for _ in range(3):
            answer = await client.post("/v1/sessions/s1/messages", json={"content": "hi"})
            assert answer.status_code == 200
        assert (await client.get("/v1/sessions/s1")).status_code == 200
    assert spy.awaited == [ADMITTED]
    assert spy.now.count(ADMITTED) >= 3
    assert len(backend.v1_requests) == 5
    for seen in backend.v1_requests:
        assert "authorization" not in seen.headers
        principal = identity.verify(settings, seen.headers[CALLER_HEADER])
        assert principal.credential == "api_key:ci"
        assert (principal.user_id, principal.organization) == ("ana", "acme")
        assert principal.scopes == frozenset({"chat", "sessions:read"})


@pytest.mark.parametrize("auth", [False, True])
async def test_a_client_sent_assertion_and_provider_key_are_dropped(
    start_router: StartRouter, serve: Serve, identity: Identity, auth: bool, tmp_path: Path
) -> None:
    """A forged CALLER_HEADER never reaches the replica (auth off: none arrives; auth on:
    only the router's own, which verifies); a PROVIDER_KEY_HEADER neither, unless request
    keys are allowed."""
    backend = await serve(RawBackend(echo))
    settings = identity.settings()
    headers = {CALLER_HEADER: "forged.token.value", PROVIDER_KEY_HEADER: "openai=sk-user"}
    if auth:
        headers.update(bearer(identity.key))
    strict = await start_router(
        [f"v1={backend.url}"], front_door=identity.front_door(settings) if auth else None
    )
    lenient = await start_router(
        [f"v1={backend.url}"],
        front_door=identity.front_door(settings) if auth else None,
        allow_request_keys=True,
        pins=f"sqlite:///{tmp_path / 'lenient.db'}",
    )
    for router in (strict, lenient):
        async with httpx.AsyncClient(base_url=router.url, headers=headers) as client:
            for _ in range(2):  # the awaiting path, then the callback path
                assert (await client.post("/v1/anything", json={})).status_code == 200
    strict_seen, lenient_seen = backend.v1_requests[:2], backend.v1_requests[2:]
    for seen in backend.v1_requests:
        assert seen.headers.get(CALLER_HEADER) != "forged.token.value"
        if auth:
            assert identity.verify(settings, seen.headers[CALLER_HEADER]).credential == (
                "api_key:ci"
            )
        else:
            assert CALLER_HEADER not in seen.headers
    assert all(PROVIDER_KEY_HEADER not in seen.headers for seen in strict_seen)
    assert all(seen.headers[PROVIDER_KEY_HEADER] == "openai=sk-user" for seen in lenient_seen)


async def test_auth_off_forwards_the_authorization_header(
    start_router: StartRouter, serve: Serve
) -> None:
    """Without a front door the router leaves Authorization to the replica, as before."""
    backend = await serve(RawBackend(echo))
    router = await start_router([f"v1={backend.url}"])
    async with httpx.AsyncClient(base_url=router.url, headers=bearer("replica-token")) as client:
        for _ in range(2):
            assert (await client.get("/v1/x")).status_code == 200
    assert [s.headers["authorization"] for s in backend.v1_requests] == ["Bearer replica-token"] * 2


async def test_the_request_rate_limit_is_a_429_with_retry_after(
    start_router: StartRouter, serve: Serve, identity: Identity
) -> None:
    """Three requests a minute per key: the fourth is a 429 rate_limited with a
    Retry-After of the seconds until the window frees, and is not forwarded; the
    counts show in agent_router_auth_total."""
    backend = await serve(session_replica())
    limits = {"requests_per_minute_per_key": 3, "requests_per_minute_per_user": 0}
    door = identity.front_door(identity.settings(limits=limits))
    router = await start_router([f"v1={backend.url}"], front_door=door)
    async with httpx.AsyncClient(base_url=router.url, headers=bearer(identity.key)) as client:
        answers = [await client.post("/v1/sessions", json={}) for _ in range(3)]
        limited = await client.post("/v1/sessions", json={})
        metrics = (await client.get("/metrics")).text
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert len(backend.v1_requests) == 3
    assert 'agent_router_auth_total{outcome="ok"} 3.0' in metrics
    assert 'agent_router_auth_total{outcome="rate_limited"} 1.0' in metrics


async def test_a_streamed_turn_holds_its_slot_until_its_answer_ends(
    start_router: StartRouter, serve: Serve, identity: Identity
) -> None:
    """One concurrent turn per key: while a streamed turn is running a second is a 429
    too_many_concurrent_turns (not forwarded); once the stream has ended the slot is
    free again, on the callback path as on the awaiting path."""
    release = asyncio.Event()

    async def streamed(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        event = b"event: token\ndata: hi\n\n"
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.wait_for(release.wait(), timeout=5)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    backend = await serve(session_replica(turn=streamed))
    limits = {"concurrent_turns_per_key": 1, "concurrent_turns_per_user": 0}
    door = identity.front_door(identity.settings(limits=limits))
    spy = PathSpy(door)
    router = await start_router([f"v1={backend.url}"], front_door=door)
    principal = door_principal(identity)
    async with (
        httpx.AsyncClient(base_url=router.url, headers=bearer(identity.key)) as first,
        httpx.AsyncClient(base_url=router.url, headers=bearer(identity.key)) as second,
    ):
        assert (await first.post("/v1/sessions", json={})).status_code == 201
        for _round in range(3):
            release.clear()
            async with first.stream(
                "POST", "/v1/sessions/s1/messages", json={"content": "x"}
            ) as answer:
                assert answer.status_code == 200
                blocked = await second.post("/v1/sessions/s1/messages", json={"content": "y"})
                assert blocked.status_code == 429
                assert blocked.json()["error"]["code"] == "too_many_concurrent_turns"
                assert int(blocked.headers["retry-after"]) >= 1
                assert door.limits.running_turns(principal) == 1  # type: ignore[attr-defined]
                release.set()
                await answer.aread()
            await asyncio.sleep(0.05)
            assert door.limits.running_turns(principal) == 0  # type: ignore[attr-defined]
    assert len(turns_of(backend)) == 3
    assert ADMITTED in spy.now and ADMITTED in spy.awaited
    assert door.outcomes["concurrency_limited"] == 3


async def test_turn_slots_are_released_after_upstream_errors(
    start_router: StartRouter, serve: Serve, identity: Identity
) -> None:
    """One concurrent turn per key, and a replica that drops every turn's connection
    (503 upstream_lost) or answers 500: turn after turn gets the replica's or the
    router's answer, never a 429, and no slot is left at the end."""
    count = 0

    async def flaky(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        nonlocal count
        count += 1
        if count % 2:
            return await drop(seen, writer)
        await write_json(writer, 500, b'{"error":{"code":"internal_error","message":"x"}}')
        return True

    backend = await serve(session_replica(turn=flaky))
    limits = {"concurrent_turns_per_key": 1, "concurrent_turns_per_user": 0}
    door = identity.front_door(identity.settings(limits=limits))
    spy = PathSpy(door)
    router = await start_router([f"v1={backend.url}"], front_door=door, probe_interval_s=60)
    async with httpx.AsyncClient(base_url=router.url, headers=bearer(identity.key)) as client:
        assert (await client.post("/v1/sessions", json={})).status_code == 201
        statuses = []
        for _ in range(6):
            answer = await client.post("/v1/sessions/s1/messages", json={"content": "x"})
            statuses.append(answer.status_code)
    assert set(statuses) == {503, 500}
    assert ADMITTED in spy.now and ADMITTED in spy.awaited
    assert door.limits.running_turns(door_principal(identity)) == 0  # type: ignore[attr-defined]


async def test_a_client_gone_mid_stream_releases_its_slot(
    start_router: StartRouter, serve: Serve, identity: Identity
) -> None:
    """A client that disconnects while its turn streams gives its slot back."""
    started = asyncio.Event()

    async def endless(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        await writer.drain()
        started.set()
        await asyncio.sleep(5)
        return False

    backend = await serve(session_replica(turn=endless))
    limits = {"concurrent_turns_per_key": 1, "concurrent_turns_per_user": 0}
    door = identity.front_door(identity.settings(limits=limits))
    router = await start_router([f"v1={backend.url}"], front_door=door)
    principal = door_principal(identity)
    async with httpx.AsyncClient(base_url=router.url, headers=bearer(identity.key)) as client:
        assert (await client.post("/v1/sessions", json={})).status_code == 201
        async with client.stream("POST", "/v1/sessions/s1/messages", json={"content": "x"}):
            await asyncio.wait_for(started.wait(), timeout=5)
            assert door.limits.running_turns(principal) == 1  # type: ignore[attr-defined]
    await asyncio.sleep(0.1)
    assert door.limits.running_turns(principal) == 0  # type: ignore[attr-defined]


async def test_a_jwt_is_admitted_after_one_jwks_fetch_then_on_the_callback_path(
    start_router: StartRouter, serve: Serve, identity: Identity
) -> None:
    """An OIDC token whose key comes from a JWKS served over a real socket: the first
    request awaits the fetch (undecided on the callback path), later ones are decided
    there; the replica gets the token's user in the assertion, never the token."""

    async def jwks(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await write_json(writer, 200, identity.jwks())
        return True

    issuer = await serve(RawBackend(jwks))
    backend = await serve(session_replica())
    settings = identity.settings(jwks_url=f"{issuer.url}/jwks.json")
    door = identity.front_door(settings)
    spy = PathSpy(door)
    router = await start_router([f"v1={backend.url}"], front_door=door)
    token = identity.jwt(subject="zoe")
    async with httpx.AsyncClient(base_url=router.url, headers=bearer(token)) as client:
        assert (await client.post("/v1/sessions", json={})).status_code == 201
        assert (await client.get("/v1/sessions/s1")).status_code == 200
        for _ in range(3):
            answer = await client.post("/v1/sessions/s1/messages", json={"content": "hi"})
            assert answer.status_code == 200
        forged = identity.jwt(kid="unknown-kid")
        refused = await client.get("/v1/sessions/s1", headers=bearer(forged))
    assert refused.status_code == 401
    assert [s.path for s in issuer.seen].count("/jwks.json") == 1
    assert spy.awaited[0] == ADMITTED
    assert spy.now.count(ADMITTED) >= 3
    assert UNDECIDED not in spy.now[1:] or spy.now.count(UNDECIDED) <= 1
    for seen in backend.v1_requests:
        assert token not in str(seen.headers)
        principal = identity.verify(settings, seen.headers[CALLER_HEADER])
        assert (principal.kind, principal.user_id, principal.organization) == (
            "oidc",
            "zoe",
            "acme",
        )


async def test_health_ready_metrics_and_admin_are_not_behind_api_keys(
    start_router: StartRouter, serve: Serve, identity: Identity, admin_headers: dict[str, str]
) -> None:
    """The router's own endpoints answer without an API key; /admin keeps its token."""
    backend = await serve(session_replica())
    door = identity.front_door(identity.settings())
    router = await start_router([f"v1={backend.url}"], front_door=door)
    async with httpx.AsyncClient(base_url=router.url) as client:
        for path in ("/health", "/ready", "/metrics"):
            assert (await client.get(path)).status_code == 200
        assert (await client.get("/admin/versions")).status_code == 401
        assert (await client.get("/admin/versions", headers=admin_headers)).status_code == 200


def door_principal(identity: Identity):  # type: ignore[no-untyped-def]
    """The principal of the test's API key, as the front door makes it."""
    from agentkeel.identity.apikeys import ApiKeys

    return ApiKeys(identity.api_keys_file).authenticate(identity.key)


@pytest.mark.redis
async def test_limits_in_redis_go_the_awaiting_path(
    start_router: StartRouter, serve: Serve, identity: Identity, redis_url: str
) -> None:
    """With redis_url set the limits are shared, so every /v1 request is decided awaiting:
    the rate limit answers 429 with Retry-After, and a turn slot taken there is given
    back when the turn ends (the next turn is admitted)."""
    from agentkeel.identity.apikeys import ApiKeyStore

    name = f"redis-{uuid.uuid4().hex[:8]}"  # counters of earlier runs do not count
    key = (
        ApiKeyStore(identity.api_keys_file)
        .create(name=name, organization="acme", scopes=["chat", "sessions:read"])
        .key
    )
    backend = await serve(session_replica())
    limits = {
        "requests_per_minute_per_key": 5,
        "requests_per_minute_per_user": 0,
        "concurrent_turns_per_key": 1,
        "concurrent_turns_per_user": 0,
    }
    door = identity.front_door(identity.settings(redis_url=redis_url, limits=limits))
    spy = PathSpy(door)
    router = await start_router([f"v1={backend.url}"], front_door=door)
    async with httpx.AsyncClient(base_url=router.url, headers=bearer(key)) as client:
        assert (await client.post("/v1/sessions", json={})).status_code == 201
        statuses = []
        for _ in range(4):
            answer = await client.post("/v1/sessions/s1/messages", json={"content": "x"})
            statuses.append(answer.status_code)
            await asyncio.sleep(0.05)  # the slot's release is scheduled, not awaited
        limited = await client.post("/v1/sessions/s1/messages", json={"content": "x"})
    assert statuses == [200, 200, 200, 200]
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert spy.now == [UNDECIDED] * len(spy.now)
    assert spy.awaited.count(ADMITTED) == 5
