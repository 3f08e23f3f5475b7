"""What the SQLite and PostgreSQL session stores share: how values become rows and back.

Messages, tool calls and usage are stored as plain JSON dicts so both backends
(SQLite ``TEXT``, PostgreSQL ``JSONB``) hold the same shape. Default fields are
left out to keep rows small; decoding restores them, so
``decode_messages(encode_messages(m)) == m`` for every message. The errors both
backends raise are built here too, so an operator reads the same message
whichever database is behind the store.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from agentkeel.errors import Conflict, InvalidRequest, NotFound, SessionEnded
from agentkeel.models.types import ChatMessage, Role, ToolCall, Usage
from agentkeel.runtime.store import (
    END_REASONS,
    FeedbackRecord,
    SessionRecord,
    TurnRecord,
    sorted_owners,
)

__all__ = [
    "FEEDBACK_COLUMNS",
    "SCHEMA_VERSION",
    "SESSION_COLUMNS",
    "TURN_COLUMNS",
    "TurnCache",
    "append_refused",
    "decode_message",
    "decode_messages",
    "decode_tool_call",
    "decode_usage",
    "dumps",
    "encode_message",
    "encode_messages",
    "encode_tool_call",
    "encode_usage",
    "feedback_from_row",
    "feedback_session_missing",
    "loads",
    "open_session_from_row",
    "owners_from",
    "rewind_target_missing",
    "session_budget_keys",
    "session_ended",
    "session_exists",
    "session_from_row",
    "session_not_found",
    "session_values",
    "turn_exists",
    "turn_from_row",
    "turn_head_moved",
    "turn_values",
]

SCHEMA_VERSION = 4
"""Version of the session tables, kept in ``schema_version`` under component 'sessions'.

