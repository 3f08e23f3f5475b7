"""The tool server: the SDK's own MCP client over real HTTP, probes, metrics, caller context."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import mcp_types as mcp
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from agentkeel.errors import ConfigError
from agentkeel.telemetry.logging import JsonFormatter
from agentkeel.tools.discovery import module_tools
from agentkeel.tools.server import create_app
from tests.tools.credentials import TOKEN, Credentials, bearer, server_settings, write_credentials
from tests.tools.servers import live_server


@pytest.fixture
def credentials(tmp_path: Path) -> Credentials:
    return write_credentials(tmp_path / "credentials")


def text(result: mcp.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, mcp.TextContent)
    return block.text


async def test_sdk_client_lists_and_calls_our_tools_over_http(credentials: Credentials) -> None:
    """The SDK's streamable HTTP client and ClientSession list our tools with their
    schemas and call them; a tool error comes back as is_error, not a protocol error."""
    app = create_app(server_settings(credentials, tools_modules=["tests.tools.sample_tools"]))
    async with (
        live_server(app) as server,
        bearer(TOKEN) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
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


async def test_probes_and_metrics(credentials: Credentials) -> None:
    """/health, /ready and /metrics answer without a token, and /metrics counts calls by
    tool and status."""
    app = create_app(server_settings(credentials))
    async with (
        live_server(app) as server,
        httpx.AsyncClient(base_url=server.url) as http,
        bearer(TOKEN) as mcp_http,
        streamable_http_client(f"{server.url}/mcp", http_client=mcp_http) as (read, write),
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


async def test_call_logs_carry_the_callers_correlation_id(
    caplog: pytest.LogCaptureFixture, credentials: Credentials
) -> None:
    """The server's log line for a call carries the X-Correlation-ID of the request."""
    app = create_app(server_settings(credentials))
    caplog.set_level(logging.INFO, logger="agentkeel.tools.server")

    http = bearer(TOKEN, **{"X-Correlation-ID": "corr-123"})
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
        create_app(server_settings(None, builtins=["calculater"]))


async def test_a_tool_call_does_not_run_the_tool_listing(
    monkeypatch: pytest.MonkeyPatch, credentials: Credentials
) -> None:
    """A stateless tools/call looks up the called tool's schema directly; the SDK would
    otherwise run the whole tools/list handler on every call to check its headers."""
    app = create_app(server_settings(credentials))
    toolset = app.state.toolset
    listings: list[int] = []
    list_tools = toolset.list_tools

    async def counted() -> Any:
        listings.append(1)
        return await list_tools()

    monkeypatch.setattr(toolset, "list_tools", counted)
    async with (
        live_server(app) as server,
        bearer(TOKEN) as http,
        Client(streamable_http_client(f"{server.url}/mcp", http_client=http), cache=None) as client,
    ):
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
