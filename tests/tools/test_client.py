"""The guarded tools client inside the agent runtime, against a third-party MCP server.

The MCP server here is written with the SDK's own ``MCPServer`` (not ours) and
served over real HTTP on loopback. The agent is the runtime's default
``ToolAgent`` over a scripted model; tests assert what the agent (the tool
results the model reads) and the user (the reply, the tool_calls) see. The last
test drives the client alone over a source that raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.server.mcpserver import MCPServer
from prometheus_client import CollectorRegistry

from agentkeel.config.layers import load_settings
from agentkeel.models.types import (
    ModelRequest,
    ModelResponse,
    TokenCallback,
    ToolCall,
    ToolSpec,
    Usage,
)
from agentkeel.resilience.clock import ManualClock
from agentkeel.runtime.app import create_app
from agentkeel.telemetry.metrics import ToolMetrics
from agentkeel.tools.client import GuardedToolsClient
from agentkeel.tools.composite import CompositeToolSet
from agentkeel.tools.types import ToolContext
from tests.tools.servers import LiveServer, free_port


class ThirdParty:
    """A weather MCP server written with the SDK; ``slow`` hangs until released.
    Each start builds a fresh app on the same port (an SDK app runs once)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls: list[str] = []
        self.port = free_port()
        self.live: LiveServer | None = None

    def build(self) -> Any:
        server = MCPServer("weather")

        @server.tool()
        def forecast(city: str) -> str:
            """The weather forecast for a city."""
            self.calls.append(city)
            return f"Sunny in {city}"

        @server.tool()
        async def slow(city: str) -> str:
            """A forecast that takes its time."""
            await self.release.wait()
            return f"Finally sunny in {city}"

        @server.tool()
        def big() -> str:
            """A very long answer."""
            return "x" * 5000

        return server.streamable_http_app(host="127.0.0.1")

    async def start(self) -> None:
        self.live = LiveServer(self.build(), port=self.port)
        await self.live.start()

    async def stop(self) -> None:
        if self.live is not None:
            await self.live.stop()
            self.live = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


class RelayModel:
    """A scripted model: it asks for ``calls`` in order (or ``forever``), then answers
    with the text of the last tool result, so the reply shows what the agent saw."""

    context_window = 8192

    def __init__(self, calls: Sequence[tuple[str, dict[str, Any]]], *, forever: bool = False):
        self.calls = list(calls)
        self.forever = forever
        self.requests: list[ModelRequest] = []

    async def complete(
        self, request: ModelRequest, *, on_token: TokenCallback | None = None
    ) -> ModelResponse:
        self.requests.append(request)
        step = sum(1 for m in request.messages if m.role == "assistant" and m.tool_calls)
        if request.tools and (self.forever or step < len(self.calls)):
            name, arguments = self.calls[0 if self.forever else step]
            call = ToolCall(id=f"c{len(self.requests)}", name=name, arguments=arguments)
            return ModelResponse(content="", tool_calls=(call,), usage=Usage(1, 1))
        tool_results = [m.content for m in request.messages if m.role == "tool"]
        last = tool_results[-1] if tool_results else "no tool"
        return ModelResponse(content=f"Tool said: {last}", usage=Usage(1, 1))


@dataclass
class Agent:
    client: httpx.AsyncClient
    registry: CollectorRegistry
    clock: ManualClock
    model: RelayModel

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def turn(self, content: str, session_id: str | None = None) -> tuple[str, dict[str, Any]]:
        if session_id is None:
            created = await self.client.post("/v1/sessions", json={"user_id": "alice"})
            session_id = str(created.json()["session_id"])
        response = await self.client.post(
            f"/v1/sessions/{session_id}/messages", json={"content": content}
        )
        assert response.status_code == 200, response.text
        return session_id, response.json()


AgentFactory = Callable[..., Awaitable[Agent]]


@pytest.fixture
async def weather() -> AsyncIterator[ThirdParty]:
    server = ThirdParty()
    await server.start()
    yield server
    server.release.set()
    await server.stop()


@pytest.fixture
async def agent(tmp_path: Path, weather: ThirdParty) -> AsyncIterator[AgentFactory]:
    async with AsyncExitStack() as stack:

        async def start(
            model: RelayModel,
            *,
            tools: dict[str, Any] | None = None,
            allow: Sequence[str] = ("calculator", "forecast", "slow", "big"),
            guardrails: dict[str, Any] | None = None,
        ) -> Agent:
            section = {"servers": [{"name": "weather", "url": weather.url}], **(tools or {})}
            settings = load_settings(
                layers=[],
                overrides={
                    "secrets_dir": None,
                    "data_dir": str(tmp_path),
                    "models": [{"name": "scripted", "kind": "scripted"}],
                    "agent": {"tools": list(allow)},
                    "tools": section,
                    "guardrails": guardrails or {},
                },
            ).settings
            clock = ManualClock()
            registry = CollectorRegistry()
            app = create_app(settings, gateway=model, clock=clock, registry=registry)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent")
            )
            return Agent(client, registry, clock, model)

        yield start


