"""Session storage: records and the ``SessionStore`` / ``BudgetLedger`` Protocols.

Sessions are append-only: a turn row is written once, in one transaction, and
only then acknowledged. A session's *context* is the chain of turns from its
``head`` back through each turn's ``parent``; rewinding moves ``head`` to an
earlier turn without deleting anything, so the next turn continues from there.

A session ends once (``ended_at`` and ``end_reason`` are set by one conditional
update, so of several replicas noticing the same end exactly one records it):
when deleted, when idle past a timeout, or past a maximum duration
(``SessionExpiry``). Ended sessions are purged after the retention period, and
``forget_user`` removes everything a store holds about one user.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from agentkeel.models.types import ChatMessage, Usage
from agentkeel.resilience.ledger import BudgetLedger

__all__ = [
    "END_REASONS",
    "BudgetLedger",
    "EndReason",
    "FeedbackRecord",
    "LiveSessions",
    "QuotaWindowPurger",
    "RemovedCounts",
    "SessionExpiry",
    "SessionRecord",
    "SessionStore",
    "TurnRecord",
    "sorted_owners",
]

EndReason = Literal["deleted", "idle_timeout", "max_duration"]
END_REASONS: tuple[EndReason, ...] = ("deleted", "idle_timeout", "max_duration")

NEVER_S = 1e15
"""Stands for "no limit" in SQL comparisons (about 31 million years)."""


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
    end_reason: EndReason | None = None
    last_active_at: float | None = None
    """When the last turn was stored (``created_at`` before the first); idleness counts
    from here."""
    replica: str | None = None
    """The replica that created the session or stored its last turn."""
    organization: str | None = None
    """The organization of the principal that started it (``None``: none, or auth off);
    with ``user_id`` it says who owns the session (``Principal.owns``)."""

    @property
    def active_at(self) -> float:
        """``last_active_at``, or ``created_at`` for a record that has none."""
        return self.created_at if self.last_active_at is None else self.last_active_at


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
    replica: str | None = None
    """The replica that served the turn; also kept on the session as the last one."""


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    session_id: str
    score: float
    created_at: float
    turn: int | None = None
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class SessionExpiry:
    """When a session that is not deleted ends: ``idle_timeout_s`` after its last
    activity or ``max_duration_s`` after it started, whichever comes first (0: never).

    The end is the moment the rule tripped, not the moment someone noticed, so
    every replica computes the same ``ended_at`` for a session.

    >>> SessionExpiry(idle_timeout_s=1800, max_duration_s=0).end_of(session)
    (1700001800.0, 'idle_timeout')
    """

    idle_timeout_s: float = 0.0
    max_duration_s: float = 0.0

    @property
    def never(self) -> bool:
        """True when neither limit is set: sessions end only when deleted."""
        return self.idle_timeout_s <= 0 and self.max_duration_s <= 0

    @property
    def idle_s(self) -> float:
        """The idle timeout, with ``NEVER_S`` standing for none (for SQL)."""
        return self.idle_timeout_s if self.idle_timeout_s > 0 else NEVER_S

    @property
    def max_s(self) -> float:
        """The maximum duration, with ``NEVER_S`` standing for none (for SQL)."""
        return self.max_duration_s if self.max_duration_s > 0 else NEVER_S

    def end_of(self, session: SessionRecord) -> tuple[float, EndReason] | None:
        """When and why the session ends if nothing else happens; None when it never does."""
        idle_end = session.active_at + self.idle_s
        max_end = session.created_at + self.max_s
        if idle_end >= NEVER_S and max_end >= NEVER_S:
            return None
        if idle_end <= max_end:
            return idle_end, "idle_timeout"
        return max_end, "max_duration"

    def expired(self, session: SessionRecord, now: float) -> tuple[float, EndReason] | None:
        """The end of a session that is not ended yet but should be by ``now``."""
        if session.ended_at is not None:
            return None
        end = self.end_of(session)
        return end if end is not None and end[0] <= now else None


@dataclass(frozen=True, slots=True)
class LiveSessions:
    """How many sessions of one version, last served by one replica, are live
    (not ended, not idle, not past their maximum duration)."""

    version: str
    replica: str | None
    count: int
    started_before: int = 0
    """Of those, how many started before the ``started_before`` time asked about."""


@dataclass(frozen=True, slots=True)
class RemovedCounts:
    """What a purge or a forget removed (or, in a dry run, would remove).

    ``agent_ids`` are the agents whose sessions were among them, and ``owners`` the
    (agent, organization) pairs (organization ``None``: sessions without one), for the
    memory namespaces a forget also removes.
    """

    sessions: int = 0
    turns: int = 0
    feedback: int = 0
    budget_rows: int = 0
    usage_rows: int = 0
    """The user's rows of the usage table (a forget removes them; a purge never does)."""
    agent_ids: tuple[str, ...] = ()
    owners: tuple[tuple[str, str | None], ...] = ()

    def __add__(self, other: RemovedCounts) -> RemovedCounts:
        return RemovedCounts(
            sessions=self.sessions + other.sessions,
            turns=self.turns + other.turns,
            feedback=self.feedback + other.feedback,
            budget_rows=self.budget_rows + other.budget_rows,
            usage_rows=self.usage_rows + other.usage_rows,
            agent_ids=tuple(sorted({*self.agent_ids, *other.agent_ids})),
            owners=sorted_owners({*self.owners, *other.owners}),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "turns": self.turns,
            "feedback": self.feedback,
            "budget_rows": self.budget_rows,
            "usage_rows": self.usage_rows,
        }


