"""One trace across the MCP hop: a turn's ``execute_tool`` span on the replica is the
parent of the tool server's own ``execute_tool`` SERVER span, over a real socket, with
each app on its own tracer provider (two apps in one process, spans never mixed); the
tool server's line for the call carries that trace; a failed call marks both sides;
captured arguments and results are redacted on both sides."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench._common import agent_app, scripted_gateway
from mcp.server._otel import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from agentkeel.config.layers import load_settings
from agentkeel.config.tracing import TracingSettings
from agentkeel.models.scripted import CallTools, Say, StepLike
from agentkeel.resilience.clock import ManualClock
from agentkeel.telemetry.tracing import Tracing, build_tracing
from agentkeel.tools.local import LocalToolSet
from agentkeel.tools.server import create_app, create_mcp_server
from tests.log_lines import json_lines, parsed
from tests.tools.credentials import AUDIENCE, TOKEN, Credentials, server_settings, write_credentials
from tests.tools.servers import live_server


def traced(service: str, *, capture_content: bool = False) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing = build_tracing(
        TracingSettings(capture_content=capture_content),
        service=service,
        processor=SimpleSpanProcessor(exporter),
    )
    return tracing, exporter


@dataclass
class Hop:
    agent: httpx.AsyncClient
    agent_spans: InMemorySpanExporter
    tool_spans: InMemorySpanExporter

    async def turn(self, content: str, **headers: str) -> httpx.Response:
        created = await self.agent.post("/v1/sessions", json={"user_id": "alice"})
        session_id = created.json()["session_id"]
        return await self.agent.post(
            f"/v1/sessions/{session_id}/messages", json={"content": content}, headers=headers
        )


def failing_tool(text: str) -> str:
    """Always fails.

    Args:
        text: Anything.
    """
    raise RuntimeError("the backend is down")


def echo_tool(text: str) -> str:
    """Says the text back.

    Args:
        text: Anything.
    """
    return f"you said {text}"


@pytest.fixture
async def hop_factory(tmp_path: Path) -> AsyncIterator[Any]:
    credentials: Credentials = write_credentials(tmp_path / "credentials")
    (credentials.directory / "tools_agent_token").write_text(TOKEN + "\n")
    async with AsyncExitStack() as stack:

        async def start(script: Sequence[StepLike], *, capture_content: bool = False) -> Hop:
            tool_tracing, tool_spans = traced("tools", capture_content=capture_content)
            agent_tracing, agent_spans = traced("agent", capture_content=capture_content)
            stack.callback(tool_tracing.shutdown)
            stack.callback(agent_tracing.shutdown)
            tool_app = create_app(
                server_settings(credentials),
                functions=[failing_tool, echo_tool],
                tracing=tool_tracing,
            )
            tools = await stack.enter_async_context(live_server(tool_app))
            settings = load_settings(
                layers=[],
                overrides={
                    "secrets_dir": None,
                    "data_dir": str(tmp_path),
                    "models": [{"name": "scripted", "kind": "scripted"}],
                    "agent": {
                        "tools": ["remote_calculator", "remote_failing_tool", "remote_echo_tool"]
                    },
                    "identity": {"signing_key_file": str(credentials.signing_key_file)},
                    "tools": {
                        "servers": [
                            {
                                "name": "tools",
                                "url": f"{tools.url}/mcp",
                                "prefix": "remote_",
                                "token_file": str(credentials.directory / "tools_agent_token"),
                                "audience": AUDIENCE,
                            }
                        ]
                    },
                },
            ).settings
            clock = ManualClock()
            registry = CollectorRegistry()
            gateway = scripted_gateway(
                script, settings=settings, clock=clock, registry=registry, tracing=agent_tracing
            )
            app = await stack.enter_async_context(
                agent_app(settings, gateway=gateway, registry=registry, tracing=agent_tracing)
            )
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent")
            )
            return Hop(client, agent_spans, tool_spans)

        yield start


def ids(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def named(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


async def test_the_tool_servers_span_is_a_child_of_the_replicas_across_the_hop(
    hop_factory: Any,
) -> None:
    """The replica's execute_tool (INTERNAL, under the turn) sends traceparent; the tool
    server's execute_tool (SERVER) is its child in the same trace, with the correlation
    id; the server's tool_call line carries that trace and span."""
    hop: Hop = await hop_factory(
        [CallTools.one("remote_calculator", expression="6 * 7"), Say("42")]
    )
    with json_lines("tools", "agentkeel.tools.server") as stream:
        response = await hop.turn("6 * 7?", **{"X-Correlation-ID": "corr-hop-1"})
    assert response.status_code == 200, response.text
    assert [c["status"] for c in response.json()["tool_calls"]] == ["success"]

    turn = named(hop.agent_spans, "invoke_agent default")
    replica = named(hop.agent_spans, "execute_tool remote_calculator")
    assert replica.kind == SpanKind.INTERNAL
    assert replica.parent is not None
    assert format(replica.parent.span_id, "016x") == ids(turn)[1]
    server = named(hop.tool_spans, "execute_tool calculator")
    assert server.kind == SpanKind.SERVER
    assert ids(server)[0] == ids(replica)[0] == ids(turn)[0]
    assert server.parent is not None and server.parent.is_remote
    assert format(server.parent.span_id, "016x") == ids(replica)[1]
    attrs = dict(server.attributes or {})
    assert attrs["gen_ai.operation.name"] == "execute_tool"
    assert (attrs["gen_ai.tool.name"], attrs["gen_ai.tool.type"]) == ("calculator", "function")
    assert (attrs["keel.correlation_id"], attrs["keel.tool.status"]) == ("corr-hop-1", "success")
    # Each app's spans went to its own provider only.
    assert all(
        s.resource.attributes["service.name"] == "tools"
        for s in hop.tool_spans.get_finished_spans()
    )
    assert all(
        s.resource.attributes["service.name"] == "agent"
        for s in hop.agent_spans.get_finished_spans()
    )

    lines = parsed(stream)
    (call,) = [line for line in lines if line.get("event") == "tool_call"]
    assert (call["trace_id"], call["span_id"]) == ids(server)
    assert (call["category"], call["tool"], call["status"]) == (
        "tool_call",
        "calculator",
        "success",
    )
    assert call["correlation_id"] == "corr-hop-1"