async def test_agent_uses_a_third_party_mcp_server(
    agent: AgentFactory, weather: ThirdParty
) -> None:
    """The agent discovers the server's tools, offers them to the model, calls one, and
    the result reaches the model and the reply; the call is counted as a success."""
    bot = await agent(RelayModel([("forecast", {"city": "Paris"})]))
    _, body = await bot.turn("weather in Paris?")
    assert body["reply"] == "Tool said: Sunny in Paris"
    assert [c["status"] for c in body["tool_calls"]] == ["success"]
    offered = {spec.name for spec in bot.model.requests[0].tools}
    assert offered == {"calculator", "forecast", "slow", "big"}
    assert weather.calls == ["Paris"]
    assert (
        bot.metric("agent_tool_calls_total", tool="forecast", status="success", version="v1") == 1.0
    )
    assert bot.metric("agent_tool_breaker_state", server="weather", tool="forecast") == 0.0


async def test_tool_outside_the_allowlist_is_rejected(agent: AgentFactory) -> None:
    """A server tool not in agent.tools is not offered, and a call to it is rejected
    with a message naming the tools the agent may use."""
    bot = await agent(RelayModel([("big", {})]), allow=["forecast"])
    _, body = await bot.turn("go")
    assert [c["status"] for c in body["tool_calls"]] == ["rejected"]
    assert "tool 'big' is not available to this agent" in body["reply"]
    assert "forecast" in body["reply"]


async def test_stopped_server_fails_fast_once_the_breaker_opens(
    agent: AgentFactory, weather: ThirdParty
) -> None:
    """With the server down, calls fail and the turn still replies 'unavailable'; after
    failure_threshold failures the breaker opens and calls fail without a connection."""
    bot = await agent(
        RelayModel([("forecast", {"city": "Oslo"})]),
        tools={"breaker": {"failure_threshold": 2, "open_s": 30}, "calls_per_minute": 0},
    )
    await bot.turn("warm up")  # discovery and one good call
    await weather.stop()
    replies = [(await bot.turn(f"try {n}"))[1] for n in range(3)]
    for body in replies:
        assert [c["status"] for c in body["tool_calls"]] == ["failure"]
        assert "unavailable" in body["reply"]
    assert "cannot be reached" in replies[0]["reply"]
    assert "failed recently" in replies[2]["reply"]  # the breaker answered, no connection
    assert bot.metric("agent_tool_breaker_state", server="weather", tool="forecast") == 2.0
    assert bot.metric("agent_tool_refusals_total", tool="forecast", reason="breaker_open") == 1.0
    assert (
        bot.metric("agent_tool_calls_total", tool="forecast", status="failure", version="v1") == 3.0
    )
    # The server comes back: after open_s the half-open probe succeeds and closes it.
    await weather.start()
    bot.clock.advance(31)
    _, body = await bot.turn("again")
    assert body["reply"] == "Tool said: Sunny in Oslo"
    assert bot.metric("agent_tool_breaker_state", server="weather", tool="forecast") == 0.0


async def test_hanging_tool_times_out_opens_the_breaker_then_recovers(
    agent: AgentFactory, weather: ThirdParty
) -> None:
    """A hanging tool times out (status timeout), the breaker opens after the configured
    failures, refuses while open, and a half-open probe closes it once the tool answers."""
    bot = await agent(
        RelayModel([("slow", {"city": "Rome"})]),
        tools={
            "call_timeout_s": 0.2,
            "breaker": {"failure_threshold": 2, "open_s": 30},
            "calls_per_minute": 0,
        },
    )
    first = [(await bot.turn(f"slow {n}"))[1] for n in range(2)]
    for body in first:
        assert [c["status"] for c in body["tool_calls"]] == ["timeout"]
        assert "did not answer within 0.2s" in body["reply"]
    assert bot.metric("agent_tool_calls_total", tool="slow", status="timeout", version="v1") == 2.0
    assert bot.metric("agent_tool_breaker_state", server="weather", tool="slow") == 2.0
    _, refused = await bot.turn("slow again")
    assert "unavailable right now" in refused["reply"]
    weather.release.set()
    bot.clock.advance(30)
    _, recovered = await bot.turn("slow at last")
    assert recovered["reply"] == "Tool said: Finally sunny in Rome"
    assert bot.metric("agent_tool_breaker_state", server="weather", tool="slow") == 0.0
    assert bot.metric(
        "agent_tool_breaker_transitions_total", server="weather", state="half_open"
    ) == (1.0)


