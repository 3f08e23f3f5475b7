"""The memory client wired into its users: ``turn.memory`` in the agent server, and
the memory tools of the tool server (``tools.server.memory_url``)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from agentkeel.config.layers import load_settings
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import SecretError
from agentkeel.memory.client import MemoryClient
from agentkeel.memory.outbox import MemoryOutbox
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.scripted import ScriptedProvider
from agentkeel.resilience.clock import ManualClock
from agentkeel.runtime.app import create_app as create_agent_app
from agentkeel.runtime.types import Reply, Turn
from agentkeel.telemetry.metrics import ModelMetrics
from agentkeel.tools.server import create_app as create_tools_app
from agentkeel.tools.types import ToolContext

# Nothing listens on the discard port: every write lands in the outbox.
NOWHERE = "http://127.0.0.1:9"


def settings_for(tmp_path: Path, *, url: str | None = None, **overrides: object) -> KeelSettings:
    token = tmp_path / "memory_token"
    token.write_text("t" * 32)
    return load_settings(
        layers=[],
        overrides={
            "secrets_dir": None,
            "data_dir": str(tmp_path / "data"),
            "models": [{"name": "scripted", "kind": "scripted"}],
            "memory_client": {"token_file": str(token), "url": url},
            **overrides,
        },
    ).settings


class RememberingAgent:
    """Stores each message through ``turn.memory`` and replies with the outcome."""

    def __init__(self) -> None:
        self.handles: list[object] = []

    async def respond(self, turn: Turn) -> Reply:
        self.handles.append(turn.memory)
        assert isinstance(turn.memory, MemoryClient)
        namespace = f"agent:{turn.agent_id}/user:{turn.user_id}"
        outcome = await turn.memory.store(namespace, turn.content)
        return Reply(content=f"{outcome.status} {outcome.memory_id}")


async def test_agent_server_gives_turns_a_memory_client(tmp_path: Path) -> None:
    """With memory_client.url set, turn.memory is a MemoryClient with its own outbox
    per replica; a write while the memory server is down comes back queued, and the
    outbox file keeps it after the server shuts down."""
    settings = settings_for(tmp_path, url=NOWHERE, server={"replica_id": "replica-3"})
    clock = ManualClock()
    registry = CollectorRegistry()
    gateway = ModelGateway(
        providers=[ScriptedProvider(script=[], clock=clock)],
        breakers={},
        retry=settings.retry,
        metrics=ModelMetrics(registry),
        clock=clock,
    )
    agent = RememberingAgent()
    app = create_agent_app(settings, agent=agent, gateway=gateway, registry=registry, clock=clock)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://agent"
        ) as client:
            created = await client.post("/v1/sessions", json={"user_id": "u1"})
            session = created.json()["session_id"]
            reply = await client.post(
                f"/v1/sessions/{session}/messages", json={"content": "likes tea"}
            )
        assert reply.status_code == 200, reply.text
        assert reply.json()["reply"].startswith("queued ")
        assert registry.get_sample_value("agent_memory_outbox_depth") == 1
    handle = agent.handles[0]
    assert isinstance(handle, MemoryClient) and handle.url == NOWHERE
    outbox = tmp_path / "data" / "memory-outbox" / "agent-default-replica-3.db"
    assert handle.outbox.path == outbox and outbox.is_file()


def test_agent_server_without_a_token_file_does_not_start(tmp_path: Path) -> None:
    """memory_client.url without a token file stops the app factory with a SecretError."""
    settings = load_settings(
        layers=[],
        overrides={
            "secrets_dir": None,
            "models": [{"name": "scripted", "kind": "scripted"}],
            "memory_client": {"url": NOWHERE},
        },
    ).settings
    with pytest.raises(SecretError, match="token"):
        create_agent_app(settings, agent=RememberingAgent(), registry=CollectorRegistry())


async def test_tool_server_builds_a_memory_client_from_memory_url(tmp_path: Path) -> None:
    """tools.server.memory_url adds memory_search and memory_store backed by a
    MemoryClient that the app opens and closes; memory_store queues while the memory
    server is down and says which memory it will be."""
    settings = settings_for(tmp_path, tools={"server": {"memory_url": NOWHERE, "port": 9191}})
    app = create_tools_app(settings, registry=CollectorRegistry(), clock=ManualClock())
    memory = app.state.memory_client
    assert isinstance(memory, MemoryClient)
    assert {"memory_search", "memory_store"} <= set(app.state.toolset.names)
    context = ToolContext(agent_id="support", session_id="s1", user_id="u1", turn=1)
    async with app.router.lifespan_context(app):
        result = await app.state.toolset.call(
            "memory_store", {"content": "prefers email"}, context=context
        )
        assert result.status == "success", result.content
        assert result.content.startswith("stored as memory ")
        assert memory.pending == 1
    assert memory.outbox.path == tmp_path / "data" / "memory-outbox" / "tools-9191.db"
    reopened = MemoryOutbox(path=memory.outbox.path)
    await reopened.open()
    try:
        assert reopened.pending == 1
    finally:
        await reopened.aclose()
