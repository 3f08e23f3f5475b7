"""Live settings applied per turn: the model chain, tools, memory writes and guardrail
limits a flag or an override sets take effect on the next turn of a live session."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from agentkeel.config.layers import load_settings
from agentkeel.config.live import LayerValues, TurnContext
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.scripted import CallTools, Say, ScriptedProvider
from agentkeel.models.types import ToolCall
from agentkeel.resilience.clock import ManualClock
from agentkeel.runtime.app import create_app
from agentkeel.runtime.guards import GuardedTools
from agentkeel.runtime.types import Reply, Turn
from agentkeel.telemetry.metrics import AgentMetrics, ModelMetrics
from agentkeel.tools.local import LocalToolSet
from agentkeel.tools.types import ToolContext


@dataclass
class SwitchLayer:
    """A live layer the test sets by hand, per user (``*`` = everyone)."""

    by_user: dict[str, dict[str, Any]] = field(default_factory=dict)
    contexts: list[TurnContext] = field(default_factory=list)

    def values_for(self, context: TurnContext, *, counted: bool = True) -> Sequence[LayerValues]:
        self.contexts.append(context)
        values = {**self.by_user.get("*", {}), **self.by_user.get(context.user_id, {})}
        return [LayerValues("flag", values)] if values else []


@dataclass
class Live:
    client: httpx.AsyncClient
    layer: SwitchLayer
    providers: Mapping[str, ScriptedProvider]
    registry: CollectorRegistry

    async def session(self, user_id: str = "ana", **body: Any) -> str:
        response = await self.client.post("/v1/sessions", json={"user_id": user_id, **body})
        assert response.status_code == 201, response.text
        return str(response.json()["session_id"])

    async def say(self, session_id: str, content: str) -> httpx.Response:
        return await self.client.post(
            f"/v1/sessions/{session_id}/messages", json={"content": content}
        )

    def served(self) -> dict[str, int]:
        return {name: len(p.requests) for name, p in self.providers.items()}


LiveFactory = Callable[..., Awaitable[Live]]


@pytest.fixture
async def live() -> AsyncIterator[LiveFactory]:
    async with AsyncExitStack() as stack:

        async def start(
            *, scripts: Mapping[str, Sequence[Any]] | None = None, **extra: Any
        ) -> Live:
            scripts = scripts or {"a": [], "b": []}
            settings = load_settings(
                layers=[],
                overrides={
                    "secrets_dir": None,
                    "models": [{"name": name, "kind": "scripted"} for name in scripts],
                    "model_chains": {"b-first": ["b", "a"]} if "b" in scripts else {},
                    **extra,
                },
            ).settings
            clock = ManualClock()
            registry = CollectorRegistry()
            providers = {
                name: ScriptedProvider(name=name, script=list(script), clock=clock)
                for name, script in scripts.items()
            }
            gateway = ModelGateway(
                providers=list(providers.values()),
                breakers={},
                retry=settings.retry,
                metrics=ModelMetrics(registry),
                clock=clock,
            )
            layer = SwitchLayer()
            app = create_app(
                settings,
                gateway=gateway,
                clock=clock,
                registry=registry,
                live_layers=[layer],
                run_sweeper=False,
            )
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent")
            )
            return Live(client, layer, providers, registry)

        yield start


async def test_model_chain_switches_on_the_next_turn(live: LiveFactory, tmp_path: Any) -> None:
    server = await live(data_dir=str(tmp_path))
    session = await server.session()
    assert (await server.say(session, "one")).status_code == 200
    assert server.served() == {"a": 1, "b": 0}
    server.layer.by_user["*"] = {"agent.model_chain": "b-first"}
    assert (await server.say(session, "two")).status_code == 200
    assert server.served() == {"a": 1, "b": 1}
    server.layer.by_user["*"] = {"agent.model_chain": "a"}
    assert (await server.say(session, "three")).status_code == 200
    assert server.served() == {"a": 2, "b": 1}


async def test_the_turn_is_resolved_for_its_user_organization_and_task(
    live: LiveFactory, tmp_path: Any
) -> None:
    server = await live(data_dir=str(tmp_path))
    server.layer.by_user["bob"] = {"agent.model_chain": "b"}
    ana = await server.session("ana", metadata={"task": "triage"})
    bob = await server.session("bob")
    assert (await server.say(ana, "hi")).status_code == 200
    assert (await server.say(bob, "hi")).status_code == 200
    assert server.served() == {"a": 1, "b": 1}
    first, second = server.layer.contexts
    assert (first.user_id, first.task, first.session_id) == ("ana", "triage", ana)
    assert (second.user_id, second.task) == ("bob", None)


async def test_tools_offered_follow_the_turn_settings(live: LiveFactory, tmp_path: Any) -> None:
    calc = CallTools.one("calculator", expression="2+2")
    server = await live(
        scripts={"a": [calc, Say("four"), calc, Say("no tool")]},
        data_dir=str(tmp_path),
    )
    session = await server.session()
    first = (await server.say(session, "2+2?")).json()
    assert [c["status"] for c in first["tool_calls"]] == ["success"]
    server.layer.by_user["*"] = {"agent.tools": ["current_time"]}
    second = (await server.say(session, "2+2 again?")).json()
    assert [c["status"] for c in second["tool_calls"]] == ["rejected"]
    offered = [spec.name for spec in server.providers["a"].requests[-2].tools]
    assert offered == ["current_time"]


async def test_guardrail_limits_follow_the_turn_settings(live: LiveFactory, tmp_path: Any) -> None:
    server = await live(data_dir=str(tmp_path))
    session = await server.session()
    server.layer.by_user["*"] = {"guardrails.max_input_chars": 5}
    refused = await server.say(session, "longer than five")
    assert refused.status_code == 413
    server.layer.by_user["*"] = {"guardrails.max_turns_per_session": 1}
    assert (await server.say(session, "ok")).status_code == 200
    limited = await server.say(session, "again")
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "turn_limit_reached"


class Remembering:
    """An agent that stores one memory per turn and reports what happened."""

    async def respond(self, turn: Turn) -> Reply:
        assert turn.memory is not None
        try:
            await turn.memory.store("ns", turn.content)
        except Exception as exc:
            return Reply(content=f"refused: {getattr(exc, 'code', type(exc).__name__)}")
        return Reply(content="stored")


class FakeMemory:
    def __init__(self) -> None:
        self.stored: list[str] = []

    async def store(self, namespace: str, content: str) -> None:
        self.stored.append(content)

    async def search(self, namespace: str, query: str) -> list[str]:
        return list(self.stored)


async def test_memory_writes_can_be_turned_off(tmp_path: Any) -> None:
    memory = FakeMemory()
    layer = SwitchLayer()
    settings = load_settings(
        layers=[],
        overrides={
            "secrets_dir": None,
            "data_dir": str(tmp_path),
            "models": [{"name": "a", "kind": "scripted"}],
        },
    ).settings
    app = create_app(
        settings, agent=Remembering(), memory=memory, live_layers=[layer], run_sweeper=False
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://agent"
        ) as client,
    ):
        created = await client.post("/v1/sessions", json={"user_id": "ana"})
        session = created.json()["session_id"]
        say = f"/v1/sessions/{session}/messages"
        assert (await client.post(say, json={"content": "tea"})).json()["reply"] == "stored"
        layer.by_user["*"] = {"agent.memory_writes": False}
        reply = (await client.post(say, json={"content": "coffee"})).json()["reply"]
        assert reply == "refused: memory_writes_off"
    assert memory.stored == ["tea"]


async def test_memory_store_tool_is_rejected_when_writes_are_off() -> None:
    stored: list[str] = []

    async def memory_store(content: str) -> str:
        """Remember a fact."""
        stored.append(content)
        return "stored"

    async def memory_search(query: str) -> str:
        """Search memories."""
        return "no memories matched"

    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)

    def tools(*, writes: bool) -> GuardedTools:
        return GuardedTools(
            toolset=LocalToolSet([memory_store, memory_search]),
            context=ToolContext(agent_id="a", session_id="s", user_id="u", turn=1),
            metrics=metrics,
            log=logging.LoggerAdapter(logging.getLogger("test")),
            clock=ManualClock(),
            memory_writes=writes,
        )

    off = tools(writes=False)
    refused = await off.call(ToolCall(id="1", name="memory_store", arguments={"content": "tea"}))
    assert refused.status == "rejected"
    assert "memory writes are off" in refused.content
    search = ToolCall(id="2", name="memory_search", arguments={"query": "tea"})
    assert (await off.call(search)).status == "success"
    assert stored == []
    on = tools(writes=True)
    allowed = await on.call(ToolCall(id="3", name="memory_store", arguments={"content": "tea"}))
    assert allowed.status == "success"
    assert stored == ["tea"]
    labels = {"guardrail": "memory_write_off", "agent": "a", "version": "v1"}
    assert registry.get_sample_value("agent_guardrail_events_total", labels) == 1


async def test_a_flag_can_raise_and_lower_the_limits(live: LiveFactory, tmp_path: Any) -> None:
    """Live values loosen limits as well as tighten them: the input size and the reply cap."""
    server = await live(
        data_dir=str(tmp_path), guardrails={"max_input_chars": 5, "max_output_tokens": 50}
    )
    session = await server.session()
    assert (await server.say(session, "longer than five")).status_code == 413
    server.layer.by_user["*"] = {
        "guardrails.max_input_chars": 1000,
        "guardrails.max_output_tokens": 400,
    }
    assert (await server.say(session, "longer than five")).status_code == 200
    assert server.providers["a"].requests[-1].max_tokens == 400
    server.layer.by_user["*"] = {"guardrails.max_output_tokens": 20}
    assert (await server.say(session, "short")).status_code == 200
    assert server.providers["a"].requests[-1].max_tokens == 20
