"""ServerTokenCounter: counts from a llama.cpp server's tokenizer, remembered per
message, the byte bound whenever the server fails or is slow."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from agentkeel.models.counting import (
    MESSAGE_ALLOWANCE,
    REQUEST_ALLOWANCE,
    TokenCounter,
    bound_tokens,
)
from agentkeel.models.server_counter import ServerTokenCounter, server_root
from agentkeel.models.types import ChatMessage, ModelRequest

SYSTEM = ChatMessage("system", "You are a helpful assistant.")
QUESTION = ChatMessage("user", "東京の天気はどうですか")


class FakeServer:
    """Answers both tokenize APIs with one token per character; records the texts."""

    def __init__(self, *, delay_s: float = 0.0, status: int = 200) -> None:
        self.delay_s = delay_s
        self.status = status
        self.paths: list[str] = []
        self.texts: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        body = json.loads(request.content)
        self.paths.append(request.url.path)
        if self.status != 200:
            return httpx.Response(self.status, json={"error": "boom"})
        if request.url.path == "/tokenize":
            self.texts.append(body["content"])
            return httpx.Response(200, json={"tokens": list(range(len(body["content"])))})
        self.texts.append(body["input"])
        return httpx.Response(200, json={"count": len(body["input"])})


def counter_for(server: FakeServer, flavour: str = "llama-cpp-python") -> ServerTokenCounter:
    return ServerTokenCounter(
        base_url="http://model:8090/v1",
        flavour=flavour,  # type: ignore[arg-type]
        model="smollm2",
        timeout_s=0.2,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(server)),
    )


def expected(messages: list[ChatMessage]) -> int:
    """One token per character (the fake) plus the byte bound's framing."""
    return REQUEST_ALLOWANCE + sum(
        MESSAGE_ALLOWANCE + len(m.role) + len(m.content) for m in messages
    )


@pytest.mark.parametrize(
    ("flavour", "path"),
    [("llama-cpp-python", "/extras/tokenize/count"), ("llama.cpp", "/tokenize")],
)
async def test_counts_message_text_with_the_server_tokenizer(flavour: str, path: str) -> None:
    """Each message's text is counted by the server, at its root (not under /v1)."""
    server = FakeServer()
    counter = counter_for(server, flavour)
    assert isinstance(counter, TokenCounter)
    request = ModelRequest(messages=[SYSTEM, QUESTION])
    assert await counter.prompt_tokens(request) == expected([SYSTEM, QUESTION])
    assert set(server.paths) == {path}
    await counter.aclose()


async def test_history_already_counted_is_not_sent_again() -> None:
    """A conversation re-sends its history every call: only the new message is asked."""
    server = FakeServer()
    counter = counter_for(server)
    await counter.prompt_tokens(ModelRequest(messages=[SYSTEM, QUESTION]))
    reply = ChatMessage("assistant", "晴れです。")
    follow_up = ChatMessage("user", "明日はどうですか")
    conversation = [SYSTEM, QUESTION, reply, follow_up]
    assert await counter.prompt_tokens(ModelRequest(messages=conversation)) == expected(
        conversation
    )
    assert server.texts == [SYSTEM.content, QUESTION.content, reply.content, follow_up.content]


@pytest.mark.parametrize("server", [FakeServer(delay_s=1.0), FakeServer(status=500)])
async def test_a_slow_or_failing_server_gives_the_byte_bound(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A count slower than timeout_s or an error falls back to the byte bound (never
    fewer tokens), with one warning for the streak, not one per call."""
    counter = counter_for(server)
    request = ModelRequest(messages=[SYSTEM, QUESTION])
    with caplog.at_level(logging.WARNING, logger="agentkeel.models.server_counter"):
        for _ in range(3):
            assert await counter.prompt_tokens(request) == bound_tokens(request.messages)
    assert counter.fallbacks == 3
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "http://model:8090" in warnings[0] and "tokenizer_timeout_s" in warnings[0]


def test_server_root_strips_the_openai_path() -> None:
    """The tokenize endpoints live at the server root, beside /v1."""
    assert server_root("http://127.0.0.1:8090/v1") == "http://127.0.0.1:8090"
    assert server_root("http://127.0.0.1:8090/v1/") == "http://127.0.0.1:8090"
    assert server_root("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
