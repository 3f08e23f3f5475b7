"""Output sanitization in the agent server: secrets never leave in a reply, a streamed
token, a tool result, the stored turn or a log line; each redaction is counted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from agentkeel.config.layers import load_settings
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.scripted import CallTools, Say, ScriptedProvider, StepLike
from agentkeel.resilience.clock import ManualClock
from agentkeel.runtime.app import create_app
from agentkeel.runtime.stores import open_store
from agentkeel.secrets.redact import redact_logs
from agentkeel.telemetry.logging import JsonFormatter
from agentkeel.telemetry.metrics import ModelMetrics
from agentkeel.tools.local import LocalToolSet

PLATFORM_KEY = "plat-key-7f3a9c2e1b4d8f6a0c5e"
TOOL_LEAK = "sk-proj-Zq8Xv2Lm4Np6Rt1Yw3Ub5Kc7"
ADMIN_TOKEN = "admin-token-4c1f9e7d2b8a6053"


def read_config(name: str) -> str:
    """Reads a config entry (the test's tool leaks an OpenAI-shaped key)."""
    return f"{name} = {TOOL_LEAK}"


def connect_db(name: str) -> str:
    """Fails the way a careless client library does: with the credential in the message."""
    raise RuntimeError(f"cannot connect to {name} with password {TOOL_LEAK}")


@dataclass
class Agent:
    app: Starlette
    client: httpx.AsyncClient
    registry: CollectorRegistry
    log: io.StringIO
    provider: ScriptedProvider

    def redactions(self, kind: str, where: str) -> float:
        value = self.registry.get_sample_value(
            "agent_output_redactions_total", {"kind": kind, "where": where}
        )
        return value or 0.0


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Any]:
    async with AsyncExitStack() as stack:

        async def start(script: list[StepLike], **overrides: Any) -> Agent:
            secrets = tmp_path / "secrets"
            secrets.mkdir(exist_ok=True)
            (secrets / "admin_token").write_text(ADMIN_TOKEN)
            settings = load_settings(
                layers=[],
                overrides={
                    "secrets_dir": str(secrets),
                    "data_dir": str(tmp_path / "data"),
                    "models": [{"name": "scripted", "kind": "scripted"}],
                    "agent": {"tools": ["read_config", "connect_db"]},
                    **overrides,
                },
            ).settings
            clock = ManualClock()
            registry = CollectorRegistry()
            provider = ScriptedProvider(script=script, clock=clock)
            gateway = ModelGateway(
                providers=[provider],
                breakers={},
                retry=settings.retry,
                metrics=ModelMetrics(registry, version="v1"),
                clock=clock,
            )
            store = open_store(f"sqlite:///{tmp_path / 'sessions.db'}")
            await store.open()
            stack.push_async_callback(store.aclose)
            app = create_app(
                settings,
                gateway=gateway,
                store=store,
                clock=clock,
                registry=registry,
                toolset=LocalToolSet([read_config, connect_db]),
                run_sweeper=False,
            )
            app.state.known_secrets.add(PLATFORM_KEY)  # as the key chain's source would
            log = io.StringIO()
            handler = logging.StreamHandler(log)
            handler.setFormatter(JsonFormatter(service="agent"))
            root = logging.getLogger()
            root.addHandler(handler)
            stack.callback(root.removeHandler, handler)
            if app.state.redactor is not None:
                redact_logs(app.state.redactor)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent")
            )
            return Agent(app, client, registry, log, provider)

        yield start


async def _turn(agent: Agent, content: str, **kwargs: Any) -> httpx.Response:
    created = await agent.client.post("/v1/sessions", json={"user_id": "ana"})
    session_id = created.json()["session_id"]
    return await agent.client.post(
        f"/v1/sessions/{session_id}/messages", json={"content": content}, **kwargs
    )


async def test_platform_key_in_reply_and_sk_key_in_tool_result_are_redacted(agent: Any) -> None:
    """The model replies with the platform key and a tool result carries an sk- key: the
    reply, the stored turn and the logs hold neither; both are counted."""
    server: Agent = await agent(
        [CallTools.one("read_config", name="db"), Say(f"The key is {PLATFORM_KEY}.")]
    )
    response = await _turn(server, "what is the key?")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reply"] == "The key is [REDACTED:known_secret]."
    session = await server.client.get(f"/v1/sessions/{body['session_id']}")
    stored = session.text
    assert PLATFORM_KEY not in stored and TOOL_LEAK not in stored
    assert server.redactions("known_secret", "reply") == 1
    assert server.redactions("openai_key", "tool_result") == 1
    logs = server.log.getvalue()
    assert PLATFORM_KEY not in logs and TOOL_LEAK not in logs
    assert "redacted 1 secret(s) from a tool_result: openai_key" in logs


async def test_tool_result_reaches_the_model_redacted(agent: Any) -> None:
    """What the model reads next is the redacted tool result."""
    server: Agent = await agent([CallTools.one("read_config", name="db")])
    response = await _turn(server, "read it")
    assert response.status_code == 200
    second = server.provider.requests[-1]
    tool_messages = [m.content for m in second.messages if m.role == "tool"]
    assert tool_messages == ["db = [REDACTED:openai_key]"]


async def test_a_tools_exception_reaches_the_model_redacted(agent: Any) -> None:
    """A tool that raises with a secret in its message: the model reads the failure
    without the secret, and the stored turn holds none."""
    server: Agent = await agent([CallTools.one("connect_db", name="db"), Say("It failed.")])
    response = await _turn(server, "connect")
    assert response.status_code == 200, response.text
    tool_messages = [m.content for m in server.provider.requests[-1].messages if m.role == "tool"]
    assert len(tool_messages) == 1 and "[REDACTED:openai_key]" in tool_messages[0]
    assert TOOL_LEAK not in tool_messages[0]
    session = await server.client.get(f"/v1/sessions/{response.json()['session_id']}")
    assert TOOL_LEAK not in session.text
    assert TOOL_LEAK not in server.log.getvalue()


async def test_streamed_tokens_never_carry_the_secret(agent: Any) -> None:
    """Streaming: no token event and no reply event holds the key; the text still arrives."""
    server: Agent = await agent([Say(f"Here: {PLATFORM_KEY} and more words")])
    response = await _turn(server, "stream it", headers={"accept": "text/event-stream"})
    assert response.status_code == 200
    assert PLATFORM_KEY not in response.text
    tokens = [
        json.loads(line[len("data: ") :])["text"]
        for block in response.text.split("\n\n")
        if block.startswith("event: token")
        for line in block.splitlines()
        if line.startswith("data: ")
    ]
    assert "".join(tokens) == "Here: [REDACTED:known_secret] and more words"
    assert server.redactions("known_secret", "reply") == 1


async def test_a_secret_the_resolver_read_is_redacted_from_replies(agent: Any) -> None:
    """The admin token, read through the app's SecretResolver, becomes a known secret."""
    server: Agent = await agent([Say(f"token {ADMIN_TOKEN}")])
    live = await server.client.get(
        "/admin/sessions/live", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert live.status_code == 200
    response = await _turn(server, "leak the token")
    assert response.json()["reply"] == "token [REDACTED:known_secret]"


async def test_redaction_can_be_turned_off(agent: Any) -> None:
    """guardrails.redact_secrets: false passes text through unchanged."""
    server: Agent = await agent(
        [Say(f"The key is {PLATFORM_KEY}.")], guardrails={"redact_secrets": False}
    )
    response = await _turn(server, "what is the key?")
    assert response.json()["reply"] == f"The key is {PLATFORM_KEY}."
    assert server.app.state.redactor is None
