"""Token quotas through the agent server for text that costs more than four
characters per token (CJK, emoji), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from agentkeel.config.layers import load_settings
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.types import ModelRequest, ModelResponse, TokenCallback, Usage
from agentkeel.resilience.clock import ManualClock
from agentkeel.runtime.app import create_app
from agentkeel.runtime.stores import SessionBackend
from agentkeel.telemetry.metrics import ModelMetrics

StoreFactory = Callable[[], Awaitable[SessionBackend]]

# 60 CJK characters and 10 emoji: 220 UTF-8 bytes in 70 characters.
PROMPTS = [
    ("请用中文解释一下这个问题。" * 5)[:60] + "🙂🚀🎉👍🔥🌏🍜🐼🎌🇯"
    if i % 2
    else ("日本語のテキストはトークンが多い。" * 4)[:60] + "🙂🚀🎉👍🔥🌏🍜🐼🎌🎈"
    for i in range(50)
]
REPLY = "好的🙂"
CHATML_MESSAGE = 5
"""<|im_start|>, role, newline, <|im_end|>, newline."""
CHATML_PRIMING = 3


def byte_level_tokens(text: str) -> int:
    """The worst case of a byte-level tokenizer: one token per UTF-8 byte."""
    return len(text.encode("utf-8"))


class ByteLevelProvider:
    """A model that reports the usage a byte-level BPE tokenizer with a ChatML
    template would in the worst case, and keeps every call in flight for a
    moment so that concurrent turns hold their reservations together."""

    name = "bytes"
    model = "byte-level"
    context_window = 8192

    def __init__(self, *, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls = 0

    async def complete(
        self, request: ModelRequest, *, on_token: TokenCallback | None = None
    ) -> ModelResponse:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        prompt = CHATML_PRIMING + sum(
            CHATML_MESSAGE + byte_level_tokens(m.role) + byte_level_tokens(m.content)
            for m in request.messages
        )
        return ModelResponse(
            content=REPLY,
            usage=Usage(input_tokens=prompt, output_tokens=byte_level_tokens(REPLY)),
            model=self.model,
            provider=self.name,
        )

    async def aclose(self) -> None:
        return None


@pytest.fixture
async def client(
    session_store_factory: StoreFactory,
) -> AsyncIterator[tuple[httpx.AsyncClient, SessionBackend, ByteLevelProvider, int]]:
    limit = 3_000
    settings = load_settings(
        layers=[],
        overrides={
            "secrets_dir": None,
            "models": [{"name": "bytes", "kind": "scripted"}],
            "agent": {"tools": []},
            "guardrails": {
                "session_token_budget": 0,
                "max_output_tokens": 64,
            },
            "quotas": {"user_daily_tokens": limit},
        },
    ).settings
    clock = ManualClock()
    registry = CollectorRegistry()
    provider = ByteLevelProvider(delay_s=0.05)
    gateway = ModelGateway(
        providers=[provider],
        breakers={},
        retry=settings.retry,
        metrics=ModelMetrics(registry),
        clock=clock,
    )
    store = await session_store_factory()
    app = create_app(settings, gateway=gateway, store=store, clock=clock, registry=registry)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent")
        )
        yield http, store, provider, limit


async def test_fifty_concurrent_cjk_and_emoji_turns_never_overspend_the_daily_budget(
    client: tuple[httpx.AsyncClient, SessionBackend, ByteLevelProvider, int],
) -> None:
    """50 turns at once of one user, each prompt CJK and emoji that a byte-level
    tokenizer counts byte by byte: the settled usage stays within the daily budget,
    the turns that would overspend it get 429 quota_exhausted and store nothing."""
    http, store, provider, limit = client
    sessions: list[str] = []
    for _ in PROMPTS:
        created = await http.post("/v1/sessions", json={"user_id": "mei"})
        assert created.status_code == 201, created.text
        sessions.append(created.json()["session_id"])

    responses = await asyncio.gather(
        *(
            http.post(f"/v1/sessions/{s}/messages", json={"content": p})
            for s, p in zip(sessions, PROMPTS, strict=True)
        )
    )

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, [r.text for r in responses if r.status_code >= 500]
    assert statuses.count(200) >= 1
    refused: list[dict[str, Any]] = [r.json() for r in responses if r.status_code == 429]
    assert refused, "some of the 50 turns must not fit the budget"
    assert {body["error"]["code"] for body in refused} == {"quota_exhausted"}
    spent = sum(r.json()["usage"]["total_tokens"] for r in responses if r.status_code == 200)
    # ManualClock's wall time is 2023-11-14 (UTC): the user's ledger key for that day.
    settled = await store.used("user:mei:2023-11-14")
    assert settled == spent
    assert settled <= limit, f"settled {settled} tokens against a daily budget of {limit}"
    assert provider.calls == statuses.count(200)
    for session_id, response in zip(sessions, responses, strict=True):
        stored = (await http.get(f"/v1/sessions/{session_id}")).json()
        assert stored["turn_count"] == (1 if response.status_code == 200 else 0)
