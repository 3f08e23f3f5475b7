"""What a replica sends to MCP servers: its bearer token, and a caller assertion signed
for each call only to servers with an audience; and an agent turn that reaches the
tool server's memory tools as the session's user."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentkeel.config.identity import IdentitySettings
from agentkeel.config.layers import load_settings
from agentkeel.config.tools import ToolsSettings
from agentkeel.errors import ConfigError, SecretError
from agentkeel.models.types import ModelRequest, ModelResponse, TokenCallback, ToolCall, Usage
from agentkeel.runtime.app import create_app as create_agent_app
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.telemetry.metrics import ToolMetrics
from agentkeel.tools.client import build_tools_client
from agentkeel.tools.server import CALLER_META_KEY, create_app
from agentkeel.tools.types import ToolContext
from tests.tools.credentials import AUDIENCE, TOKEN, Credentials, server_settings, write_credentials
from tests.tools.fakes import FakeMemory
from tests.tools.servers import LiveServer, live_server

CONTEXT = ToolContext(agent_id="support", session_id="s1", user_id="alice", turn=4)


class Recorder:
    """Wraps an ASGI app and keeps the headers and JSON body of every /mcp POST."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests: list[tuple[dict[str, str], Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append((headers, json.loads(body)))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def calls(self) -> list[tuple[dict[str, str], dict[str, Any]]]:
        return [(h, b) for h, b in self.requests if b.get("method") == "tools/call"]


@pytest.fixture
def credentials(tmp_path: Path) -> Credentials:
    creds = write_credentials(tmp_path / "credentials")
    (creds.directory / "tools_agent_token").write_text(TOKEN + "\n")
    return creds


@pytest.fixture
async def recorded(credentials: Credentials) -> AsyncIterator[tuple[LiveServer, Recorder]]:
    app = create_app(server_settings(credentials, tools_modules=["tests.tools.sample_tools"]))
    recorder = Recorder(app)
    async with live_server(recorder) as server:
        yield server, recorder


def tools_settings(url: str, credentials: Credentials, **server: Any) -> ToolsSettings:
    return ToolsSettings(servers=[{"name": "tools", "url": url, **server}])


async def test_replica_sends_its_token_and_one_assertion_per_call(
    recorded: tuple[LiveServer, Recorder], credentials: Credentials
) -> None:
    """With token_file and audience, every request carries the bearer token and every
    tools/call a fresh assertion for that tool and caller, living a minute at most;
    whoami on the server sees the caller."""
    server, recorder = recorded
    client = build_tools_client(
        tools_settings(
            f"{server.url}/mcp",
            credentials,
            token_file=credentials.directory / "tools_agent_token",
            audience=AUDIENCE,
        ),
        local=None,
        metrics=ToolMetrics(CollectorRegistry()),
        identity=IdentitySettings(signing_key_file=credentials.signing_key_file),
        secrets=SecretResolver(),
    )
    try:
        first = await client.call("whoami", {}, context=CONTEXT)
        second = await client.call("calculator", {"expression": "1 + 2"}, context=CONTEXT)
    finally:
        await client.aclose()
    assert (first.status, first.content) == ("success", "support/alice")
    assert (second.status, second.content) == ("success", "3")
    assert recorder.requests
    assert {h["authorization"] for h, _ in recorder.requests} == {f"Bearer {TOKEN}"}
    tokens = [body["params"]["_meta"][CALLER_META_KEY] for _, body in recorder.calls()]
    assert len(tokens) == 2 and tokens[0] != tokens[1]
    claims = [jwt.decode(t, options={"verify_signature": False}) for t in tokens]
    assert [c["tool"] for c in claims] == ["whoami", "calculator"]
    for c in claims:
        assert (c["sub"], c["agent"], c["session"], c["turn"]) == ("alice", "support", "s1", 4)
        assert c["aud"] == AUDIENCE and 0 < c["exp"] - c["iat"] <= 60
    assert jwt.get_unverified_header(tokens[0])["alg"] == "EdDSA"


async def test_a_server_without_audience_gets_no_caller(
    recorded: tuple[LiveServer, Recorder], credentials: Credentials
) -> None:
    """A server listed without an audience (anyone's MCP server) gets no caller identity
    in _meta; its tools still work for calls that need none."""
    server, recorder = recorded
    client = build_tools_client(
        tools_settings(
            f"{server.url}/mcp", credentials, token_file=credentials.directory / "tools_agent_token"
        ),
        local=None,
        metrics=ToolMetrics(CollectorRegistry()),
    )
    try:
        result = await client.call("whoami", {}, context=CONTEXT)
    finally:
        await client.aclose()
    assert result.content == "anonymous/anonymous"
    [(_, body)] = recorder.calls()
    assert CALLER_META_KEY not in (body["params"].get("_meta") or {})