def sorted_owners(
    pairs: Iterable[tuple[str, str | None]],
) -> tuple[tuple[str, str | None], ...]:
    """(agent, organization) pairs, each once, in a stable order (no organization first)."""
    return tuple(sorted(set(pairs), key=lambda pair: (pair[0], pair[1] is not None, pair[1] or "")))


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions and turns live. SQLite (embedded) or PostgreSQL (scale-out).

    ``append_turn`` is the commit point of a turn. It raises ``Conflict`` when a
    turn with that number exists or the session's head moved since the turn
    began (another replica or a rewind got there first), ``NotFound`` for an
    unknown session and ``SessionEnded`` for an ended one.

    ``end_session`` and ``end_expired_sessions`` return only the sessions that
    call ended (with ``ended_at`` and ``end_reason`` set): a session someone
    else ended first is not returned, so its end is recorded exactly once.
    ``purge_ended_sessions`` and ``forget_user`` remove one batch of at most
    ``limit`` sessions per call, with their turns, feedback, rewinds and budget
    rows; callers repeat until a batch removes no session. ``count_user_data`` and
    ``forget_user`` with an ``organization`` touch only that organization's user;
    without one, the user id in every organization (and without one).
    """

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def create_session(self, session: SessionRecord) -> None: ...

    async def get_session(self, session_id: str) -> SessionRecord | None: ...

    async def list_turns(self, session_id: str) -> list[TurnRecord]: ...

    async def context_turns(self, session_id: str) -> list[TurnRecord]: ...

    async def append_turn(self, turn: TurnRecord) -> None: ...

    async def end_session(
        self, session_id: str, ended_at: float, reason: EndReason = "deleted"
    ) -> SessionRecord | None: ...

    async def end_expired_session(
        self, session_id: str, expiry: SessionExpiry, *, now: float
    ) -> SessionRecord | None: ...

    async def end_expired_sessions(
        self, expiry: SessionExpiry, *, now: float, limit: int
    ) -> list[SessionRecord]: ...

    async def count_live_sessions(
        self, expiry: SessionExpiry, *, now: float, started_before: float | None = None
    ) -> list[LiveSessions]: ...

    async def count_purgeable(self, *, ended_before: float) -> RemovedCounts: ...

    async def purge_ended_sessions(self, *, ended_before: float, limit: int) -> RemovedCounts: ...

    async def count_user_data(
        self, user_id: str, *, organization: str | None = None
    ) -> RemovedCounts: ...

    async def forget_user(
        self, user_id: str, *, limit: int, organization: str | None = None
    ) -> RemovedCounts: ...

    async def rewind(self, session_id: str, to_turn: int) -> SessionRecord: ...

    async def add_feedback(self, feedback: FeedbackRecord) -> None: ...

    async def list_feedback(self, session_id: str) -> list[FeedbackRecord]: ...

    async def count_active_sessions(self) -> int: ...


@runtime_checkable
class QuotaWindowPurger(Protocol):
    """A store that keeps quota windows in its ``budgets`` rows (both built-in stores):
    the retention sweep deletes, in batches, the rows of day windows before
    ``day_before`` and month windows before ``month_before`` (window labels).

    ``purge_quota_windows`` deletes up to ``limit`` such rows with keys after ``after``,
    in key order, and returns how many and the batch's last key (the next batch's
    ``after``; ``None`` when none matched).
    """

    async def purge_quota_windows(
        self, *, day_before: str, month_before: str, after: str = "", limit: int
    ) -> tuple[int, str | None]: ...

    async def count_quota_windows(self, *, day_before: str, month_before: str) -> int: ...
