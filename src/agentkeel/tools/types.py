"""The ToolSet plug-in Protocol: how the turn loop sees tools, local or remote."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from agentkeel.models.types import ToolSpec

ToolStatus = Literal["success", "failure", "timeout", "rejected"]


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who is calling: used for namespaces, rate-limit keys and log fields."""

    agent_id: str
    session_id: str
    user_id: str
    turn: int
    correlation_id: str | None = None
    organization: str | None = None
    """The user's organization, when there is one: ``user_id`` is unique only within it."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call produced; ``content`` is what the model reads next."""

    content: str
    status: ToolStatus = "success"
    stop_reason: str | None = None
    """Set by a tool source whose guardrail ends the tool loop (e.g. the session's
    call budget is spent): a short, bounded label such as ``tool_session_budget``.
    The turn's guarded tools handle then stops offering tools and counts it."""
    error: str | None = None
    """Why a call did not succeed, for the replica's log line and span: the guardrail's
    name for a refusal (``tool_storm``, ``tool_rate_limit``, ...), or what went wrong
    (no answer in time, the server unreachable, the exception's type; never its text,
    which may quote the arguments). The model reads ``content``, never this."""

    @property
    def is_error(self) -> bool:
        return self.status != "success"


@runtime_checkable
class ToolSet(Protocol):
    """A source of tools. In-process functions today; MCP servers later, same interface."""

    async def list_tools(self) -> Sequence[ToolSpec]: ...

    async def call(
        self, name: str, arguments: dict[str, Any], *, context: ToolContext
    ) -> ToolResult: ...
