from __future__ import annotations

import pytest
from pydantic import SecretStr

from agentkeel.config.secrets import KeyChainSettings
from agentkeel.errors import ProviderError, ProviderRateLimited, ProviderTimeout
from agentkeel.models.anthropic_provider import AnthropicProvider
from agentkeel.models.types import ChatMessage, ModelProvider, ModelRequest, ToolCall
from agentkeel.secrets.call_context import CallContext, call_context
from agentkeel.secrets.keychain import KeyChain, PlatformKey
from agentkeel.telemetry.correlation import set_correlation_id
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
)


def make_provider(endpoints: FakeEndpoints, model: str, **options: object) -> AnthropicProvider:
    settings: dict[str, object] = {
        "name": "claude",
        "model": model,
        "base_url": endpoints.base_url,
        "api_key": SecretStr("sk-ant-test"),
        "context_window": 200_000,
        "timeout_s": 5.0,
    }
    settings.update(options)
    return AnthropicProvider(**settings)  # type: ignore[arg-type]


async def test_text_reply_with_usage_and_separate_system_prompt(endpoints: FakeEndpoints) -> None:
    """The system prompt travels apart; the reply and its token counts come back."""
    provider = make_provider(endpoints, "text")
    try:
        response = await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert isinstance(provider, ModelProvider)
    assert response.content == REPLY_TEXT
    assert response.usage.input_tokens == INPUT_TOKENS
    assert response.usage.output_tokens == OUTPUT_TOKENS
    assert response.finish_reason == "stop"
    sent = endpoints.last
    assert sent.path == "/v1/messages"
    assert sent.headers["authorization"] == "Bearer sk-ant-test"
    assert sent.body["system"] == "Be brief."
    assert sent.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]}
    ]
    assert sent.body["max_tokens"] == 64
    assert sent.body["tools"][0]["input_schema"]["properties"]["expression"]["type"] == "string"


async def test_tool_use_reply(endpoints: FakeEndpoints) -> None:
    """tool_use blocks become ToolCalls."""
    provider = make_provider(endpoints, "tool")
    try:
        response = await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert response.tool_calls == (ToolCall("toolu_abc", "calculator", {"expression": "2 + 2"}),)
    assert response.finish_reason == "tool_calls"


async def test_streaming_text_and_usage(endpoints: FakeEndpoints) -> None:
    """Streamed text deltas reach on_token in order; usage comes from the stream's events."""
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
    assert response.usage.input_tokens == INPUT_TOKENS
    assert response.usage.output_tokens == OUTPUT_TOKENS
    assert endpoints.last.body["stream"] is True


async def test_streaming_tool_use(endpoints: FakeEndpoints) -> None:
    """input_json_delta fragments are joined into the tool call's arguments."""
    provider = make_provider(endpoints, "tool")

    async def on_token(piece: str) -> None:
        raise AssertionError("a tool_use reply has no text tokens")

    try:
        response = await provider.complete(REQUEST, on_token=on_token)
    finally:
        await provider.aclose()
    assert response.tool_calls == (ToolCall("toolu_abc", "calculator", {"expression": "2 + 2"}),)


async def test_tool_history_maps_to_tool_use_and_tool_result_blocks(
    endpoints: FakeEndpoints,
) -> None:
    """Assistant tool calls become tool_use blocks; consecutive tool results share one user turn."""
    provider = make_provider(endpoints, "text")
    request = ModelRequest(
        messages=[
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "Add and multiply."),
            ChatMessage(
                "assistant",
                "Calculating.",
                tool_calls=(
                    ToolCall("t1", "calculator", {"expression": "2+2"}),
                    ToolCall("t2", "calculator", {"expression": "2*3"}),
                ),
            ),
            ChatMessage("tool", "4", tool_call_id="t1"),
            ChatMessage("tool", "6", tool_call_id="t2"),
        ],
        tools=[CALCULATOR],
    )
    try:
        await provider.complete(request)
    finally:
        await provider.aclose()
    messages = endpoints.last.body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [
        {"type": "text", "text": "Calculating."},
        {"type": "tool_use", "id": "t1", "name": "calculator", "input": {"expression": "2+2"}},
        {"type": "tool_use", "id": "t2", "name": "calculator", "input": {"expression": "2*3"}},
    ]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "4"},
        {"type": "tool_result", "tool_use_id": "t2", "content": "6"},
    ]