1: the first release. 2: sessions gain ``end_reason``, ``last_active_at`` and
``replica`` (turns gain ``replica``). 3: sessions gain ``organization`` (the
owner's, NULL for sessions started before it or with auth off). 4: the
``token_usage`` table (tokens and spend per UTC day, organization, user, agent,
model and key link; ``quota_codec.py``) and, on PostgreSQL, the function that
reserves on several budget keys at once. Both stores add what is missing to an
older file or database when they open it.
"""

_ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool"})

# Compact separators: rows are written on every turn and read back on every load.
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Serialize ``value`` to compact JSON text (UTF-8 kept as is)."""
    return _encoder.encode(value)


def loads(text: str | bytes) -> Any:
    """Parse JSON text written by :func:`dumps`."""
    return json.loads(text)


def encode_tool_call(call: ToolCall) -> dict[str, Any]:
    """A tool call as a plain dict: ``{"id", "name", "arguments"}``."""
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def decode_tool_call(data: Mapping[str, Any]) -> ToolCall:
    """The inverse of :func:`encode_tool_call`."""
    return ToolCall(id=data["id"], name=data["name"], arguments=dict(data.get("arguments") or {}))


def encode_message(message: ChatMessage) -> dict[str, Any]:
    """A chat message as a plain dict; empty tool calls and unset ids are omitted."""
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        data["tool_calls"] = [encode_tool_call(call) for call in message.tool_calls]
    if message.tool_call_id is not None:
        data["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        data["name"] = message.name
    return data


def decode_message(data: Mapping[str, Any]) -> ChatMessage:
    """The inverse of :func:`encode_message`.

    Raises ``ValueError`` for a role no model understands, which means the row was
    written by something other than agentkeel.
    """
    role = data["role"]
    if role not in _ROLES:
        raise ValueError(
            f"stored message has role {role!r}; expected one of {sorted(_ROLES)}. "
            "The row was not written by agentkeel's session store."
        )
    return ChatMessage(
        role=cast(Role, role),
        content=data.get("content", ""),
        tool_calls=tuple(decode_tool_call(call) for call in data.get("tool_calls", ())),
        tool_call_id=data.get("tool_call_id"),
        name=data.get("name"),
    )


def encode_messages(messages: Iterable[ChatMessage]) -> list[dict[str, Any]]:
    """Encode a sequence of messages, keeping their order."""
    return [encode_message(message) for message in messages]


def decode_messages(data: Iterable[Mapping[str, Any]]) -> list[ChatMessage]:
    """Decode a sequence of messages, keeping their order."""
    return [decode_message(item) for item in data]


def encode_usage(usage: Usage) -> dict[str, int]:
    """Token usage as ``{"input_tokens", "output_tokens"}``."""
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}


def decode_usage(data: Mapping[str, Any]) -> Usage:
    """The inverse of :func:`encode_usage`; missing counts read as 0."""
    return Usage(
        input_tokens=int(data.get("input_tokens", 0)),
        output_tokens=int(data.get("output_tokens", 0)),
    )


# --- Rows -------------------------------------------------------------------
# Both backends select columns in these orders and share the decoding below;
# ``parse`` turns a stored JSON column into Python values (SQLite returns text,
# psycopg has already decoded JSONB).

JsonParser = Callable[[Any], Any]

SESSION_COLUMNS = (
    "session_id, user_id, agent_id, version, created_at, metadata, head, turn_count, ended_at,"
    " end_reason, last_active_at, replica, organization"
)
TURN_COLUMNS = (
    "session_id, number, parent, content, reply, messages, usage, tool_calls,"
    " started_at, completed_at, version, correlation_id, replica"
)
FEEDBACK_COLUMNS = "session_id, score, created_at, turn, comment"


def session_from_row(row: Sequence[Any], *, parse: JsonParser) -> SessionRecord:
    """A ``SessionRecord`` from a row selected with :data:`SESSION_COLUMNS`."""
    return SessionRecord(
        session_id=row[0],
        user_id=row[1],
        agent_id=row[2],
        version=row[3],
        created_at=row[4],
        metadata=parse(row[5]),
        head=row[6],
        turn_count=row[7],
        ended_at=row[8],
        end_reason=row[9] if row[9] in END_REASONS else None,
        last_active_at=row[10],
        replica=row[11],
        organization=row[12],
    )


def session_values(session: SessionRecord, metadata: Any) -> tuple[Any, ...]:
    """A session as ``SESSION_COLUMNS`` values; ``metadata`` is its encoded JSON column."""
    return (
        session.session_id,
        session.user_id,
        session.agent_id,
        session.version,
        session.created_at,
        metadata,
        session.head,
        session.turn_count,
        session.ended_at,
        session.end_reason,
        session.active_at,
        session.replica,
        session.organization,
    )


def turn_values(turn: TurnRecord) -> tuple[Any, ...]:
    """A turn as ``TURN_COLUMNS`` values, JSON columns as text; ``turn_from_row`` reads it back."""
    return (
        turn.session_id,
        turn.number,
        turn.parent,
        turn.content,
        turn.reply,
        dumps(encode_messages(turn.messages)),
        dumps(encode_usage(turn.usage)),
        dumps([dict(call) for call in turn.tool_calls]),
        turn.started_at,
        turn.completed_at,
        turn.version,
        turn.correlation_id,
        turn.replica,
    )


def turn_from_row(row: Sequence[Any], *, parse: JsonParser) -> TurnRecord:
    """A ``TurnRecord`` from a row selected with :data:`TURN_COLUMNS`."""
    return TurnRecord(
        session_id=row[0],
        number=row[1],
        parent=row[2],
        content=row[3],
        reply=row[4],
        # Tuples: records may be shared through a TurnCache, so keep them read-only.
        messages=tuple(decode_messages(parse(row[5]))),
        usage=decode_usage(parse(row[6])),
        tool_calls=tuple(parse(row[7])),
        started_at=row[8],
        completed_at=row[9],
        version=row[10],
        correlation_id=row[11],
        replica=row[12],
    )


class TurnCache:
    """Decoded turns by (session id, number); the least recently used go first.

    Decoding a turn's messages costs far more than reading its row, and the
    context of every turn is every earlier turn. Stored turns never change
    (append-only, one row per number), so a cached turn is never stale, whichever
    replica wrote it. Records handed out are shared: treat them as read-only.
    Safe to use from several threads.
    """

    def __init__(self, *, max_turns: int) -> None:
        self._max_turns = max_turns
        self._turns: OrderedDict[tuple[str, int], TurnRecord] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._turns)

    def get_many(self, session_id: str, numbers: Iterable[int]) -> dict[int, TurnRecord]:
        """The cached turns among ``numbers``, by number."""
        found: dict[int, TurnRecord] = {}
        with self._lock:
            for number in numbers:
                key = (session_id, number)
                turn = self._turns.get(key)
                if turn is not None:
                    self._turns.move_to_end(key)
                    found[number] = turn
        return found

    def chain(self, session_id: str, head: int) -> list[TurnRecord] | None:
        """The context ending at ``head`` (0: none), oldest first, following each
        turn's parent, or None when a turn of it is not cached.

        Parents never change once stored, so a walk from a head read at any
        moment gives the same chain a single query would have."""
        chain: list[TurnRecord] = []
        number = head
        with self._lock:
            while number > 0:
                key = (session_id, number)
                turn = self._turns.get(key)
                if turn is None:
                    return None
                self._turns.move_to_end(key)
                chain.append(turn)
                if len(chain) > len(self._turns):
                    return None  # a parent cycle; let the database answer
                number = turn.parent
        chain.reverse()
        return chain

    def discard_sessions(self, session_ids: Iterable[str]) -> None:
        """Forget every cached turn of these sessions (they were purged or forgotten)."""
        gone = set(session_ids)
        if not gone:
            return
        with self._lock:
            for key in [key for key in self._turns if key[0] in gone]:
                del self._turns[key]

    def put(self, turn: TurnRecord) -> None:
        """Remember a stored turn, dropping the least recently used beyond the limit."""
        if self._max_turns <= 0:
            return
        key = (turn.session_id, turn.number)
        with self._lock:
            self._turns[key] = turn
            self._turns.move_to_end(key)
            while len(self._turns) > self._max_turns:
                self._turns.popitem(last=False)


