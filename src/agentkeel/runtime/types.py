"""The agent contract: ``Turn`` in, ``Reply`` out, and the guarded handles a turn carries.

A user's agent is any object with ``async def respond(self, turn: Turn) -> Reply``.
Everything it does through ``turn.model``, ``turn.tools`` and ``turn.memory`` is
metered, limited and logged by the runtime; the agent code stays plain.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agentkeel.config.live import TurnSettings
from agentkeel.models.types import ChatMessage, ModelResponse, ToolCall, ToolSpec
from agentkeel.tools.types import ToolResult


@runtime_checkable
class TurnModel(Protocol):
    """The guarded model handle: step limit, token budget, context accounting, streaming."""

    @property
    def context_window(self) -> int: ...

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolSpec] = (),
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ModelResponse: ...


@runtime_checkable
class TurnTools(Protocol):
    """The guarded tools handle: allowlist, storm detection, rate limit, metrics.

    ``stopped`` holds the reason once a guardrail has ended the tool loop; the
    agent should then answer without calling more tools.
    """

    @property
    def stopped(self) -> str | None: ...

    async def list_tools(self) -> Sequence[ToolSpec]: ...

    async def call(self, call: ToolCall) -> ToolResult: ...


@dataclass(slots=True)
class Turn:
    """One user message and everything the agent may use to answer it."""

    session_id: str
    user_id: str
    agent_id: str
    number: int
    content: str
    history: Sequence[ChatMessage]
    model: TurnModel
    tools: TurnTools
    log: logging.LoggerAdapter[logging.Logger]
    memory: Any | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    settings: TurnSettings | None = None
    """The live settings in force for this turn (flags and overrides applied)."""


@dataclass(slots=True)
class Reply:
    """The agent's answer. ``messages`` is the exchange to keep as context for later
    turns (assistant tool calls, tool results, final answer); when empty the runtime
    keeps just the final answer."""

    content: str
    messages: Sequence[ChatMessage] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Agent(Protocol):
    """Anything that answers a turn."""

    async def respond(self, turn: Turn) -> Reply: ...