def test_audience_without_a_signing_key_stops_the_replica(
    tmp_path: Path, credentials: Credentials
) -> None:
    """A server with an audience but no signing key, or a token file that is missing,
    is refused when the client is built, naming the setting."""
    with pytest.raises(ConfigError, match=r"identity\.signing_key_file"):
        build_tools_client(
            tools_settings("http://127.0.0.1:9/mcp", credentials, audience=AUDIENCE),
            local=None,
            metrics=ToolMetrics(CollectorRegistry()),
            identity=IdentitySettings(),
            secrets=SecretResolver(secrets_dir=tmp_path / "empty"),
        )
    with pytest.raises(SecretError, match="does not exist"):
        build_tools_client(
            tools_settings("http://127.0.0.1:9/mcp", credentials, token_file=tmp_path / "nope"),
            local=None,
            metrics=ToolMetrics(CollectorRegistry()),
        )


class MemoryModel:
    """Asks for memory_store, then memory_search, then answers with the last result."""

    context_window = 8192

    async def complete(
        self, request: ModelRequest, *, on_token: TokenCallback | None = None
    ) -> ModelResponse:
        steps = sum(1 for m in request.messages if m.role == "assistant" and m.tool_calls)
        plan = [
            ("memory_store", {"content": "prefers tea"}),
            ("memory_search", {"query": "tea"}),
        ]
        if request.tools and steps < len(plan):
            name, arguments = plan[steps]
            call = ToolCall(id=f"c{steps}", name=name, arguments=arguments)
            return ModelResponse(content="", tool_calls=(call,), usage=Usage(1, 1))
        results = [m.content for m in request.messages if m.role == "tool"]
        return ModelResponse(content=f"Tool said: {results[-1]}", usage=Usage(1, 1))


async def test_an_agent_turn_reaches_memory_as_its_user(
    tmp_path: Path, credentials: Credentials
) -> None:
    """Through the agent server, a turn of alice's session stores and finds a memory in
    agent:default/user:alice on the tool server, signed by the replica's key."""
    memory = FakeMemory()
    tool_app = create_app(server_settings(credentials), memory_client=memory)
    async with AsyncExitStack() as stack:
        tools = await stack.enter_async_context(live_server(tool_app))
        settings = load_settings(
            layers=[],
            overrides={
                "secrets_dir": None,
                "data_dir": str(tmp_path),
                "models": [{"name": "scripted", "kind": "scripted"}],
                "agent": {"tools": ["memory_store", "memory_search"]},
                "identity": {"signing_key_file": str(credentials.signing_key_file)},
                "tools": {
                    "servers": [
                        {
                            "name": "tools",
                            "url": f"{tools.url}/mcp",
                            "token_file": str(credentials.directory / "tools_agent_token"),
                            "audience": AUDIENCE,
                        }
                    ]
                },
            },
        ).settings
        app = create_agent_app(settings, gateway=MemoryModel(), registry=CollectorRegistry())
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent")
        )
        created = await client.post("/v1/sessions", json={"user_id": "alice"})
        session_id = created.json()["session_id"]
        response = await client.post(
            f"/v1/sessions/{session_id}/messages", json={"content": "remember tea"}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["status"] for c in body["tool_calls"]] == ["success", "success"]
    assert json.loads(body["reply"].removeprefix("Tool said: ")) == [{"content": "prefers tea"}]
    assert memory.items == {"agent:default/user:alice": ["prefers tea"]}


async def test_turns_of_one_user_id_in_two_organizations_reach_separate_namespaces(
    tmp_path: Path, credentials: Credentials
) -> None:
    """Sessions of bob in acme and of bob in globex: the replica signs each tool call with
    the session's organization, so each turn stores and finds in its own organization's
    namespace and never sees the other's memory."""
    memory = FakeMemory()
    tool_app = create_app(server_settings(credentials), memory_client=memory)
    async with AsyncExitStack() as stack:
        tools = await stack.enter_async_context(live_server(tool_app))
        app = create_agent_app(
            _memory_agent_settings(tmp_path, credentials, tools.url),
            gateway=MemoryModel(),
            registry=CollectorRegistry(),
        )
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent")
        )
        replies = {}
        for org in ("acme", "globex"):
            session = await app.state.service.create_session("bob", organization=org)
            response = await client.post(
                f"/v1/sessions/{session.session_id}/messages", json={"content": "remember"}
            )
            assert response.status_code == 200, response.text
            replies[org] = json.loads(response.json()["reply"].removeprefix("Tool said: "))
    assert replies == {"acme": [{"content": "prefers tea"}], "globex": [{"content": "prefers tea"}]}
    assert memory.items == {
        "agent:default/org:acme/user:bob": ["prefers tea"],
        "agent:default/org:globex/user:bob": ["prefers tea"],
    }


def _memory_agent_settings(tmp_path: Path, credentials: Credentials, tools_url: str) -> Any:
    """An agent using the memory tools of the tool server at ``tools_url``, signing callers."""
    return load_settings(
        layers=[],
        overrides={
            "secrets_dir": None,
            "data_dir": str(tmp_path),
            "models": [{"name": "scripted", "kind": "scripted"}],
            "agent": {"tools": ["memory_store", "memory_search"]},
            "identity": {"signing_key_file": str(credentials.signing_key_file)},
            "tools": {
                "servers": [
                    {
                        "name": "tools",
                        "url": f"{tools_url}/mcp",
                        "token_file": str(credentials.directory / "tools_agent_token"),
                        "audience": AUDIENCE,
                    }
                ]
            },
        },
    ).settings
