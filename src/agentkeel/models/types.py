"""Data passed to and from model providers, and the provider plug-in Protocol."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]

TokenCallback = Callable[[str], Awaitable[None]]
"""Called with each streamed text fragment of a model reply, in order."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A model's request to call one tool."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What a model is told about a tool: its name, purpose and JSON-schema parameters."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation as a model sees it."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens counted from a provider's response (never estimated when the provider reports)."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


@dataclass(frozen=True, slots=True)
class ModelRequest:
    messages: Sequence[ChatMessage]
    tools: Sequence[ToolSpec] = ()
    max_tokens: int | None = None
    temperature: float | None = None
    providers: tuple[str, ...] | None = None
    """The providers to walk, in this order (a turn's ``agent.model_chain``); ``None``
    = the gateway's whole chain."""


@dataclass(frozen=True, slots=True)
class ModelResponse:
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    model: str = ""
    provider: str = ""
    finish_reason: str = "stop"
    key_link: str = "platform"
    """Which key of the key chain served the call (``secrets/keychain.py``): ``byok`` (the
    user's own), ``org`` (the organization's) or ``platform``; providers without a key
    chain (scripted, keyless) serve every call as ``platform``."""
    discarded_streams: int = 0
    """Attempts of this call before the one that answered (a retry, a fallback) that
    streamed text and then failed: each was sent the prompt and spent tokens that
    ``usage`` does not count (the gateway sets it)."""
    discarded_output_bound: int = 0
    """An upper bound on the tokens those attempts streamed (their text's UTF-8 bytes)."""


@runtime_checkable
class ModelProvider(Protocol):
    """One model endpoint. Raises ``ProviderError`` (or a subclass) on failure.

    ``on_token``, when given, receives streamed text fragments; a provider that
    cannot stream may call it once with the whole reply.
    """

    name: str
    model: str
    context_window: int

    async def complete(
        self, request: ModelRequest, *, on_token: TokenCallback | None = None
    ) -> ModelResponse: ...

    async def aclose(self) -> None: ...
