"""The tool server: the SDK's own MCP client over real HTTP, probes, metrics, caller context."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, cast

import httpx
import httpx2
import mcp_types as mcp
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from agentkeel.config.settings import KeelSettings
from agentkeel.errors import ConfigError
from agentkeel.telemetry.logging import JsonFormatter
from agentkeel.tools.discovery import module_tools
from agentkeel.tools.server import CALLER_META_KEY, create_app
from tests.tools.servers import live_server


class FakeMemory:
    """Implements the memory tools' backend in memory, keyed by namespace."""

    def __init__(self) -> None:
        self.items: dict[str, list[str]] = {}

    async def search(self, namespace: str, query: str, *, limit: int) -> Sequence[Any]:
        found = [c for c in self.items.get(namespace, []) if query.lower() in c.lower()]
        return [{"content": c} for c in found[:limit]]

    async def store(self, namespace: str, content: str, *, tags: Sequence[str]) -> Any:
        self.items.setdefault(namespace, []).append(content)
        return {"id": f"m{len(self.items[namespace])}"}


def settings(**server: Any) -> KeelSettings:
    return KeelSettings(secrets_dir=None, tools={"server": server})


def text(result: mcp.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, mcp.TextContent)
    return block.text


async def test_sdk_client_lists_and_calls_our_tools_over_http() -> None:
    """The SDK's streamable HTTP client and ClientSession list our tools with their
    schemas and call them; a tool error comes back as is_error, not a protocol error."""
    app = create_app(settings(tools_modules=["tests.tools.sample_tools"]))
    async with (
        live_server(app) as server,
        streamable_http_client(f"{server.url}/mcp") as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        listed = await session.list_tools()
        tools = {tool.name: tool for tool in listed.tools}
        assert set(tools) == {"calculator", "current_time", "http_get", "shout", "whoami"}
        assert tools["shout"].description == "Repeat text in capitals."
        assert tools["shout"].input_schema["required"] == ["text"]
        assert "context" not in tools["whoami"].input_schema["properties"]
        ok = await session.call_tool("calculator", {"expression": "6 * 7"})
        assert (ok.is_error, text(ok)) == (False, "42")
        shout = await session.call_tool("shout", {"text": "hi", "times": 2})
        assert text(shout) == "HI HI"
        bad = await session.call_tool("calculator", {"expression": "1 / 0"})
        assert bad.is_error and "division by zero" in text(bad)


async def test_probes_and_metrics() -> None:
    """/health and /ready answer, and /metrics counts calls by tool and status."""
    app = create_app(settings())
    async with (
        live_server(app) as server,
        httpx.AsyncClient(base_url=server.url) as http,
        streamable_http_client(f"{server.url}/mcp") as (read, write),
        ClientSession(read, write) as session,
    ):
        assert (await http.get("/health")).json()["status"] == "ok"
        ready = await http.get("/ready")
        assert ready.status_code == 200 and "calculator" in ready.json()["tools"]
        await session.initialize()
        await session.call_tool("calculator", {"expression": "1+1"})
        await session.call_tool("nope", {})
        metrics = (await http.get("/metrics")).text
    assert 'agent_tool_calls_total{status="success",tool="calculator"} 1.0' in metrics
    assert 'agent_tool_calls_total{status="rejected",tool="unknown"} 1.0' in metrics


async def test_memory_tools_use_the_callers_namespace_only() -> None:
    """memory_store/memory_search work in agent:<id>/user:<id> from the caller's _meta;
    a namespace in the arguments is refused and an anonymous caller gets a failure."""
    memory = FakeMemory()
    app = create_app(settings(), memory_client=memory)
    alice = cast(
        mcp.RequestParamsMeta,
        {CALLER_META_KEY: {"agent_id": "support", "user_id": "alice", "session_id": "s1"}},
    )
    bob = cast(
        mcp.RequestParamsMeta,
        {CALLER_META_KEY: {"agent_id": "support", "user_id": "bob", "session_id": "s2"}},
    )
    async with (
        live_server(app) as server,
        streamable_http_client(f"{server.url}/mcp") as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        stored = await session.call_tool("memory_store", {"content": "likes tea"}, meta=alice)
        assert not stored.is_error, text(stored)
        found = await session.call_tool("memory_search", {"query": "tea"}, meta=alice)
        assert json.loads(text(found)) == [{"content": "likes tea"}]
        other = await session.call_tool("memory_search", {"query": "tea"}, meta=bob)
        assert text(other) == "no memories matched"
        sneaky = await session.call_tool(
            "memory_search", {"query": "tea", "namespace": "agent:support/user:alice"}, meta=bob
        )
        assert sneaky.is_error and "namespace" in text(sneaky)
        anonymous = await session.call_tool("memory_search", {"query": "tea"})
        assert anonymous.is_error and "calling agent and user" in text(anonymous)
    assert list(memory.items) == ["agent:support/user:alice"]


async def test_call_logs_carry_the_callers_correlation_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server's log line for a call carries the X-Correlation-ID of the request."""
    app = create_app(settings())
    caplog.set_level(logging.INFO, logger="agentkeel.tools.server")

    http = httpx2.AsyncClient(headers={"X-Correlation-ID": "corr-123"})
    async with (
        live_server(app) as server,
        http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        await session.call_tool("calculator", {"expression": "2+2"})
    records = [r for r in caplog.records if r.getMessage().startswith("tool call calculator")]
    assert len(records) == 1
    line = json.loads(JsonFormatter(service="tools").format(records[0]))
    assert line["correlation_id"] == "corr-123"
    assert line["tool"] == "calculator" and line["status"] == "success"


def test_module_tools_are_the_public_functions_defined_there() -> None:
    """Private and imported names are skipped; a missing module is a ConfigError."""
    names = [f.__name__ for f in module_tools("tests.tools.sample_tools")]
    assert names == ["shout", "whoami"]
    with pytest.raises(ConfigError, match=r"Cannot import tool module 'no\.such\.module'"):
        module_tools("no.such.module")


def test_unknown_builtin_is_a_config_error() -> None:
    """A typo in tools.server.builtins stops the server before it listens."""
    with pytest.raises(ConfigError, match="unknown tool"):
        create_app(settings(builtins=["calculater"]))


async def test_a_tool_call_does_not_run_the_tool_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stateless tools/call looks up the called tool's schema directly; the SDK would
    otherwise run the whole tools/list handler on every call to check its headers."""
    app = create_app(settings())
    toolset = app.state.toolset
    listings: list[int] = []
    list_tools = toolset.list_tools

    async def counted() -> Any:
        listings.append(1)
        return await list_tools()

    monkeypatch.setattr(toolset, "list_tools", counted)
    async with live_server(app) as server, Client(f"{server.url}/mcp", cache=None) as client:
        assert client.session.protocol_version in MODERN_PROTOCOL_VERSIONS
        # The client may list the tools once for itself (output schemas).
        await client.call_tool("calculator", {"expression": "1 + 1"})
        before = len(listings)
        for n in range(3):
            result = await client.call_tool("calculator", {"expression": f"{n} + 1"})
            assert text(result) == str(n + 1)
        assert len(listings) == before
        await client.list_tools()
        assert len(listings) == before + 1
