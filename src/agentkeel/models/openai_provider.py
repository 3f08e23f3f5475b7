"""A provider for OpenAI-compatible chat completion endpoints.

One adapter for OpenAI itself and for what speaks its wire protocol: the
llama.cpp server, vLLM, Ollama, LiteLLM. The SDK's own retries are off
(``max_retries=0``): the gateway retries, with its breakers and metrics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import openai
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

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_NO_KEY = "not-needed"


class OpenAIProvider:
    """Chat completions through the official ``openai`` SDK, with tools and streaming.

    >>> provider = OpenAIProvider(name="local", model="smollm2-135m-instruct",
    ...     base_url="http://127.0.0.1:8090/v1", api_key=None, context_window=2048,
    ...     timeout_s=120, supports_tools=False)

    With ``supports_tools=False`` no tool definitions are sent and earlier tool
    calls and results in the history are rendered as plain text, which small
    local models (no function calling) can still read.
    """

    system = "openai"

    def __init__(
        self,
        *,
        name: str,
        model: str,
        base_url: str | None,
        api_key: SecretStr | None,
        context_window: int,
        timeout_s: float,
        http_client: httpx.AsyncClient | None = None,
        supports_tools: bool = True,
        keys: ProviderKeys | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.base_url = base_url or DEFAULT_BASE_URL
        self.context_window = context_window
        self.timeout_s = timeout_s
        self.supports_tools = supports_tools
        self._keys = keys
        # The key is always passed explicitly so the SDK never falls back to
        # OPENAI_API_KEY from the environment; keyless local servers get a placeholder.
        self._client = openai.AsyncOpenAI(
            api_key=api_key.get_secret_value() if api_key is not None else _NO_KEY,
            base_url=self.base_url,
            timeout=timeout_s,
            max_retries=0,
            # The SDK is typed for httpx2 but accepts an httpx.AsyncClient too.
            http_client=cast(Any, http_client),
        )

    async def complete(
        self, request: ModelRequest, *, on_token: TokenCallback | None = None
    ) -> ModelResponse:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(request.messages),
        }
        if self.supports_tools and request.tools:
            params["tools"] = [_tool(spec) for spec in request.tools]
        if request.max_tokens is not None:
            params["max_tokens"] = request.max_tokens
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
        client: openai.AsyncOpenAI,
        params: dict[str, Any],
        request: ModelRequest,
        on_token: TokenCallback | None,
    ) -> ModelResponse:
        try:
            if on_token is None:
                return await self._complete_once(client, params, request)
            return await self._complete_streaming(client, params, request, on_token)
        except openai.OpenAIError as exc:
            raise self._convert(exc) from exc

    async def aclose(self) -> None:
        await self._client.close()

    async def _complete_once(
        self, client: openai.AsyncOpenAI, params: dict[str, Any], request: ModelRequest
    ) -> ModelResponse:
        completion = await client.chat.completions.create(**params)
        if not completion.choices:
            raise ProviderError(
                f"empty reply (no choices) from {self.base_url} for model '{self.model}'",
                provider=self.name,
                retryable=True,
            )
        choice = completion.choices[0]
        message = choice.message
        calls = tuple(
            _tool_call(call.id, call.function.name, call.function.arguments)
            for call in message.tool_calls or ()
            if getattr(call, "function", None) is not None
        )
        content = message.content or ""
        usage = self._usage(
            completion.usage.prompt_tokens if completion.usage else None,
            completion.usage.completion_tokens if completion.usage else None,
            request,
            content,
            calls,
        )
        return ModelResponse(
            content=content,
            tool_calls=calls,
            usage=usage,
            model=completion.model or self.model,
            provider=self.name,
            finish_reason=choice.finish_reason or "stop",
        )

    async def _complete_streaming(
        self,
        client: openai.AsyncOpenAI,
        params: dict[str, Any],
        request: ModelRequest,
        on_token: TokenCallback,
    ) -> ModelResponse:
        stream = await client.chat.completions.create(
            **params, stream=True, stream_options={"include_usage": True}
        )
        text: list[str] = []
        partial_calls: dict[int, _PartialCall] = {}
        finish_reason = "stop"
        model = self.model
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        async with stream:
            async for chunk in stream:
                if chunk.model:
                    model = chunk.model
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens
                    completion_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    delta = choice.delta
                    if delta.content:
                        text.append(delta.content)
                        await on_token(delta.content)
                    for call_delta in delta.tool_calls or ():
                        partial = partial_calls.setdefault(call_delta.index, _PartialCall())
                        if call_delta.id:
                            partial.id = call_delta.id
                        if call_delta.function is not None:
                            if call_delta.function.name:
                                partial.name += call_delta.function.name
                            if call_delta.function.arguments:
                                partial.arguments.append(call_delta.function.arguments)
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
        content = "".join(text)
        calls = tuple(
            _tool_call(p.id or f"call_{index}", p.name, "".join(p.arguments))
            for index, p in sorted(partial_calls.items())
            if p.name
        )
        usage = self._usage(prompt_tokens, completion_tokens, request, content, calls)
        return ModelResponse(
            content=content,
            tool_calls=calls,
            usage=usage,
            model=model,
            provider=self.name,
            finish_reason=finish_reason,
        )

    def _usage(
        self,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        request: ModelRequest,
        content: str,
        calls: Sequence[ToolCall],
    ) -> Usage:
        """The endpoint's counts; for endpoints that report none, the upper bound
        (``agentkeel.models.counting``), so token budgets never under-count."""
        if prompt_tokens is None or completion_tokens is None:
            tools = request.tools if self.supports_tools else ()
            return Usage(
                input_tokens=bound_tokens(request.messages, tools),
                output_tokens=text_bound(content) + sum(tool_call_bound(c) for c in calls),
            )
        return Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens)

    def _messages(self, messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
        if self.supports_tools:
            return [_message(m) for m in messages]
        return [_plain_message(m) for m in messages]

    def _convert(self, exc: openai.OpenAIError) -> ProviderError:
        return convert_sdk_error(
            exc,
            sdk=openai,
            provider=self.name,
            where=f"{self.base_url} (model '{self.model}')",
            timeout_s=self.timeout_s,
        )

    def __repr__(self) -> str:
        return (
            f"OpenAIProvider(name={self.name!r}, model={self.model!r}, base_url={self.base_url!r})"
        )


@dataclass(slots=True)
class _PartialCall:
    """A tool call being assembled from stream deltas."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


def _tool(spec: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters,
        },
    }


def _message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in message.tool_calls
        ]
        if not message.content:
            out["content"] = None
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id or ""
    elif message.name:
        out["name"] = message.name
    return out


def _plain_message(message: ChatMessage) -> dict[str, Any]:
    """A message for a model without function calling: tool traffic becomes text."""
    if message.role == "tool":
        label = f" {message.name}" if message.name else ""
        return {"role": "user", "content": f"[tool result{label}] {message.content}"}
    if message.role == "assistant" and message.tool_calls:
        calls = "; ".join(f"{c.name}({json.dumps(c.arguments)})" for c in message.tool_calls)
        text = f"{message.content}\n" if message.content else ""
        return {"role": "assistant", "content": f"{text}[called tools] {calls}"}
    return {"role": message.role, "content": message.content}


def _tool_call(call_id: str, name: str, raw_arguments: str | None) -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=parse_tool_arguments(raw_arguments))


def parse_tool_arguments(raw: str | None) -> dict[str, Any]:
    """A tool call's JSON arguments as a dict.

    Small models emit broken JSON; rather than fail the turn, the raw text is
    kept under ``_raw`` so the tool layer can reject it with a message the
    model reads and can correct.
    """
    if not raw or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_raw": raw}
