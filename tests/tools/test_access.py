"""The tool server's door: bearer tokens on /mcp, tools per token, and callers that are
only what a signed assertion says, seen through the plain MCP SDK client."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import jwt
import mcp_types as mcp
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from agentkeel.errors import ConfigError
from agentkeel.identity import generate_key_pair
from agentkeel.resilience.clock import ManualClock
from agentkeel.tools.access import parse_tool_tokens
from agentkeel.tools.server import CALLER_META_KEY, create_app
from tests.tools.credentials import (
    AUDIENCE,
    ISSUER,
    LIMITED,
    TOKEN,
    Credentials,
    assertion_in,
    bearer,
    caller,
    server_settings,
    write_credentials,
)
from tests.tools.fakes import FakeMemory
from tests.tools.servers import LiveServer, live_server

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "curl", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@pytest.fixture
def credentials(tmp_path: Path) -> Credentials:
    return write_credentials(tmp_path / "credentials")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def memory() -> FakeMemory:
    return FakeMemory()


@pytest.fixture
async def server(
    credentials: Credentials, clock: ManualClock, memory: FakeMemory
) -> AsyncIterator[LiveServer]:
    app = create_app(
        server_settings(credentials, tools_modules=["tests.tools.sample_tools"]),
        memory_client=memory,
        clock=clock,
    )
    async with live_server(app) as running:
        yield running


def text(result: mcp.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, mcp.TextContent)
    return block.text


async def test_no_token_is_401_and_the_sdk_client_is_refused(server: LiveServer) -> None:
    """A plain MCP SDK client without a token cannot even initialize; over plain HTTP the
    answer is 401 with a JSON-RPC error naming the header, and a wrong token is 401 too."""
    with pytest.raises(BaseException) as refused:
        async with (
            streamable_http_client(f"{server.url}/mcp") as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
    error = _leaf(refused.value)
    assert isinstance(error, MCPError) and "Authorization: Bearer" in error.message
    async with httpx.AsyncClient(base_url=server.url) as http:
        missing = await http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        wrong = await http.post(
            "/mcp",
            json=INITIALIZE,
            headers={**MCP_HEADERS, "Authorization": "Bearer not-a-token-of-this-server"},
        )
        listing = await http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            headers=MCP_HEADERS,
        )
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["error"]["data"]["code"] == "token_missing"
    assert wrong.status_code == 401
    assert wrong.json()["error"]["data"]["code"] == "token_invalid"
    assert listing.status_code == 401


def _leaf(exc: BaseException) -> BaseException:
    """The first error inside the SDK's exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def test_a_token_lists_and_calls_only_its_tools(server: LiveServer) -> None:
    """A token granted calculator and whoami sees only those in tools/list; calling
    memory_search with it is 403 naming the token and the tool."""
    async with (
        bearer(LIMITED) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        listed = await session.list_tools()
        assert {tool.name for tool in listed.tools} == {"calculator", "whoami"}
        ok = await session.call_tool("calculator", {"expression": "2 * 21"})
        assert text(ok) == "42"
        with pytest.raises(
            MCPError, match="token 'notebook' may not call the tool 'memory_search'"
        ):
            await session.call_tool("memory_search", {"query": "tea"})
    async with httpx.AsyncClient(base_url=server.url) as plain:
        forbidden = await plain.post(
            "/mcp",
            json={
                "jsonrpc": "2.0",
                "id": 7,
                "method": "tools/call",
                "params": {"name": "memory_store", "arguments": {"content": "x"}},
            },
            headers={**MCP_HEADERS, "Authorization": f"Bearer {LIMITED}"},
        )
    assert forbidden.status_code == 403
    assert forbidden.json()["id"] == 7
    assert forbidden.json()["error"]["data"]["code"] == "tool_forbidden"


async def test_outside_client_with_a_token_uses_tools_that_need_no_caller(
    server: LiveServer, memory: FakeMemory
) -> None:
    """Without an assertion the caller is anonymous: calculator works, whoami says
    anonymous, and the memory tools refuse (touching nothing)."""
    async with (
        bearer(TOKEN) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert text(await session.call_tool("calculator", {"expression": "1 + 1"})) == "2"
        assert text(await session.call_tool("whoami", {})) == "anonymous/anonymous"
        refused = await session.call_tool("memory_search", {"query": "tea"})
        assert refused.is_error and "calling agent and user" in text(refused)
    assert memory.items == {}


async def test_signed_callers_reach_their_own_namespace_only(
    server: LiveServer, credentials: Credentials, clock: ManualClock, memory: FakeMemory
) -> None:
    """A replica's assertion for alice stores and finds in alice's namespace; bob's
    assertion does not see it, and a namespace argument is refused."""
    key, now = credentials.key, clock.time()
    async with (
        bearer(TOKEN) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        stored = await session.call_tool(
            "memory_store",
            {"content": "likes tea"},
            meta=caller(key, tool="memory_store", user="alice", now=now),
        )
        assert not stored.is_error, text(stored)
        found = await session.call_tool(
            "memory_search",
            {"query": "tea"},
            meta=caller(key, tool="memory_search", user="alice", now=now),
        )
        assert json.loads(text(found)) == [{"content": "likes tea"}]
        other = await session.call_tool(
            "memory_search",
            {"query": "tea"},
            meta=caller(key, tool="memory_search", user="bob", now=now),
        )
        assert text(other) == "no memories matched"
        sneaky = await session.call_tool(
            "memory_search",
            {"query": "tea", "namespace": "agent:support/user:alice"},
            meta=caller(key, tool="memory_search", user="bob", now=now),
        )
        assert sneaky.is_error and "namespace" in text(sneaky)
        who = await session.call_tool(
            "whoami", {}, meta=caller(key, tool="whoami", user="carol", agent="sales", now=now)
        )
        assert text(who) == "sales/carol"
    assert memory.items == {"agent:support/user:alice": ["likes tea"]}


async def test_the_same_user_id_of_two_organizations_gets_two_namespaces(
    server: LiveServer, credentials: Credentials, clock: ManualClock, memory: FakeMemory
) -> None:
    """bob of acme and bob of globex (signed with the org claim) store in separate
    namespaces and never find each other's memories; bob without an organization keeps
    the plain namespace."""
    key, now = credentials.key, clock.time()

    def as_bob(tool: str, organization: str | None) -> mcp.RequestParamsMeta:
        return caller(key, tool=tool, user="bob", organization=organization, now=now)

    async with (
        bearer(TOKEN) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        for org in ("acme", "globex", None):
            stored = await session.call_tool(
                "memory_store", {"content": f"tea for {org}"}, meta=as_bob("memory_store", org)
            )
            assert not stored.is_error, text(stored)
        found = await session.call_tool(
            "memory_search", {"query": "tea"}, meta=as_bob("memory_search", "acme")
        )
    assert json.loads(text(found)) == [{"content": "tea for acme"}]
    assert memory.items == {
        "agent:support/org:acme/user:bob": ["tea for acme"],
        "agent:support/org:globex/user:bob": ["tea for globex"],
        "agent:support/user:bob": ["tea for None"],
    }


def _forgeries(credentials: Credentials, now: float) -> dict[str, Any]:
    """Every way a caller might pose as bob, by name."""
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "bob",
        "agent": "support",
        "session": "s9",
        "turn": 1,
        "tool": "memory_store",
        "iat": int(now),
        "exp": int(now) + 30,
        "jti": "forged-1",
    }
    other_key = generate_key_pair()
    return {
        "plain dict": {"agent_id": "support", "user_id": "bob", "session_id": "s9"},
        "another key": jwt.encode(claims, other_key.private_pem, algorithm="EdDSA"),
        "alg none": jwt.encode(claims, "", algorithm="none"),
        "hmac with the public key": _hs256(claims, credentials.public_pem.encode()),
        "expired": assertion_in(
            caller(credentials.key, tool="memory_store", user="bob", now=now - 120)
        ),
        "another tool": assertion_in(
            caller(credentials.key, tool="calculator", user="bob", now=now)
        ),
        "another audience": assertion_in(
            caller(credentials.key, tool="memory_store", user="bob", now=now, audience="memory")
        ),
        "garbage": "not.a.jwt",
    }


def _hs256(claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 JWT keyed with ``secret`` (PyJWT refuses to make one with a PEM key)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = ".".join(
        part(json.dumps(value).encode()) for value in ({"alg": "HS256", "typ": "JWT"}, claims)
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(signature)}"


async def test_forged_callers_are_refused_and_touch_no_memory(
    server: LiveServer, credentials: Credentials, clock: ManualClock, memory: FakeMemory
) -> None:
    """With a valid token, a caller that is a plain dict, signed by another key, alg
    none, HMAC-signed with the public key, expired, made for another tool or audience,
    or not a JWT at all is refused with an MCP error saying why; bob's namespace stays
    empty."""
    forgeries = _forgeries(credentials, clock.time())
    reasons: dict[str, str] = {}
    async with (
        bearer(TOKEN) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        for name, forged in forgeries.items():
            meta = cast(mcp.RequestParamsMeta, {CALLER_META_KEY: forged})
            with pytest.raises(MCPError) as refused:
                await session.call_tool("memory_store", {"content": "bob owes 1M"}, meta=meta)
            reasons[name] = refused.value.message
    assert memory.items == {}
    assert "plain identity fields are not accepted" in reasons["plain dict"]
    assert "signature does not verify" in reasons["another key"]
    assert "not signed with EdDSA" in reasons["alg none"]
    assert "not signed with EdDSA" in reasons["hmac with the public key"]
    assert "expired" in reasons["expired"]
    assert "made for the tool 'calculator', not 'memory_store'" in reasons["another tool"]
    assert "not made for this service" in reasons["another audience"]
    assert "not a well-formed" in reasons["garbage"]


async def test_an_assertion_works_once(
    server: LiveServer, credentials: Credentials, clock: ManualClock, memory: FakeMemory
) -> None:
    """Replaying a replica's assertion, even for the same tool, is refused."""
    meta = caller(credentials.key, tool="memory_store", user="alice", now=clock.time())
    async with (
        bearer(TOKEN) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        first = await session.call_tool("memory_store", {"content": "one"}, meta=meta)
        assert not first.is_error
        with pytest.raises(MCPError, match="already used"):
            await session.call_tool("memory_store", {"content": "two"}, meta=meta)
    assert memory.items == {"agent:support/user:alice": ["one"]}


async def test_an_assertion_expires_on_the_servers_clock(
    server: LiveServer, credentials: Credentials, clock: ManualClock
) -> None:
    """An assertion good now is refused once the clock passes its expiry and leeway."""
    meta = caller(credentials.key, tool="whoami", user="alice", now=clock.time(), ttl_s=10)
    clock.advance(16)
    async with (
        bearer(TOKEN) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        with pytest.raises(MCPError, match="expired"):
            await session.call_tool("whoami", {}, meta=meta)


async def test_without_a_public_key_assertions_are_refused(credentials: Credentials) -> None:
    """A server with tokens but no caller public key refuses any assertion, saying which
    setting to set, and still serves anonymous calls."""
    settings = server_settings(credentials)
    settings = settings.model_copy(
        update={"identity": settings.identity.model_copy(update={"public_key_file": None})}
    )
    async with (
        live_server(create_app(settings)) as server,
        bearer(TOKEN) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert text(await session.call_tool("calculator", {"expression": "3"})) == "3"
        with pytest.raises(MCPError, match=r"identity\.public_key_file"):
            await session.call_tool(
                "calculator",
                {"expression": "3"},
                meta=caller(credentials.key, tool="calculator", user="alice"),
            )


async def test_without_tokens_every_request_is_refused(tmp_path: Path) -> None:
    """A tool server with no tokens file refuses /mcp with 401 saying where the file
    goes; its probes still answer."""
    app = create_app(server_settings(None, tokens_file=str(tmp_path / "missing.yaml")))
    async with live_server(app) as server, httpx.AsyncClient(base_url=server.url) as http:
        refused = await http.post(
            "/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"}
        )
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/ready")).status_code == 200
    assert refused.status_code == 401
    error = refused.json()["error"]
    assert error["data"]["code"] == "tokens_not_configured"
    assert "missing.yaml" in error["message"]


def test_a_broken_tokens_file_stops_the_server(tmp_path: Path) -> None:
    """A tokens file with a short token or an unknown field is a ConfigError at startup."""
    bad = tmp_path / "tokens.yaml"
    bad.write_text("tokens:\n  short: {tools: ['*']}\n")
    with pytest.raises(ConfigError, match="shorter than 16"):
        create_app(server_settings(None, tokens_file=str(bad)))
    with pytest.raises(ConfigError, match="grant of token 'x'"):
        parse_tool_tokens('{"' + "t" * 20 + '": {"name": "x", "tool": ["*"]}}', source="f")


async def test_tokens_keys_and_assertions_never_reach_logs_or_errors(
    credentials: Credentials, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Across refused and accepted calls, at DEBUG on every logger, neither the bearer
    tokens, the private or public key, nor any assertion appears in a log record or in
    what the client is told."""
    caplog.set_level(logging.DEBUG)
    # As configure_logging sets it: the SDK's DEBUG lines repeat every message it sends.
    caplog.set_level(logging.INFO, logger="mcp")
    memory = FakeMemory()
    app = create_app(server_settings(credentials), memory_client=memory, clock=clock)
    good = caller(credentials.key, tool="memory_store", user="alice", now=clock.time())
    expired = caller(credentials.key, tool="memory_store", user="bob", now=clock.time() - 300)
    told: list[str] = []
    async with live_server(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as plain:
            for token in ("wrong-token-" + "w" * 20, LIMITED):
                response = await plain.post(
                    "/mcp",
                    json={
                        "jsonrpc": "2.0",
                        "id": 3,
                        "method": "tools/call",
                        "params": {"name": "memory_store", "arguments": {"content": "x"}},
                    },
                    headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"},
                )
                told.append(response.text)
        async with (
            bearer(TOKEN) as http,
            streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            ok = await session.call_tool("memory_store", {"content": "tea"}, meta=good)
            told.append(text(ok))
            for meta in (expired, good):
                with pytest.raises(MCPError) as refused:
                    await session.call_tool("memory_store", {"content": "x"}, meta=meta)
                told.append(refused.value.message)
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    secrets = [
        TOKEN,
        LIMITED,
        credentials.private_pem.splitlines()[1],
        credentials.public_pem.splitlines()[1],
        assertion_in(good),
        assertion_in(expired),
    ]
    assert any("refused" in record.getMessage() for record in caplog.records)
    for secret in secrets:
        assert secret not in logged
        for answer in told:
            assert secret not in answer