async def test_same_call_forever_is_stopped_at_the_threshold(
    agent: AgentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A model that calls the same MCP tool with the same arguments forever is stopped at
    N: one guardrail increment, one log line, and the turn ends with a reply."""
    bot = await agent(RelayModel([("forecast", {"city": "Lima"})], forever=True))
    with caplog.at_level("WARNING", logger="agentkeel.runtime"):
        _, body = await bot.turn("loop")
    assert [c["status"] for c in body["tool_calls"]] == ["success", "success", "rejected"]
    assert body["reply"].startswith("Tool said: Stopped calling tools")
    assert bot.metric(
        "agent_guardrail_events_total", guardrail="tool_storm", agent="default", version="v1"
    ) == (1.0)
    storms = [r for r in caplog.records if r.getMessage().startswith("tool storm")]
    assert len(storms) == 1


async def test_rate_limited_tool_is_a_refusal_not_an_error(agent: AgentFactory) -> None:
    """Over tools.calls_per_minute for one session and tool, the call is rejected with a
    429-style message the agent reads; the turn succeeds."""
    bot = await agent(
        RelayModel([("forecast", {"city": "A"}), ("forecast", {"city": "B"})]),
        tools={"calls_per_minute": 1},
    )
    _, body = await bot.turn("two forecasts")
    assert [c["status"] for c in body["tool_calls"]] == ["success", "rejected"]
    assert body["reply"].startswith("Tool said: 429 rate limited: 'forecast'")
    assert bot.metric("agent_tool_refusals_total", tool="forecast", reason="rate_limited") == 1.0


async def test_session_budget_ends_the_loop_and_is_counted(agent: AgentFactory) -> None:
    """Once a session has spent tools.session_call_budget calls, the next call ends the
    tool loop with a reply, in this turn and the next, and each stop is counted."""
    bot = await agent(
        RelayModel(
            [("forecast", {"city": city}) for city in "ABCD"],
        ),
        tools={"session_call_budget": 2, "calls_per_minute": 0},
    )
    session_id, body = await bot.turn("three forecasts")
    assert [c["status"] for c in body["tool_calls"]] == ["success", "success", "rejected"]
    assert "budget of 2 tool calls" in body["reply"]
    _, again = await bot.turn("more", session_id)
    assert [c["status"] for c in again["tool_calls"]] == ["rejected"]
    assert bot.metric(
        "agent_guardrail_events_total",
        guardrail="tool_session_budget",
        agent="default",
        version="v1",
    ) == (2.0)


async def test_long_results_are_cut_with_a_marker(agent: AgentFactory) -> None:
    """A result over tools.max_result_chars reaches the model cut, with a marker."""
    bot = await agent(RelayModel([("big", {})]), tools={"max_result_chars": 1000})
    _, body = await bot.turn("big")
    assert len(body["reply"]) < 1100
    assert body["reply"].endswith("characters cut]")
    assert bot.metric("agent_tool_results_truncated_total", tool="big") == 1.0


class Exploding:
    """A tool source whose call raises with the call's argument in the message."""

    async def list_tools(self) -> Sequence[ToolSpec]:
        return [ToolSpec(name="lookup", description="Looks a key up.")]

    async def call(self, name: str, arguments: dict[str, Any], *, context: ToolContext) -> Any:
        raise KeyError(f"no record for {arguments['key']}")


async def test_a_source_that_raises_is_reported_by_type_and_source_only() -> None:
    """The exception's text goes to the model (content) but not into ``error``, which the
    replica's log line and span carry: it may quote the arguments."""
    client = GuardedToolsClient(
        tools=CompositeToolSet([("ledger", Exploding())]),
        metrics=ToolMetrics(CollectorRegistry()),
        call_timeout_s=5,
        max_result_chars=1000,
        clock=ManualClock(),
    )
    context = ToolContext(agent_id="a", session_id="s", user_id="u", turn=1)
    result = await client.call("lookup", {"key": "iban-DE0012"}, context=context)
    assert result.status == "failure"
    assert "iban-DE0012" in result.content
    assert result.error == "KeyError from ledger"
