"""Sessions are bound to their owner on the replica: who may start, read and change them.

Replicas run with ``auth.enabled`` over real API keys (A's keys file) and, for
requests "through the router", real front-door assertions signed with the
stack's identity key.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentkeel.errors import InvalidRequest
from agentkeel.identity.keys import generate_key_pair
from agentkeel.identity.principal import CALLER_HEADER, PROVIDER_KEY_HEADER
from agentkeel.runtime.caller import parse_request_keys
from agentkeel.runtime.types import Reply, Turn
from agentkeel.secrets.call_context import CallContext, current_call_context
from tests.runtime.auth_replicas import AuthStack, Replica, make_auth_stack, start_replica

# Every route that names a session, as (method, path suffix, JSON body, extra headers).
SESSION_ROUTES: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = [
    ("GET", "", None, {}),
    ("POST", "/messages", {"content": "hello"}, {}),
    ("POST", "/messages", {"content": "hello"}, {"Accept": "text/event-stream"}),
    ("POST", "/rewind", {"turn": 0}, {}),
    ("POST", "/feedback", {"score": 4}, {}),
    ("DELETE", "", None, {}),
]


@pytest.fixture
async def exits() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


@pytest.fixture
def stack(tmp_path: Path) -> AuthStack:
    stack = make_auth_stack(tmp_path / "stack")
    stack.add_key("ana", organization="acme", user="ana")
    stack.add_key("bob", organization="acme", user="bob")
    stack.add_key("acme-app", organization="acme")
    stack.add_key("zed", organization="globex", user="ana")  # the same user id, another org
    stack.add_key("reader", organization="acme", user="ana", scopes=["sessions:read"])
    stack.add_key("writer", organization="acme", user="ana", scopes=["chat"])
    return stack


@pytest.fixture
async def replica(stack: AuthStack, exits: AsyncExitStack) -> Replica:
    return await start_replica(exits, stack.settings())


async def create(replica: Replica, headers: dict[str, str], **body: Any) -> str:
    response = await replica.client.post("/v1/sessions", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["session_id"])


async def call(
    replica: Replica,
    method: str,
    session_id: str,
    suffix: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> httpx.Response:
    return await replica.client.request(
        method, f"/v1/sessions/{session_id}{suffix}", json=body, headers=headers
    )


def comparable(response: httpx.Response, session_id: str) -> tuple[int, str, dict[str, str]]:
    """Status, body with the session id replaced, and headers without the per-request ones."""
    headers = {
        name: value
        for name, value in response.headers.items()
        if name.lower() not in {"x-correlation-id"}
    }
    return response.status_code, response.text.replace(session_id, "<id>"), headers


# -- credentials --------------------------------------------------------------------


async def test_without_credentials_every_v1_route_is_401(replica: Replica) -> None:
    """Auth on: no Authorization header is a 401 ``unauthenticated`` on every /v1 route,
    before the body or the session is looked at; the probes stay open."""
    response = await replica.client.post("/v1/sessions", json={"user_id": "ana"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    for method, suffix, body, headers in SESSION_ROUTES:
        response = await call(replica, method, "nope", suffix, body, headers)
        assert response.status_code == 401, (method, suffix, response.text)
        assert response.json()["error"]["code"] == "unauthenticated"
    assert (await replica.client.get("/health")).status_code == 200
    assert (await replica.client.get("/ready")).status_code == 200


async def test_an_unknown_api_key_is_401(replica: Replica) -> None:
    """A key that is not in the keys file is refused."""
    response = await replica.client.post(
        "/v1/sessions", json={}, headers={"Authorization": "Bearer ak_zzzzzzzz_" + "x" * 40}
    )
    assert response.status_code == 401


# -- creating -----------------------------------------------------------------------


async def test_a_user_key_owns_its_sessions_and_refuses_another_user_id(
    stack: AuthStack, replica: Replica
) -> None:
    """A key bound to ana starts ana's sessions in acme (user_id may be left out, or
    repeat ana); naming bob is a 403 ``user_mismatch`` and stores nothing."""
    ana = stack.keys["ana"].headers
    response = await replica.client.post("/v1/sessions", json={}, headers=ana)
    assert response.status_code == 201, response.text
    assert (response.json()["user_id"], response.json()["organization"]) == ("ana", "acme")
    same = await replica.client.post("/v1/sessions", json={"user_id": "ana"}, headers=ana)
    assert same.status_code == 201

    refused = await replica.client.post("/v1/sessions", json={"user_id": "bob"}, headers=ana)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "user_mismatch"

    session = await replica.client.get(f"/v1/sessions/{response.json()['session_id']}", headers=ana)
    assert (session.json()["user_id"], session.json()["organization"]) == ("ana", "acme")


async def test_an_organization_key_names_the_user_and_stays_in_its_organization(
    stack: AuthStack, replica: Replica
) -> None:
    """A key of acme with no fixed user must name the user (422 otherwise); it may act on
    every acme session, and the user's own key sees the session it started for them;
    another organization's key with the same user id does not."""
    app_key = stack.keys["acme-app"].headers
    missing = await replica.client.post("/v1/sessions", json={}, headers=app_key)
    assert missing.status_code == 422
    for_ana = await create(replica, app_key, user_id="ana")
    by_ana = await create(replica, stack.keys["ana"].headers)

    assert (await replica.client.get(f"/v1/sessions/{for_ana}", headers=app_key)).status_code == 200
    assert (await replica.client.get(f"/v1/sessions/{by_ana}", headers=app_key)).status_code == 200
    ana = stack.keys["ana"].headers
    assert (await replica.client.get(f"/v1/sessions/{for_ana}", headers=ana)).status_code == 200
    zed = stack.keys["zed"].headers
    assert (await replica.client.get(f"/v1/sessions/{for_ana}", headers=zed)).status_code == 404
    zed_own = await create(replica, zed)
    assert (await replica.client.get(f"/v1/sessions/{zed_own}", headers=ana)).status_code == 404
    assert (await replica.client.get(f"/v1/sessions/{zed_own}", headers=app_key)).status_code == 404


