from __future__ import annotations

import pytest
from pydantic import SecretStr

from agentkeel.errors import ProviderError, ProviderRateLimited, ProviderTimeout
from agentkeel.models.openai_provider import OpenAIProvider, parse_tool_arguments
from agentkeel.models.types import ChatMessage, ModelProvider, ModelRequest, ToolCall
from agentkeel.telemetry.correlation import set_correlation_id
from agentkeel.telemetry.http import make_async_client
from tests.models.fake_endpoints import (
    CALCULATOR,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    REPLY_TEXT,
    REPLY_WORDS,
    FakeEndpoints,
)

REQUEST = ModelRequest(
    messages=[ChatMessage("system", "Be brief."), ChatMessage("user", "What is 2 + 2?")],
    tools=[CALCULATOR],
    max_tokens=64,
    temperature=0.2,
)


def make_provider(endpoints: FakeEndpoints, model: str, **options: object) -> OpenAIProvider:
    settings: dict[str, object] = {
        "name": "local",
        "model": model,
        "base_url": f"{endpoints.base_url}/v1",
        "api_key": SecretStr("sk-test"),
        "context_window": 2048,
        "timeout_s": 5.0,
    }
    settings.update(options)
    return OpenAIProvider(**settings)  # type: ignore[arg-type]


async def test_text_reply_with_usage(endpoints: FakeEndpoints) -> None:
    """A plain reply comes back with the endpoint's token counts and the request as sent."""
    provider = make_provider(endpoints, "text")
    try:
        response = await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert isinstance(provider, ModelProvider)
    assert response.content == REPLY_TEXT
    assert response.usage.input_tokens == INPUT_TOKENS
    assert response.usage.output_tokens == OUTPUT_TOKENS
    assert response.provider == "local" and response.finish_reason == "stop"
    sent = endpoints.last
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.body["max_tokens"] == 64 and sent.body["temperature"] == 0.2
    assert sent.body["tools"][0]["function"]["name"] == "calculator"
    assert [m["role"] for m in sent.body["messages"]] == ["system", "user"]


async def test_tool_call_reply(endpoints: FakeEndpoints) -> None:
    """Function-calling replies become ToolCalls with parsed arguments."""
    provider = make_provider(endpoints, "tool")
    try:
        response = await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert response.tool_calls == (ToolCall("call_abc", "calculator", {"expression": "2 + 2"}),)
    assert response.finish_reason == "tool_calls"


async def test_streaming_passes_each_token_and_counts_usage(endpoints: FakeEndpoints) -> None:
    """With on_token the reply streams piece by piece; usage comes from the final chunk."""
    provider = make_provider(endpoints, "text")
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    try:
        response = await provider.complete(REQUEST, on_token=on_token)
    finally:
        await provider.aclose()
    assert pieces == REPLY_WORDS
    assert response.content == REPLY_TEXT
    assert response.usage.output_tokens == OUTPUT_TOKENS
    assert endpoints.last.body["stream"] is True
    assert endpoints.last.body["stream_options"] == {"include_usage": True}


async def test_streaming_assembles_tool_call_deltas(endpoints: FakeEndpoints) -> None:
    """Tool-call argument fragments spread over chunks are joined into one call."""
    provider = make_provider(endpoints, "tool")

    async def on_token(piece: str) -> None:
        raise AssertionError("a tool-call reply has no text tokens")

    try:
        response = await provider.complete(REQUEST, on_token=on_token)
    finally:
        await provider.aclose()
    assert response.tool_calls == (ToolCall("call_abc", "calculator", {"expression": "2 + 2"}),)
    assert response.finish_reason == "tool_calls"


async def test_missing_usage_falls_back_to_an_estimate(endpoints: FakeEndpoints) -> None:
    """Endpoints that report no usage still produce non-zero token counts."""
    provider = make_provider(endpoints, "no-usage")
    try:
        response = await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0


async def test_rate_limited_carries_retry_after(endpoints: FakeEndpoints) -> None:
    """HTTP 429 becomes ProviderRateLimited with the Retry-After header's seconds."""
    provider = make_provider(endpoints, "rate-limited")
    try:
        with pytest.raises(ProviderRateLimited) as info:
            await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert info.value.retryable
    assert info.value.retry_after == 7.0
    assert info.value.status_code == 429
    assert info.value.provider == "local"
    assert len([r for r in endpoints.requests if r.body["model"] == "rate-limited"]) == 1, (
        "the SDK must not retry on its own"
    )


async def test_server_error_is_retryable(endpoints: FakeEndpoints) -> None:
    """HTTP 500 becomes a retryable ProviderError with the status code."""
    provider = make_provider(endpoints, "server-error")
    try:
        with pytest.raises(ProviderError) as info:
            await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert info.value.retryable and info.value.status_code == 500
    assert "HTTP 500" in info.value.message


