"""``AgentHarness``: test an agent through the real agent server, in process.

It builds the app with a scripted model, a temporary SQLite store and a manual
clock, opens one session, and talks to it over HTTP without a socket::

    async with AgentHarness(agent=MyAgent(), script=["Hello!"]) as h:
        outcome = await h.say("hi")
        assert outcome.reply == "Hello!"

Guardrails, tools, storage and metrics are the production ones, so a test
that passes here exercises the same path a deployed replica takes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette

from agentkeel.config.layers import load_settings
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import KeelError
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.scripted import OnEnd, ScriptedProvider, StepLike
from agentkeel.models.types import Usage
from agentkeel.resilience.clock import Clock, ManualClock
from agentkeel.runtime.app import create_app
from agentkeel.runtime.service import TurnOutcome
from agentkeel.runtime.stores import SessionBackend, open_store
from agentkeel.runtime.types import Agent
from agentkeel.telemetry.metrics import ModelMetrics
from agentkeel.tools.local import LocalToolSet
from agentkeel.tools.types import ToolSet


class HarnessError(KeelError):
    """The server answered with an error; ``status`` and ``code`` are the HTTP ones."""

    def __init__(self, message: str, *, code: str, status: int) -> None:
        super().__init__(message, code=code)
        self.status = status


class AgentHarness:
    """An in-process agent server with a scripted model, for tests.

    ``agent`` defaults to the built-in ``ToolAgent``; ``script`` is the model's
    script (see ``agentkeel.testing.ScriptedProvider``); ``tools`` are plain
    functions or a ``ToolSet`` (default: the built-in tools); ``settings``
    overrides guardrails and the rest (its store and models are replaced).
    """

    def __init__(
        self,
        *,
        agent: Agent | None = None,
        script: Sequence[StepLike] | Path = (),
        tools: Sequence[Callable[..., Any]] | ToolSet | None = None,
        settings: KeelSettings | Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        user_id: str = "test-user",
        on_end: OnEnd = "echo",
        context_window: int = 8192,
    ) -> None:
        self._agent = agent
        self._tools = tools
        self._settings = settings
        self.clock = clock or ManualClock()
        self.user_id = user_id
        self.provider = ScriptedProvider(
            script=script, clock=self.clock, on_end=on_end, context_window=context_window
        )
        """The scripted model; ``provider.requests`` holds every request it got."""
        self.registry = CollectorRegistry()
        self.session_id = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._store: SessionBackend | None = None
        self._app: Starlette | None = None
        self._lifespan: Any = None
        self._client: httpx.AsyncClient | None = None

    @property
    def app(self) -> Starlette:
        if self._app is None:
            raise RuntimeError("Use the harness inside 'async with AgentHarness(...) as h'.")
        return self._app

    @property
    def client(self) -> httpx.AsyncClient:
        """An HTTP client on the app, for requests the helpers do not cover."""
        if self._client is None:
            raise RuntimeError("Use the harness inside 'async with AgentHarness(...) as h'.")
        return self._client

    async def __aenter__(self) -> AgentHarness:
        self._tmp = tempfile.TemporaryDirectory(prefix="agentkeel-harness-")
        try:
            await self._start(Path(self._tmp.name))
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _start(self, directory: Path) -> None:
        toolset: ToolSet | None
        if self._tools is None:
            toolset = None
        elif isinstance(self._tools, ToolSet):
            toolset = self._tools
        else:
            toolset = LocalToolSet(list(self._tools))
        base = (
            self._settings.model_dump(mode="json")
            if isinstance(self._settings, KeelSettings)
            else dict(self._settings or {})
        )
        overrides: dict[str, Any] = {
            "data_dir": str(directory),
            "secrets_dir": None,
            "store": {"url": f"sqlite:///{directory / 'sessions.db'}"},
            "models": [{"name": "scripted", "kind": "scripted"}],
        }
        if toolset is not None:
            names = [spec.name for spec in await toolset.list_tools()]
            overrides["agent"] = {**base.get("agent", {}), "tools": names}
        settings = load_settings(layers=[], overrides={**base, **overrides}).settings
        gateway = ModelGateway(
            providers=[self.provider],
            breakers={},
            retry=settings.retry,
            metrics=ModelMetrics(self.registry, version=settings.agent.version),
            clock=self.clock,
        )
        self._store = open_store(settings.store_url())
        await self._store.open()
        self._app = create_app(
            settings,
            agent=self._agent,
            gateway=gateway,
            store=self._store,
            toolset=toolset,
            clock=self.clock,
            registry=self.registry,
        )
        self._lifespan = self._app.router.lifespan_context(self._app)
        await self._lifespan.__aenter__()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self._app), base_url="http://agent.test"
        )
        self.session_id = await self.new_session()

    async def aclose(self) -> None:
        """Close the client, the app and the store, and delete the temporary files."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._lifespan is not None:
            await self._lifespan.__aexit__(None, None, None)
            self._lifespan = None
        if self._store is not None:
            await self._store.aclose()
            self._store = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def new_session(self, metadata: Mapping[str, Any] | None = None) -> str:
        """Start another session for ``user_id``; ``say`` then talks to it."""
        response = await self.client.post(
            "/v1/sessions", json={"user_id": self.user_id, "metadata": dict(metadata or {})}
        )
        body = _checked(response)
        self.session_id = str(body["session_id"])
        return self.session_id

    async def say(self, content: str) -> TurnOutcome:
        """Send one message on the current session; raises ``HarnessError`` on an
        error response (its ``code`` and ``status`` are the server's)."""
        response = await self.client.post(
            f"/v1/sessions/{self.session_id}/messages", json={"content": content}
        )
        body = _checked(response)
        usage = body["usage"]
        return TurnOutcome(
            session_id=body["session_id"],
            turn=body["turn"],
            reply=body["reply"],
            usage=Usage(input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"]),
            tool_calls=body["tool_calls"],
            version=body["version"],
            agent_id=body["agent_id"],
            guardrails=tuple(body["guardrails"]),
        )

    async def session(self) -> dict[str, Any]:
        """The current session and its turns, as ``GET /v1/sessions/{id}`` returns them."""
        return _checked(await self.client.get(f"/v1/sessions/{self.session_id}"))

    async def metrics(self) -> str:
        """The Prometheus text the server would expose on ``/metrics``."""
        return generate_latest(self.registry).decode()


def _checked(response: httpx.Response) -> dict[str, Any]:
    body: Any = response.json()
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise HarnessError(
            str(error.get("message", response.text)),
            code=str(error.get("code", "http_error")),
            status=response.status_code,
        )
    if not isinstance(body, dict):
        raise HarnessError(f"expected a JSON object, got {body!r}", code="bad_response", status=500)
    return body