# -- someone else's session -----------------------------------------------------------


@pytest.mark.parametrize(("method", "suffix", "body", "extra"), SESSION_ROUTES)
async def test_another_users_session_answers_exactly_as_an_unknown_one(
    stack: AuthStack,
    replica: Replica,
    method: str,
    suffix: str,
    body: dict[str, Any] | None,
    extra: dict[str, str],
) -> None:
    """bob's attempt on ana's session gets the response an unknown session id gets (same
    status, code, message shape and headers), and changes nothing of ana's session."""
    ana = stack.keys["ana"].headers
    session_id = await create(replica, ana)
    turn = await call(replica, "POST", session_id, "/messages", {"content": "first"}, ana)
    assert turn.status_code == 200, turn.text
    before = (await call(replica, "GET", session_id, "", None, ana)).json()

    bob = {**stack.keys["bob"].headers, **extra}
    unknown_id = uuid.uuid4().hex
    theirs = await call(replica, method, session_id, suffix, body, bob)
    unknown = await call(replica, method, unknown_id, suffix, body, bob)
    assert theirs.status_code == 404
    assert theirs.json()["error"]["code"] == "session_not_found"
    assert comparable(theirs, session_id) == comparable(unknown, unknown_id)

    after = await call(replica, "GET", session_id, "", None, ana)
    assert after.json() == before
    assert replica.app.state.service is not None
    assert await replica.app.state.service.store.list_feedback(session_id) == []