async def test_without_tool_support_sends_no_tools(endpoints: FakeEndpoints) -> None:
    """supports_tools=False sends no tool definitions and no tool blocks."""
    provider = make_provider(endpoints, "text", supports_tools=False)
    request = ModelRequest(
        messages=[
            ChatMessage("user", "What is 2 + 2?"),
            ChatMessage("assistant", "", tool_calls=(ToolCall("t1", "calculator", {}),)),
            ChatMessage("tool", "4", tool_call_id="t1"),
        ],
        tools=[CALCULATOR],
    )
    try:
        await provider.complete(request)
    finally:
        await provider.aclose()
    body = endpoints.last.body
    assert "tools" not in body
    kinds = {block["type"] for m in body["messages"] for block in m["content"]}
    assert kinds == {"text"}


async def test_rate_limited_carries_retry_after(endpoints: FakeEndpoints) -> None:
    """HTTP 429 becomes ProviderRateLimited with Retry-After, and the SDK does not retry."""
    before = len(endpoints.requests)
    provider = make_provider(endpoints, "rate-limited")
    try:
        with pytest.raises(ProviderRateLimited) as info:
            await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert info.value.retry_after == 7.0 and info.value.retryable
    assert info.value.status_code == 429
    assert len(endpoints.requests) == before + 1


@pytest.mark.parametrize(("model", "status"), [("server-error", 500), ("overloaded", 529)])
async def test_server_errors_are_retryable(
    endpoints: FakeEndpoints, model: str, status: int
) -> None:
    """5xx, including Anthropic's 529 overload, are retryable."""
    provider = make_provider(endpoints, model)
    try:
        with pytest.raises(ProviderError) as info:
            await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert info.value.retryable and info.value.status_code == status


async def test_timeout_becomes_provider_timeout(endpoints: FakeEndpoints) -> None:
    """An endpoint that does not answer within timeout_s raises ProviderTimeout."""
    provider = make_provider(endpoints, "slow", timeout_s=0.3)
    try:
        with pytest.raises(ProviderTimeout) as info:
            await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert info.value.retryable


async def test_sends_the_correlation_id(endpoints: FakeEndpoints) -> None:
    """The current correlation id travels as X-Correlation-ID."""
    provider = make_provider(endpoints, "text")
    set_correlation_id("turn-7")
    try:
        await provider.complete(REQUEST)
    finally:
        set_correlation_id(None)
        await provider.aclose()
    assert endpoints.last.headers["x-correlation-id"] == "turn-7"


async def test_without_a_key_ignores_the_environment(
    endpoints: FakeEndpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    """api_key=None never picks up ANTHROPIC_API_KEY from the environment."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-environment")
    provider = make_provider(endpoints, "text", api_key=None)
    try:
        await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert endpoints.last.headers["authorization"] == "Bearer not-needed"


async def test_the_response_names_the_key_link_that_served_it(endpoints: FakeEndpoints) -> None:
    """With a key chain, the response says which link's key served the call: the user's
    own key sent with the request is ``byok``; outside a turn, ``platform``."""
    chain = KeyChain(source=None, settings=KeyChainSettings(allow_request_keys=True))
    provider = make_provider(
        endpoints, "text", keys=chain.for_provider("claude", PlatformKey(source=None, path=None))
    )
    context = CallContext(
        user_id="ana",
        organization=None,
        session_started_at=0.0,
        request_keys={"claude": SecretStr("sk-ant-user")},
    )
    try:
        platform = await provider.complete(REQUEST)
        with call_context(context):
            own = await provider.complete(REQUEST)
    finally:
        await provider.aclose()
    assert (platform.key_link, own.key_link) == ("platform", "byok")
    assert "sk-ant-user" in str(endpoints.last.headers)