def feedback_from_row(row: Sequence[Any]) -> FeedbackRecord:
    """A ``FeedbackRecord`` from a row selected with :data:`FEEDBACK_COLUMNS`."""
    return FeedbackRecord(
        session_id=row[0], score=row[1], created_at=row[2], turn=row[3], comment=row[4]
    )


# --- Errors -----------------------------------------------------------------


def session_ended(session_id: str, ended_at: float | None, reason: str | None) -> SessionEnded:
    """The session has ended and so is closed to changes."""
    when = "" if ended_at is None else f" at {_iso(ended_at)}"
    why = f" ({reason})" if reason else ""
    return SessionEnded(
        f"session {session_id!r} ended{when}{why} and takes no more turns; start a new session"
    )


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")


def session_not_found(session_id: str) -> NotFound:
    """The session is unknown."""
    return NotFound(
        f"session {session_id!r} does not exist in the session store; "
        "check the id or start a new session",
        code="session_not_found",
    )


def open_session_from_row(
    row: Sequence[Any] | None, session_id: str, *, parse: JsonParser
) -> SessionRecord:
    """A ``SESSION_COLUMNS`` row as a session that takes changes; ``NotFound`` if the row
    is missing, ``SessionEnded`` if the session has ended."""
    if row is None:
        raise session_not_found(session_id)
    if row[8] is not None:
        raise session_ended(session_id, row[8], row[9])
    return session_from_row(row, parse=parse)


def append_refused(
    turn: TurnRecord, row: Sequence[Any] | None
) -> NotFound | SessionEnded | Conflict:
    """Why a turn was not appended, given the session's ``(head, ended_at, end_reason)``
    row (None if there is no such session): it is unknown or ended, or its head moved."""
    if row is None:
        return session_not_found(turn.session_id)
    if row[1] is not None:
        return session_ended(turn.session_id, row[1], row[2])
    return turn_head_moved(turn, row[0])


def feedback_session_missing(session_id: str) -> NotFound:
    """Feedback names a session the store does not hold."""
    return NotFound(
        f"cannot add feedback: session {session_id!r} does not exist",
        code="session_not_found",
    )


def session_exists(session_id: str) -> Conflict:
    """A session with this id is already stored."""
    return Conflict(
        f"session {session_id!r} already exists; session ids must be unique, mint a new one",
        code="session_exists",
    )


def turn_head_moved(turn: TurnRecord, head: int) -> Conflict:
    """The session's head moved since the turn began: someone else committed first."""
    return Conflict(
        f"turn {turn.number} of session {turn.session_id!r} was not stored: it continued "
        f"turn {turn.parent} but the session's head is now turn {head} (another replica or "
        "a rewind committed first). Reload the session and send the message again.",
        code="turn_conflict",
    )


def turn_exists(turn: TurnRecord) -> Conflict:
    """A turn with this number is already stored for the session."""
    return Conflict(
        f"turn {turn.number} of session {turn.session_id!r} already exists (another replica "
        "committed it first). Reload the session and send the message again.",
        code="turn_conflict",
    )


def rewind_target_missing(session_id: str, to_turn: int, turn_count: int) -> InvalidRequest:
    """``rewind`` was asked for a turn the session does not have."""
    return InvalidRequest(
        f"cannot rewind session {session_id!r} to turn {to_turn}: it has no such turn "
        f"({turn_count} stored). Rewind to 0 to start over or to one of its stored turns.",
        code="invalid_rewind",
    )


def session_budget_keys(session_ids: Iterable[str]) -> list[str]:
    """The budget-ledger keys of these sessions, as ``TokenBudget.session_key`` makes them."""
    return [f"session:{session_id}" for session_id in session_ids]


def owners_from(pairs: Iterable[Any]) -> tuple[tuple[str, str | None], ...]:
    """(agent, organization) pairs from rows or decoded JSON arrays (``[agent, org]``)."""
    out: list[tuple[str, str | None]] = []
    for pair in pairs:
        if isinstance(pair, str):  # SQLite may hand back the inner arrays as JSON text
            pair = json.loads(pair)
        agent, organization = pair[0], pair[1]
        out.append((str(agent), None if organization is None else str(organization)))
    return sorted_owners(out)