async def test_a_running_turn_on_another_users_session_still_reads_as_unknown(
    stack: AuthStack, exits: AsyncExitStack
) -> None:
    """While ana's turn holds her session's lock, bob's turn and rewind on it are 404s
    as for an unknown session, not the 409 that would tell him it exists."""
    gate = _Gate()
    replica = await start_replica(exits, stack.settings(), agent=gate)
    ana = stack.keys["ana"].headers
    bob = stack.keys["bob"].headers
    session_id = await create(replica, ana)
    running = asyncio.create_task(
        call(replica, "POST", session_id, "/messages", {"content": "slow"}, ana)
    )
    await gate.entered.wait()
    try:
        busy = await call(replica, "POST", session_id, "/messages", {"content": "x"}, ana)
        assert busy.status_code == 409  # the owner is told
        for suffix, body in (("/messages", {"content": "x"}), ("/rewind", {"turn": 0})):
            theirs = await call(replica, "POST", session_id, suffix, body, bob)
            unknown_id = uuid.uuid4().hex
            unknown = await call(replica, "POST", unknown_id, suffix, body, bob)
            assert comparable(theirs, session_id) == comparable(unknown, unknown_id)
            assert theirs.status_code == 404
    finally:
        gate.opened.set()
        assert (await running).status_code == 200


async def test_an_ended_session_of_another_user_reads_as_unknown(
    stack: AuthStack, replica: Replica
) -> None:
    """A deleted session answers its owner 410 but anyone else 404 as for an unknown id."""
    ana = stack.keys["ana"].headers
    bob = stack.keys["bob"].headers
    session_id = await create(replica, ana)
    assert (await call(replica, "DELETE", session_id, "", None, ana)).status_code == 200
    assert (await call(replica, "DELETE", session_id, "", None, ana)).status_code == 410
    theirs = await call(replica, "DELETE", session_id, "", None, bob)
    unknown_id = uuid.uuid4().hex
    unknown = await call(replica, "DELETE", unknown_id, "", None, bob)
    assert comparable(theirs, session_id) == comparable(unknown, unknown_id)


# -- scopes ---------------------------------------------------------------------------


async def test_scopes_are_enforced_per_route(stack: AuthStack, replica: Replica) -> None:
    """``chat`` starts sessions and changes them; ``sessions:read`` reads them. A key
    without the route's scope is a 403 ``insufficient_scope`` naming the scope."""
    reader = stack.keys["reader"].headers
    writer = stack.keys["writer"].headers
    refused = await replica.client.post("/v1/sessions", json={}, headers=reader)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    assert "'chat'" in refused.json()["error"]["message"]

    session_id = await create(replica, writer)
    for method, suffix, body, extra in SESSION_ROUTES:
        response = await call(replica, method, session_id, suffix, body, {**reader, **extra})
        expected = 200 if method == "GET" else 403
        assert response.status_code == expected, (method, suffix, response.text)
    read = await call(replica, "GET", session_id, "", None, writer)
    assert read.status_code == 403
    assert "'sessions:read'" in read.json()["error"]["message"]
    turn = await call(replica, "POST", session_id, "/messages", {"content": "hi"}, writer)
    assert turn.status_code == 200


# -- through the router: the front-door assertion -------------------------------------


async def test_a_forwarded_principal_is_trusted_and_a_forged_one_refused(
    stack: AuthStack, replica: Replica
) -> None:
    """An assertion signed with the stack's identity key acts for its principal (with no
    Authorization header at all); one signed with another key, or garbage, is a 401
    ``caller_assertion_refused``."""
    ana = stack.keys["ana"].principal
    session_id = await create(replica, stack.forwarded(ana))
    read = await call(replica, "GET", session_id, "", None, stack.forwarded(ana))
    assert read.status_code == 200 and read.json()["user_id"] == "ana"
    bob = stack.keys["bob"].principal
    assert (await call(replica, "GET", session_id, "", None, stack.forwarded(bob))).status_code == (
        404
    )

    other = make_auth_stack(stack.directory.parent / "other")
    other.signing_key.write_text(generate_key_pair().private_pem)
    for headers in (other.forwarded(ana), {CALLER_HEADER: "not-a-jwt"}):
        forged = await call(replica, "GET", session_id, "", None, headers)
        assert forged.status_code == 401, forged.text
        assert forged.json()["error"]["code"] == "caller_assertion_refused"
        # A valid API key next to it does not rescue a bad assertion.
        both = await call(
            replica, "GET", session_id, "", None, {**headers, **stack.keys["ana"].headers}
        )
        assert both.status_code == 401


