"""Session storage: records and the ``SessionStore`` / ``BudgetLedger`` Protocols.

Sessions are append-only: a turn row is written once, in one transaction, and
only then acknowledged. A session's *context* is the chain of turns from its
``head`` back through each turn's ``parent``; rewinding moves ``head`` to an
earlier turn without deleting anything, so the next turn continues from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agentkeel.models.types import ChatMessage, Usage
from agentkeel.resilience.budget import BudgetLedger

__all__ = ["BudgetLedger", "FeedbackRecord", "SessionRecord", "SessionStore", "TurnRecord"]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session_id: str
    user_id: str
    agent_id: str
    version: str
    created_at: float
    metadata: Mapping[str, Any] = field(default_factory=dict)
    head: int = 0
    """Number of the last turn in the context; 0 before the first turn."""
    turn_count: int = 0
    """Turns stored so far (rewinds do not lower it)."""
    ended_at: float | None = None


@dataclass(frozen=True, slots=True)
class TurnRecord:
    session_id: str
    number: int
    parent: int
    """The turn whose context this one continued (0 for none)."""
    content: str
    reply: str
    messages: Sequence[ChatMessage]
    """The whole exchange: the user message, tool calls, tool results, the reply."""
    usage: Usage
    tool_calls: Sequence[Mapping[str, Any]]
    started_at: float
    completed_at: float
    version: str = ""
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    session_id: str
    score: float
    created_at: float
    turn: int | None = None
    comment: str | None = None


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions and turns live. SQLite (embedded) or PostgreSQL (scale-out).

    ``append_turn`` is the commit point of a turn. It raises ``Conflict`` when a
    turn with that number exists or the session's head moved since the turn
    began (another replica or a rewind got there first), and ``NotFound`` for an
    unknown or ended session.
    """

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def create_session(self, session: SessionRecord) -> None: ...

    async def get_session(self, session_id: str) -> SessionRecord | None: ...

    async def list_turns(self, session_id: str) -> list[TurnRecord]: ...

    async def context_turns(self, session_id: str) -> list[TurnRecord]: ...

    async def append_turn(self, turn: TurnRecord) -> None: ...

    async def end_session(self, session_id: str, ended_at: float) -> bool: ...

    async def rewind(self, session_id: str, to_turn: int) -> SessionRecord: ...

    async def add_feedback(self, feedback: FeedbackRecord) -> None: ...

    async def list_feedback(self, session_id: str) -> list[FeedbackRecord]: ...

    async def count_active_sessions(self) -> int: ...
