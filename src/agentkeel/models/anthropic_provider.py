"""A provider for Anthropic's Messages API.

The system prompt travels apart from the messages; tool calls are
``tool_use`` blocks in an assistant message and their results are
``tool_result`` blocks in the next user message. The SDK's own retries are off
(``max_retries=0``): the gateway retries, with its breakers and metrics.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anthropic
from pydantic import SecretStr

from agentkeel.errors import ProviderError
from agentkeel.models.counting import bound_tokens, text_bound, tool_call_bound
from agentkeel.models.keyed_call import complete_with_keys
from agentkeel.models.sdk_errors import convert_sdk_error
from agentkeel.models.types import (
    ChatMessage,
    ModelRequest,
    ModelResponse,
    TokenCallback,
    ToolCall,
    ToolSpec,
    Usage,
)
from agentkeel.secrets.keychain import ProviderKeys
from agentkeel.telemetry.correlation import HEADER as CORRELATION_HEADER
from agentkeel.telemetry.correlation import get_correlation_id

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 1024
"""The Messages API requires max_tokens; used when the request sets none."""
_NO_KEY = "not-needed"

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
}


class AnthropicProvider:
    """Messages through the official ``anthropic`` SDK, with tools and streaming.

    >>> provider = AnthropicProvider(name="claude", model="claude-sonnet-4-5",
    ...     api_key=resolver.resolve("anthropic_api_key"), context_window=200_000,
    ...     timeout_s=60)
    """

    system = "anthropic"

    def __init__(
        self,
        *,
        name: str,
        model: str,
        api_key: SecretStr | None,
        context_window: int,
        timeout_s: float,
        base_url: str | None = None,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        supports_tools: bool = True,
        keys: ProviderKeys | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.base_url = base_url or DEFAULT_BASE_URL
        self.context_window = context_window
        self.timeout_s = timeout_s
        self.default_max_tokens = default_max_tokens
        self.supports_tools = supports_tools
        self._keys = keys
        # An explicit key stops the SDK from looking in the environment or in
        # profile files on disk.
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key.get_secret_value() if api_key is not None else _NO_KEY,
            base_url=self.base_url,
            timeout=timeout_s,
            max_retries=0,
        )

    async def complete(
        self, request: ModelRequest, *, on_token: TokenCallback | None = None
    ) -> ModelResponse:
        system, messages = _split_system(request.messages, tools=self.supports_tools)
        params: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_tokens or self.default_max_tokens,
        }
        if system:
            params["system"] = system
        if self.supports_tools and request.tools:
            params["tools"] = [_tool(spec) for spec in request.tools]
        if request.temperature is not None:
            params["temperature"] = request.temperature
        cid = get_correlation_id()
        if cid:
            params["extra_headers"] = {CORRELATION_HEADER: cid}
        return await complete_with_keys(
            self._keys,
            self._client,
            lambda client: self._complete_with(client, params, request, on_token),
        )

    async def _complete_with(
        self,
        client: anthropic.AsyncAnthropic,
        params: dict[str, Any],
        request: ModelRequest,
        on_token: TokenCallback | None,
    ) -> ModelResponse:
        try:
            if on_token is None:
                return await self._complete_once(client, params, request)
            return await self._complete_streaming(client, params, request, on_token)
        except anthropic.AnthropicError as exc:
            raise self._convert(exc) from exc

    async def aclose(self) -> None:
        await self._client.close()

    async def _complete_once(
        self, client: anthropic.AsyncAnthropic, params: dict[str, Any], request: ModelRequest
    ) -> ModelResponse:
        message = await client.messages.create(**params)
        text: list[str] = []
        calls: list[ToolCall] = []
        for block in message.content:
            if block.type == "text":
                text.append(block.text)
            elif block.type == "tool_use":
                arguments = block.input if isinstance(block.input, dict) else {}
                calls.append(ToolCall(id=block.id, name=block.name, arguments=dict(arguments)))
        return ModelResponse(
            content="".join(text),
            tool_calls=tuple(calls),
            usage=Usage(
                input_tokens=message.usage.input_tokens,
                output_tokens=message.usage.output_tokens,
            ),
            model=message.model or self.model,
            provider=self.name,
            finish_reason=_FINISH_REASONS.get(message.stop_reason or "", "stop"),
        )

    async def _complete_streaming(
        self,
        client: anthropic.AsyncAnthropic,
        params: dict[str, Any],
        request: ModelRequest,
        on_token: TokenCallback,
    ) -> ModelResponse:
        stream = await client.messages.create(**params, stream=True)
        text: list[str] = []
        blocks: dict[int, _PartialToolUse] = {}
        model = self.model
        stop_reason: str | None = None
        input_tokens: int | None = None
        output_tokens: int | None = None
        async with stream:
            async for event in stream:
                if event.type == "message_start":
                    model = event.message.model or model
                    input_tokens = event.message.usage.input_tokens
                    output_tokens = event.message.usage.output_tokens
                elif event.type == "content_block_start":
                    block = event.content_block
                    if block.type == "tool_use":
                        blocks[event.index] = _PartialToolUse(id=block.id, name=block.name)
                    elif block.type == "text" and block.text:
                        text.append(block.text)
                        await on_token(block.text)
                elif event.type == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta":
                        text.append(delta.text)
                        await on_token(delta.text)
                    elif delta.type == "input_json_delta" and event.index in blocks:
                        blocks[event.index].json.append(delta.partial_json)
                elif event.type == "message_delta":
                    stop_reason = event.delta.stop_reason or stop_reason
                    output_tokens = event.usage.output_tokens
                    if event.usage.input_tokens is not None:
                        input_tokens = event.usage.input_tokens
        content = "".join(text)
        calls = tuple(
            ToolCall(id=b.id, name=b.name, arguments=_arguments("".join(b.json)))
            for _, b in sorted(blocks.items())
        )
        if input_tokens is None or output_tokens is None:
            # The upper bound, never a guess: token budgets settle with this figure.
            usage = Usage(
                input_tokens=bound_tokens(request.messages, request.tools),
                output_tokens=text_bound(content) + sum(tool_call_bound(c) for c in calls),
            )
        else:
            usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        return ModelResponse(
            content=content,
            tool_calls=calls,
            usage=usage,
            model=model,
            provider=self.name,
            finish_reason=_FINISH_REASONS.get(stop_reason or "", "stop"),
        )

    def _convert(self, exc: anthropic.AnthropicError) -> ProviderError:
        return convert_sdk_error(
            exc,
            sdk=anthropic,
            provider=self.name,
            where=f"{self.base_url} (model '{self.model}')",
            timeout_s=self.timeout_s,
        )

    def __repr__(self) -> str:
        return f"AnthropicProvider(name={self.name!r}, model={self.model!r})"


@dataclass(slots=True)
class _PartialToolUse:
    id: str
    name: str
    json: list[str] = field(default_factory=list)


def _tool(spec: ToolSpec) -> dict[str, Any]:
    return {"name": spec.name, "description": spec.description, "input_schema": spec.parameters}


def _split_system(
    messages: Sequence[ChatMessage], *, tools: bool
) -> tuple[str, list[dict[str, Any]]]:
    """The joined system prompt, and the rest as Messages API turns.

    Consecutive messages of one role are merged into one turn, which puts all
    tool results for one assistant turn into the single user turn that must
    follow it.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            system.append(message.content)
            continue
        role, blocks = _blocks(message, tools=tools)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(s for s in system if s), turns


def _blocks(message: ChatMessage, *, tools: bool) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        if not tools:
            label = f" {message.name}" if message.name else ""
            return "user", [_text(f"[tool result{label}] {message.content}")]
        return "user", [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": message.content,
            }
        ]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append(_text(message.content))
    if message.role == "assistant" and message.tool_calls:
        if tools:
            blocks.extend(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in message.tool_calls
            )
        else:
            calls = "; ".join(f"{c.name}({json.dumps(c.arguments)})" for c in message.tool_calls)
            blocks.append(_text(f"[called tools] {calls}"))
    return ("assistant" if message.role == "assistant" else "user"), blocks


def _arguments(raw: str) -> dict[str, Any]:
    """Streamed tool input; unreadable JSON is kept under ``_raw`` for the tool layer
    to reject with a message the model can act on."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_raw": raw}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}