async def test_an_assertion_on_a_replica_without_an_identity_key_is_refused(
    stack: AuthStack, exits: AsyncExitStack
) -> None:
    """A replica with no identity key cannot check an assertion: 401 saying so."""
    settings = stack.settings(identity={"signing_key_file": None})
    replica = await start_replica(exits, settings)
    principal = stack.keys["ana"].principal
    response = await replica.client.get("/v1/sessions/x", headers=stack.forwarded(principal))
    assert response.status_code == 401
    assert "no identity public key" in response.json()["error"]["message"]


async def test_an_assertion_is_refused_even_with_auth_off(
    stack: AuthStack, exits: AsyncExitStack
) -> None:
    """Auth off trusts the body's user_id, but never an unverifiable assertion."""
    replica = await start_replica(
        exits,
        stack.settings(auth={"enabled": False}, identity={"signing_key_file": None}),
    )
    forged = {CALLER_HEADER: "not-a-jwt"}
    response = await replica.client.post("/v1/sessions", json={"user_id": "ana"}, headers=forged)
    assert response.status_code == 401


# -- caller limits ----------------------------------------------------------------------


async def test_direct_callers_are_rate_limited_and_forwarded_ones_are_not(
    stack: AuthStack, exits: AsyncExitStack
) -> None:
    """Served directly, the per-key request rate applies (429 ``rate_limited`` with a
    Retry-After); behind the router (an assertion) it was applied there, so not again."""
    settings = stack.settings(auth={"limits": {"requests_per_minute_per_key": 2}})
    replica = await start_replica(exits, settings)
    ana = stack.keys["ana"]
    codes = [
        (await replica.client.get("/v1/sessions/x", headers=ana.headers)).status_code
        for _ in range(3)
    ]
    assert codes == [404, 404, 429]
    limited = await replica.client.get("/v1/sessions/x", headers=ana.headers)
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    forwarded = stack.forwarded(ana.principal)
    for _ in range(4):
        response = await replica.client.get("/v1/sessions/x", headers=forwarded)
        assert response.status_code == 404


async def test_concurrent_turns_per_user_are_limited_and_released(
    stack: AuthStack, exits: AsyncExitStack
) -> None:
    """With one concurrent turn per user, a second turn while the first runs is a 429
    ``too_many_concurrent_turns``; once the first ends its slot is free again."""
    gate = _Gate()
    settings = stack.settings(auth={"limits": {"concurrent_turns_per_user": 1}})
    replica = await start_replica(exits, settings, agent=gate)
    ana = stack.keys["ana"].headers
    first, second = await create(replica, ana), await create(replica, ana)
    running = asyncio.create_task(
        call(replica, "POST", first, "/messages", {"content": "slow"}, ana)
    )
    await gate.entered.wait()
    refused = await call(replica, "POST", second, "/messages", {"content": "x"}, ana)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "too_many_concurrent_turns"
    gate.opened.set()
    assert (await running).status_code == 200
    again = await call(replica, "POST", second, "/messages", {"content": "now"}, ana)
    assert again.status_code == 200, again.text


# -- the model-call context --------------------------------------------------------------


class _Recorder:
    """An agent that records the call context its turn runs in."""

    def __init__(self) -> None:
        self.contexts: list[CallContext | None] = []

    async def respond(self, turn: Turn) -> Reply:
        self.contexts.append(current_call_context())
        return Reply(content="ok")


class _Gate:
    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    async def respond(self, turn: Turn) -> Reply:
        self.entered.set()
        await self.opened.wait()
        return Reply(content="done")


async def test_a_turn_runs_in_the_sessions_call_context(
    stack: AuthStack, exits: AsyncExitStack
) -> None:
    """The turn's model calls see the session's user, organization and start; a provider
    key header is ignored while request keys are not allowed; nothing leaks out."""
    recorder = _Recorder()
    replica = await start_replica(exits, stack.settings(), agent=recorder)
    app_key = stack.keys["acme-app"].headers
    session_id = await create(replica, app_key, user_id="cy")
    created = (await call(replica, "GET", session_id, "", None, app_key)).json()
    headers = {**app_key, PROVIDER_KEY_HEADER: "openai=sk-should-not-be-used"}
    for extra in ({}, {"Accept": "text/event-stream"}):
        turn = await call(
            replica, "POST", session_id, "/messages", {"content": "hi"}, {**headers, **extra}
        )
        assert turn.status_code == 200, turn.text
    assert len(recorder.contexts) == 2
    for context in recorder.contexts:
        assert context is not None
        assert (context.user_id, context.organization) == ("cy", "acme")
        assert created["created_at"].startswith("2023-11-14")  # the manual clock's start
        assert context.session_started_at == pytest.approx(1_700_000_000.0)
        assert dict(context.request_keys) == {}
    assert current_call_context() is None