async def test_a_failing_tool_marks_both_sides(hop_factory: Any) -> None:
    """A tool that raises: the server span is ERROR (error.type failure), so is the
    replica's, and the server's line for it is a WARNING (category error)."""
    hop: Hop = await hop_factory(
        [CallTools.one("remote_failing_tool", text="x"), Say("It failed.")]
    )
    with json_lines("tools", "agentkeel.tools.server") as stream:
        response = await hop.turn("try it")
    assert response.status_code == 200, response.text
    assert [c["status"] for c in response.json()["tool_calls"]] == ["failure"]
    server = named(hop.tool_spans, "execute_tool failing_tool")
    replica = named(hop.agent_spans, "execute_tool remote_failing_tool")
    for span in (server, replica):
        assert span.status.status_code == StatusCode.ERROR
        assert dict(span.attributes or {})["error.type"] == "failure"
    lines = parsed(stream)
    (call,) = [line for line in lines if line.get("event") == "tool_call"]
    assert (call["level"], call["category"], call["status"]) == ("warning", "error", "failure")


SECRET = "ghp_" + "t" * 36


async def test_captured_arguments_and_results_are_redacted_on_both_sides(
    hop_factory: Any,
) -> None:
    """With capture_content, the replica's and the tool server's execute_tool spans hold
    the call's arguments and result with the secret replaced (each process's redactor),
    the arguments still JSON."""
    hop: Hop = await hop_factory(
        [CallTools.one("remote_echo_tool", text=SECRET), Say("done")], capture_content=True
    )
    response = await hop.turn("echo it")
    assert response.status_code == 200, response.text
    for span in (
        named(hop.agent_spans, "execute_tool remote_echo_tool"),
        named(hop.tool_spans, "execute_tool echo_tool"),
    ):
        attrs = dict(span.attributes or {})
        arguments = json.loads(str(attrs["gen_ai.tool.call.arguments"]))
        assert arguments == {"text": "[REDACTED:github_token]"}, span.name
        assert attrs["gen_ai.tool.call.result"] == "you said [REDACTED:github_token]", span.name


def test_the_sdk_server_span_is_left_out() -> None:
    """keel's execute_tool is the call's one server span: the MCP SDK's own server span
    middleware is not installed on the tool server (it would make a second, sibling one
    once a global provider is set)."""
    server = create_mcp_server(LocalToolSet([failing_tool]))
    assert not [m for m in server.middleware if isinstance(m, OpenTelemetryMiddleware)]