async def test_unauthorized_is_not_retryable_and_names_the_key_setting(
    endpoints: FakeEndpoints,
) -> None:
    """HTTP 401 is not retried and tells the operator where the key comes from."""
    provider = make_provider(endpoints, "unauthorized")
    try:
        with pytest.raises(ProviderError) as info:
            await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert not info.value.retryable
    assert "api_key_file" in info.value.message


async def test_timeout_becomes_provider_timeout(endpoints: FakeEndpoints) -> None:
    """An endpoint that does not answer within timeout_s raises ProviderTimeout."""
    provider = make_provider(endpoints, "slow", timeout_s=0.3)
    try:
        with pytest.raises(ProviderTimeout) as info:
            await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert info.value.retryable
    assert "timeout after 0.3s" in info.value.message


async def test_connection_refused_is_retryable() -> None:
    """Nothing listening is a retryable connection error naming the endpoint."""
    provider = OpenAIProvider(
        name="local",
        model="m",
        base_url="http://127.0.0.1:1/v1",
        api_key=None,
        context_window=2048,
        timeout_s=2.0,
    )
    try:
        with pytest.raises(ProviderError) as info:
            await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert info.value.retryable and info.value.status_code is None
    assert "127.0.0.1:1" in info.value.message


async def test_sends_the_correlation_id(endpoints: FakeEndpoints) -> None:
    """The current correlation id travels as X-Correlation-ID on the model call."""
    provider = make_provider(endpoints, "text")
    set_correlation_id("turn-42")
    try:
        await provider.complete(REQUEST)
    finally:
        set_correlation_id(None)
        await provider.aclose()
    assert endpoints.last.headers["x-correlation-id"] == "turn-42"


async def test_without_a_key_sends_a_placeholder_not_the_environment(
    endpoints: FakeEndpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    """api_key=None never picks up OPENAI_API_KEY from the environment."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-environment")
    provider = make_provider(endpoints, "text", api_key=None)
    try:
        await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert endpoints.last.headers["authorization"] == "Bearer not-needed"


async def test_without_tool_support_sends_no_tools_and_flattens_history(
    endpoints: FakeEndpoints,
) -> None:
    """supports_tools=False sends no tool definitions, and earlier tool traffic as text."""
    provider = make_provider(endpoints, "text", supports_tools=False)
    request = ModelRequest(
        messages=[
            ChatMessage("user", "What is 2 + 2?"),
            ChatMessage(
                "assistant", "", tool_calls=(ToolCall("c1", "calculator", {"expression": "2+2"}),)
            ),
            ChatMessage("tool", "4", tool_call_id="c1", name="calculator"),
        ],
        tools=[CALCULATOR],
    )
    try:
        response = await provider.complete(request)
    finally:
        await provider.aclose()
    assert response.content == REPLY_TEXT
    body = endpoints.last.body
    assert "tools" not in body
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert "calculator" in body["messages"][1]["content"]
    assert body["messages"][2]["content"] == "[tool result calculator] 4"


async def test_tool_history_is_sent_in_openai_form(endpoints: FakeEndpoints) -> None:
    """Assistant tool calls and tool results keep their ids in the wire format."""
    provider = make_provider(endpoints, "text")
    request = ModelRequest(
        messages=[
            ChatMessage("user", "What is 2 + 2?"),
            ChatMessage(
                "assistant", "", tool_calls=(ToolCall("c1", "calculator", {"expression": "2+2"}),)
            ),
            ChatMessage("tool", "4", tool_call_id="c1"),
        ],
        tools=[CALCULATOR],
    )
    try:
        await provider.complete(request)
    finally:
        await provider.aclose()
    messages = endpoints.last.body["messages"]
    assert messages[1]["tool_calls"][0]["id"] == "c1"
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == '{"expression": "2+2"}'
    assert messages[2] == {"role": "tool", "content": "4", "tool_call_id": "c1"}


async def test_accepts_an_httpx_client(endpoints: FakeEndpoints) -> None:
    """A caller's httpx.AsyncClient (e.g. with the correlation hook) can carry the calls."""
    client = make_async_client()
    provider = make_provider(endpoints, "text", http_client=client)
    try:
        response = await provider.complete(REQUEST)
    finally:
        await provider.aclose()
        await client.aclose()
    assert response.content == REPLY_TEXT


def test_broken_tool_arguments_are_kept_raw() -> None:
    """Unparseable JSON arguments (small models) are kept under _raw instead of failing."""
    assert parse_tool_arguments('{"a": 1}') == {"a": 1}
    assert parse_tool_arguments("") == {}
    assert parse_tool_arguments("{oops") == {"_raw": "{oops"}
    assert parse_tool_arguments("[1]") == {"_raw": "[1]"}