async def test_request_keys_reach_the_turn_only_when_allowed_and_authenticated(
    stack: AuthStack, exits: AsyncExitStack
) -> None:
    """With request keys allowed, an authenticated caller's ``x-keel-provider-key``
    header becomes the turn's request keys (as secrets, not in the reply); an anonymous
    caller's (auth off) is ignored; a malformed header is a 422 that hides the value."""
    recorder = _Recorder()
    allowed = stack.settings(secrets={"key_chain": {"allow_request_keys": True}})
    replica = await start_replica(exits, allowed, agent=recorder)
    ana = stack.keys["ana"].headers
    session_id = await create(replica, ana)
    headers = {**ana, PROVIDER_KEY_HEADER: "openai=sk-ana-1, anthropic=sk-ana-2"}
    turn = await call(replica, "POST", session_id, "/messages", {"content": "hi"}, headers)
    assert turn.status_code == 200 and "sk-ana" not in turn.text
    context = recorder.contexts[-1]
    assert context is not None
    assert {k: v.get_secret_value() for k, v in context.request_keys.items()} == {
        "openai": "sk-ana-1",
        "anthropic": "sk-ana-2",
    }
    bad = await call(
        replica,
        "POST",
        session_id,
        "/messages",
        {"content": "hi"},
        {**ana, PROVIDER_KEY_HEADER: "sk-no-provider"},
    )
    assert bad.status_code == 422 and "sk-no-provider" not in bad.text

    open_replica = await start_replica(
        exits,
        stack.settings(
            auth={"enabled": False}, secrets={"key_chain": {"allow_request_keys": True}}
        ),
        agent=recorder,
        name="open",
    )
    open_session = await create(open_replica, {}, user_id="ana")
    anonymous = await call(
        open_replica,
        "POST",
        open_session,
        "/messages",
        {"content": "hi"},
        {PROVIDER_KEY_HEADER: "openai=sk-anon"},
    )
    assert anonymous.status_code == 200
    assert recorder.contexts[-1] is not None
    assert dict(recorder.contexts[-1].request_keys) == {}


def test_parse_request_keys_refuses_malformed_entries_without_echoing_them() -> None:
    """Each entry is ``<provider>=<key>``; a bad or repeated one is a 422 naming the
    position or provider, never the key."""
    keys = parse_request_keys(" openai = sk-1 ,anthropic=sk-2")
    assert {k: v.get_secret_value() for k, v in keys.items()} == {
        "openai": "sk-1",
        "anthropic": "sk-2",
    }
    for raw in ("sk-secret", "openai=", "=sk-secret", "openai=sk-secret,openai=sk-secret"):
        with pytest.raises(InvalidRequest) as caught:
            parse_request_keys(raw)
        assert "sk-secret" not in caught.value.message


# -- auth off ------------------------------------------------------------------------------


async def test_with_auth_off_the_body_user_id_is_trusted_as_before(
    stack: AuthStack, exits: AsyncExitStack
) -> None:
    """Auth off: no credentials needed, the body's user_id is the owner (422 without
    one), and every caller may read every session."""
    replica = await start_replica(exits, stack.settings(auth={"enabled": False}))
    missing = await replica.client.post("/v1/sessions", json={})
    assert missing.status_code == 422
    session_id = await create(replica, {}, user_id="ana")
    read = await replica.client.get(f"/v1/sessions/{session_id}")
    assert read.status_code == 200
    assert (read.json()["user_id"], read.json()["organization"]) == ("ana", None)
