"""The scale-out session store: PostgreSQL, shared by every replica of every version.

Same tables and semantics as the SQLite store, JSON columns as ``JSONB``.
Connections come from a ``psycopg_pool.AsyncConnectionPool`` in autocommit
mode, so the hot paths are single statements (one round trip each):

- ``append_turn`` is one statement whose first part moves the session's head
  only if it still equals the turn's parent, and whose second part inserts the
  turn only if the head moved. PostgreSQL locks the session row for the update
  and re-checks the condition after a concurrent commit, so two replicas can
  never both commit turn N; a duplicate number aborts the whole statement.
- ``reserve`` is one call of ``keel_reserve_tokens``, a function the schema
  upgrade creates: it locks the call's budget rows in key order, checks every
  limit and adds the reservation to all of them or to none, in one round trip
  (a refusal reads each key's used tokens in a second one).

psycopg's errors become agentkeel's at this boundary: a database that is down
or unreachable is ``Unavailable`` (code ``store_unavailable``) naming the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.resilience.ledger import Hold, ReserveResult, check_amounts
from agentkeel.runtime.store import (
    EndReason,
    FeedbackRecord,
    LiveSessions,
    RemovedCounts,
    SessionExpiry,
    SessionRecord,
    TurnRecord,
)
from agentkeel.runtime.stores import codec, quota_codec
from agentkeel.runtime.stores import postgres_quotas as quotas
from agentkeel.runtime.usage import DailyUsage, UsageRecord, UsageTotals, UserUsage
from agentkeel.storage.postgres import Connection, PostgresPool, check_schema_version

__all__ = ["PostgresSessionStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    version TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    metadata JSONB NOT NULL,
    head INTEGER NOT NULL DEFAULT 0,
    turn_count INTEGER NOT NULL DEFAULT 0,
    ended_at DOUBLE PRECISION,
    end_reason TEXT,
    last_active_at DOUBLE PRECISION,
    replica TEXT,
    organization TEXT
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions (session_id),
    number INTEGER NOT NULL,
    parent INTEGER NOT NULL,
    content TEXT NOT NULL,
    reply TEXT NOT NULL,
    messages JSONB NOT NULL,
    usage JSONB NOT NULL,
    tool_calls JSONB NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    completed_at DOUBLE PRECISION NOT NULL,
    version TEXT NOT NULL,
    correlation_id TEXT,
    replica TEXT,
    PRIMARY KEY (session_id, number)
);
CREATE TABLE IF NOT EXISTS session_rewinds (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (session_id),
    from_head INTEGER NOT NULL,
    to_turn INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (session_id),
    turn INTEGER,
    score DOUBLE PRECISION NOT NULL,
    comment TEXT,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS budgets (
    key TEXT PRIMARY KEY,
    used BIGINT NOT NULL DEFAULT 0,
    reserved BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS token_usage (
    day TEXT NOT NULL,
    organization TEXT NOT NULL,
    user_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    model TEXT NOT NULL,
    key_link TEXT NOT NULL,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    calls BIGINT NOT NULL DEFAULT 0,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (day, organization, user_id, agent_id, model, key_link)
);
"""

# Schema versions 2 (the lifecycle), 3 (the owner's organization) and 4 (usage, the
# reservation function) on tables an earlier release created, then the indexes the
# sweeper, the live count, the purge, forget and the usage queries read through.
_UPGRADE = """
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS end_reason TEXT,
    ADD COLUMN IF NOT EXISTS last_active_at DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS replica TEXT,
    ADD COLUMN IF NOT EXISTS organization TEXT;
ALTER TABLE turns ADD COLUMN IF NOT EXISTS replica TEXT;
UPDATE sessions SET last_active_at = coalesce(
    (SELECT max(t.completed_at) FROM turns AS t WHERE t.session_id = sessions.session_id),
    created_at
) WHERE last_active_at IS NULL;
CREATE INDEX IF NOT EXISTS sessions_active_idx ON sessions (session_id) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS sessions_idle_idx ON sessions (last_active_at) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS sessions_age_idx ON sessions (created_at) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS sessions_ended_idx ON sessions (ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS sessions_user_idx ON sessions (user_id);
CREATE INDEX IF NOT EXISTS session_rewinds_session_idx ON session_rewinds (session_id);
CREATE INDEX IF NOT EXISTS feedback_session_idx ON feedback (session_id);
CREATE INDEX IF NOT EXISTS token_usage_user_idx ON token_usage (user_id, organization, day);
"""

_END_COLUMNS = """
ended_at = LEAST(last_active_at + %(idle_s)s, created_at + %(max_s)s),
end_reason = CASE WHEN last_active_at + %(idle_s)s <= created_at + %(max_s)s
    THEN 'idle_timeout' ELSE 'max_duration' END
"""
_EXPIRED = "(last_active_at <= %(idle_cutoff)s OR created_at <= %(max_cutoff)s)"

# SKIP LOCKED: replicas sweeping together take different sessions; the outer
# ``ended_at IS NULL`` is re-checked on the locked row, so each end is recorded once.
_END_EXPIRED_SQL = f"""
UPDATE sessions SET {_END_COLUMNS}
WHERE session_id IN (
    SELECT session_id FROM sessions WHERE ended_at IS NULL AND {_EXPIRED}
    LIMIT %(limit)s FOR UPDATE SKIP LOCKED
) AND ended_at IS NULL
RETURNING {codec.SESSION_COLUMNS}
"""

_END_ONE_EXPIRED_SQL = f"""
UPDATE sessions SET {_END_COLUMNS}
WHERE session_id = %(sid)s AND ended_at IS NULL AND {_EXPIRED}
RETURNING {codec.SESSION_COLUMNS}
"""

_LIVE_SQL = """
SELECT version, replica, count(*),
    sum(CASE WHEN created_at < %(started_before)s THEN 1 ELSE 0 END)
FROM sessions
WHERE ended_at IS NULL AND last_active_at > %(idle_cutoff)s AND created_at > %(max_cutoff)s
GROUP BY version, replica ORDER BY version, replica
"""

_COUNT_SQL = """
WITH chosen AS ({chosen})
SELECT
    (SELECT count(*) FROM chosen),
    (SELECT count(*) FROM turns WHERE session_id IN (SELECT session_id FROM chosen)),
    (SELECT count(*) FROM feedback WHERE session_id IN (SELECT session_id FROM chosen)),
    (SELECT count(*) FROM budgets WHERE key IN (SELECT 'session:' || session_id FROM chosen)),
    (SELECT coalesce(jsonb_agg(DISTINCT jsonb_build_array(agent_id, organization)), '[]')
        FROM chosen)
"""
_PURGEABLE = (
    "SELECT session_id, agent_id, organization FROM sessions WHERE ended_at < %(ended_before)s"
)
_OF_USER = "SELECT session_id, agent_id, organization FROM sessions WHERE user_id = %(user_id)s"
_OF_ORG_USER = f"{_OF_USER} AND organization = %(organization)s"

_APPEND_TURN_SQL = f"""
WITH advanced AS (
    UPDATE sessions SET head = %(number)s, turn_count = turn_count + 1,
        last_active_at = %(completed_at)s, replica = %(replica)s::text
    WHERE session_id = %(session_id)s AND head = %(parent)s AND ended_at IS NULL
    RETURNING session_id
)
INSERT INTO turns ({codec.TURN_COLUMNS})
SELECT session_id, %(number)s, %(parent)s, %(content)s::text, %(reply)s::text,
    %(messages)s::jsonb, %(usage)s::jsonb, %(tool_calls)s::jsonb, %(started_at)s, %(completed_at)s,
    %(version)s::text, %(correlation_id)s::text, %(replica)s::text
FROM advanced
RETURNING number
"""

_CONTEXT_NUMBERS_SQL = """
WITH RECURSIVE chain (number, depth) AS (
    SELECT head, 0 FROM sessions WHERE session_id = %(sid)s AND head > 0
    UNION ALL
    SELECT t.parent, chain.depth + 1 FROM turns AS t JOIN chain
        ON t.session_id = %(sid)s AND t.number = chain.number
    WHERE t.parent > 0
)
SELECT number FROM chain ORDER BY depth DESC
"""

_TURNS_BY_NUMBER_SQL = f"""
SELECT {codec.TURN_COLUMNS} FROM turns WHERE session_id = %s AND number = ANY(%s::integer[])
"""

_TURN_PARAMS = tuple(name.strip() for name in codec.TURN_COLUMNS.split(","))


class PostgresSessionStore:
    """Sessions, turns, feedback, token budgets and usage in PostgreSQL.

    Any number of replicas may share the database; ``append_turn`` and
    ``reserve`` stay correct across them. Also implements ``BudgetLedger``,
    ``UsageRecorder`` and ``UsageReader``.
    The URL is a libpq URL; put the schema in it to keep the tables apart:
    ``postgresql://keel@db/keel?options=-csearch_path%3Dsessions``.

    The pool opens connections on demand up to ``pool_size``;
    ``connect_timeout_s`` bounds a new connection and ``acquire_timeout_s`` the
    wait for a free one, after which calls fail with ``Unavailable``.
    ``cache_turns`` bounds the cache of decoded turns (0 turns it off);
    ``clock`` stamps rewind events. Statements are prepared after a few uses, so
    behind PgBouncer use session pooling (or PgBouncer >= 1.21 with prepared
    statement support).

    >>> store = PostgresSessionStore(url="postgresql://keel@db:5432/keel", pool_size=10)
    >>> await store.open()
    """

    def __init__(
        self,
        *,
        url: str,
        pool_size: int = 10,
        connect_timeout_s: float = 5.0,
        acquire_timeout_s: float = 10.0,
        cache_turns: int = 4096,
        clock: Clock | None = None,
    ) -> None:
        self._db = PostgresPool(
            url=url,
            label="PostgreSQL session store",
            tables="session",
            url_setting="store.url",
            pool_size_setting="store.pool_size",
            pool_size=pool_size,
            connect_timeout_s=connect_timeout_s,
            acquire_timeout_s=acquire_timeout_s,
            application_name="agentkeel",
            data_hint="Text cannot contain NUL characters and turn numbers must fit in 32 bits.",
        )
        self._clock: Clock = clock or SystemClock()
        self._cache = codec.TurnCache(max_turns=cache_turns)

    @property
    def where(self) -> str:
        """host:port/database, for logs and error messages (never the password)."""
        return self._db.where

    # --- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        """Connect, create the tables if absent, and start the connection pool."""
        await self._db.open(
            migrate=self._migrate,
            lock_name="agentkeel:sessions:schema",
            pool_name="agentkeel-sessions",
        )

    async def aclose(self) -> None:
        """Close every pooled connection; safe to call twice."""
        await self._db.aclose()

    # --- sessions -----------------------------------------------------------

    async def create_session(self, session: SessionRecord) -> None:
        """Store a new session; ``Conflict`` (session_exists) if the id is taken."""
        async with self._db.connection() as conn:
            try:
                await conn.execute(
                    f"INSERT INTO sessions ({codec.SESSION_COLUMNS})"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    codec.session_values(session, _jsonb(dict(session.metadata))),
                )
            except psycopg.errors.UniqueViolation as exc:
                raise codec.session_exists(session.session_id) from exc

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """The session, or None if unknown."""
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {codec.SESSION_COLUMNS} FROM sessions WHERE session_id = %s",
                (session_id,),
            )
            row = await cursor.fetchone()
        return None if row is None else codec.session_from_row(row, parse=_parsed)

    async def end_session(
        self, session_id: str, ended_at: float, reason: EndReason = "deleted"
    ) -> SessionRecord | None:
        """Mark the session ended; the ended record, or None if it was unknown or
        already ended (someone else recorded the end)."""
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "UPDATE sessions SET ended_at = %s, end_reason = %s"
                f" WHERE session_id = %s AND ended_at IS NULL RETURNING {codec.SESSION_COLUMNS}",
                (ended_at, reason, session_id),
            )
            row = await cursor.fetchone()
        return None if row is None else codec.session_from_row(row, parse=_parsed)

    async def end_expired_session(
        self, session_id: str, expiry: SessionExpiry, *, now: float
    ) -> SessionRecord | None:
        """End the session if ``expiry`` says it ended by ``now``; the ended record, or
        None when it is live, unknown or already ended."""
        params = {**_expiry_params(expiry, now), "sid": session_id}
        async with self._db.connection() as conn:
            cursor = await conn.execute(_END_ONE_EXPIRED_SQL, params)
            row = await cursor.fetchone()
        return None if row is None else codec.session_from_row(row, parse=_parsed)

    async def end_expired_sessions(
        self, expiry: SessionExpiry, *, now: float, limit: int
    ) -> list[SessionRecord]:
        """End up to ``limit`` sessions that ``expiry`` says ended by ``now``; the ones
        this call ended."""
        params = {**_expiry_params(expiry, now), "limit": limit}
        async with self._db.connection() as conn:
            cursor = await conn.execute(_END_EXPIRED_SQL, params)
            rows = await cursor.fetchall()
        return [codec.session_from_row(row, parse=_parsed) for row in rows]

    async def count_active_sessions(self) -> int:
        """Sessions not yet ended (idle ones the sweeper has not ended yet included)."""
        async with self._db.connection() as conn:
            cursor = await conn.execute("SELECT count(*) FROM sessions WHERE ended_at IS NULL")
            row = await cursor.fetchone()
        return 0 if row is None else int(row[0])

    async def count_live_sessions(
        self, expiry: SessionExpiry, *, now: float, started_before: float | None = None
    ) -> list[LiveSessions]:
        """Sessions neither ended nor expired at ``now``, by version and last replica;
        with ``started_before``, how many of them started before that time."""
        async with self._db.connection() as conn:
            params = {
                **_expiry_params(expiry, now),
                "started_before": float("-inf") if started_before is None else started_before,
            }
            cursor = await conn.execute(_LIVE_SQL, params)
            rows = await cursor.fetchall()
        return [
            LiveSessions(
                version=row[0], replica=row[1], count=int(row[2]), started_before=int(row[3])
            )
            for row in rows
        ]

    # --- retention ----------------------------------------------------------

    async def count_purgeable(self, *, ended_before: float) -> RemovedCounts:
        """What ``purge_ended_sessions`` would remove, all batches together."""
        counts = await self._count(_PURGEABLE, {"ended_before": ended_before})
        return dataclasses.replace(counts, agent_ids=(), owners=())

    async def purge_ended_sessions(self, *, ended_before: float, limit: int) -> RemovedCounts:
        """Remove up to ``limit`` sessions that ended before ``ended_before``, with their
        turns, feedback, rewinds and session budget rows, in one transaction."""
        async with self._db.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "SELECT session_id, agent_id, organization FROM sessions WHERE ended_at < %s"
                " ORDER BY ended_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (ended_before, limit),
            )
            rows = await cursor.fetchall()
            removed = await _remove_sessions(conn, rows)
        self._cache.discard_sessions(row[0] for row in rows)
        return dataclasses.replace(removed, agent_ids=(), owners=())

    async def purge_quota_windows(
        self, *, day_before: str, month_before: str, after: str = "", limit: int
    ) -> tuple[int, str | None]:
        """Delete up to ``limit`` quota rows (``user:``, ``org:``, ``orgquota:``) of day
        windows before ``day_before`` and month windows before ``month_before`` (labels),
        keys after ``after`` in key order, in one statement: how many, and the last key
        (pass it as ``after`` for the next batch; ``None`` when there were none)."""
        params = quota_codec.ended_window_params(
            day_before=day_before, month_before=month_before, after=after, limit=limit
        )
        async with self._db.connection() as conn:
            cursor = await conn.execute(quotas.PURGE_ENDED_WINDOWS_SQL, params)
            row = await cursor.fetchone()
        return (0, None) if row is None else (int(row[0]), row[1])

    async def count_quota_windows(self, *, day_before: str, month_before: str) -> int:
        """How many rows ``purge_quota_windows`` would delete, all batches together."""
        params = quota_codec.ended_window_params(
            day_before=day_before, month_before=month_before, after="", limit=0
        )
        async with self._db.connection() as conn:
            cursor = await conn.execute(quotas.COUNT_ENDED_WINDOWS_SQL, params)
            row = await cursor.fetchone()
        return 0 if row is None else int(row[0])

    async def count_user_data(
        self, user_id: str, *, organization: str | None = None
    ) -> RemovedCounts:
        """What ``forget_user`` would remove, all batches together."""
        params = _user_params(user_id, organization)
        counts = await self._count(_OF_USER if organization is None else _OF_ORG_USER, params)
        async with self._db.connection() as conn:
            of_budgets = quotas.user_budgets_where(organization)
            of_usage = quotas.user_usage_where(organization)
            cursor = await conn.execute(
                f"SELECT (SELECT count(*) FROM budgets WHERE {of_budgets}),"
                f" (SELECT count(*) FROM token_usage WHERE {of_usage})",
                params,
            )
            row = await cursor.fetchone()
        quota, usage = (0, 0) if row is None else (int(row[0]), int(row[1]))
        return dataclasses.replace(counts, budget_rows=counts.budget_rows + quota, usage_rows=usage)

    async def forget_user(
        self, user_id: str, *, limit: int, organization: str | None = None
    ) -> RemovedCounts:
        """Remove up to ``limit`` of the user's sessions (ended or not) with their turns,
        feedback, rewinds and budget rows, and the user's quota and usage rows; only in
        ``organization`` when given, else in every organization."""
        params = _user_params(user_id, organization)
        chosen = _OF_USER if organization is None else _OF_ORG_USER
        async with self._db.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                f"{chosen} LIMIT %(limit)s FOR UPDATE", {**params, "limit": limit}
            )
            rows = await cursor.fetchall()
            removed = await _remove_sessions(conn, rows)
            cursor = await conn.execute(
                f"DELETE FROM budgets WHERE {quotas.user_budgets_where(organization)}", params
            )
            quota = cursor.rowcount
            cursor = await conn.execute(
                f"DELETE FROM token_usage WHERE {quotas.user_usage_where(organization)}", params
            )
            usage = cursor.rowcount
        self._cache.discard_sessions(row[0] for row in rows)
        return dataclasses.replace(
            removed, budget_rows=removed.budget_rows + quota, usage_rows=usage
        )

    async def _count(self, chosen: str, params: dict[str, Any]) -> RemovedCounts:
        async with self._db.connection() as conn:
            cursor = await conn.execute(_COUNT_SQL.format(chosen=chosen), params)
            row = await cursor.fetchone()
        assert row is not None
        owners = codec.owners_from(row[4])
        return RemovedCounts(
            sessions=int(row[0]),
            turns=int(row[1]),
            feedback=int(row[2]),
            budget_rows=int(row[3]),
            agent_ids=tuple(sorted({agent for agent, _ in owners})),
            owners=owners,
        )

    # --- turns --------------------------------------------------------------

    async def list_turns(self, session_id: str) -> list[TurnRecord]:
        """Every stored turn of the session, by number (rewound ones included)."""
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {codec.TURN_COLUMNS} FROM turns WHERE session_id = %s ORDER BY number",
                (session_id,),
            )
            rows = await cursor.fetchall()
        return [codec.turn_from_row(row, parse=_parsed) for row in rows]

    async def context_turns(self, session_id: str) -> list[TurnRecord]:
        """The turns from the head back through each parent, oldest first."""
        async with self._db.connection() as conn:
            cursor = await conn.execute(_CONTEXT_NUMBERS_SQL, {"sid": session_id})
            numbers = [row[0] for row in await cursor.fetchall()]
            found = self._cache.get_many(session_id, numbers)
            missing = [number for number in numbers if number not in found]
            if missing:
                # Rows never change once written, so reading them apart from the chain is safe.
                cursor = await conn.execute(_TURNS_BY_NUMBER_SQL, (session_id, missing))
                for row in await cursor.fetchall():
                    turn = codec.turn_from_row(row, parse=_parsed)
                    found[turn.number] = turn
                    self._cache.put(turn)
        return [found[number] for number in numbers]

    async def append_turn(self, turn: TurnRecord) -> None:
        """Commit a turn: insert it, move the head to it, count it — one statement.

        Raises ``Conflict`` (turn_conflict) if the number is taken or the head is no
        longer ``turn.parent``; ``NotFound`` (session_not_found) if the session is
        unknown or ended.
        """
        values = codec.turn_values(turn)
        params = dict(zip(_TURN_PARAMS, values, strict=True))
        async with self._db.connection() as conn:
            try:
                cursor = await conn.execute(_APPEND_TURN_SQL, params)
            except psycopg.errors.UniqueViolation as exc:
                raise codec.turn_exists(turn) from exc
            if await cursor.fetchone() is not None:
                # Cache what a later read would decode, so the next context is ready.
                self._cache.put(codec.turn_from_row(values, parse=codec.loads))
                return
            # Nothing written: find out why, for the caller and the operator.
            cursor = await conn.execute(
                "SELECT head, ended_at, end_reason FROM sessions WHERE session_id = %s",
                (turn.session_id,),
            )
            row = await cursor.fetchone()
        raise codec.append_refused(turn, row)

    async def rewind(self, session_id: str, to_turn: int) -> SessionRecord:
        """Move the head back to ``to_turn`` (0 or a stored turn) and record the rewind."""
        now = self._clock.time()
        async with self._db.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                f"SELECT {codec.SESSION_COLUMNS} FROM sessions WHERE session_id = %s FOR UPDATE",
                (session_id,),
            )
            row = await cursor.fetchone()
            session = codec.open_session_from_row(row, session_id, parse=_parsed)
            if to_turn != 0:
                cursor = await conn.execute(
                    "SELECT 1 FROM turns WHERE session_id = %s AND number = %s",
                    (session_id, to_turn),
                )
                if to_turn < 0 or await cursor.fetchone() is None:
                    raise codec.rewind_target_missing(session_id, to_turn, session.turn_count)
            await conn.execute(
                "UPDATE sessions SET head = %s WHERE session_id = %s", (to_turn, session_id)
            )
            await conn.execute(
                "INSERT INTO session_rewinds (session_id, from_head, to_turn, created_at)"
                " VALUES (%s, %s, %s, %s)",
                (session_id, session.head, to_turn, now),
            )
        return dataclasses.replace(session, head=to_turn)

    # --- feedback -----------------------------------------------------------

    async def add_feedback(self, feedback: FeedbackRecord) -> None:
        """Append a feedback row; ``NotFound`` if the session is unknown."""
        async with self._db.connection() as conn:
            try:
                await conn.execute(
                    f"INSERT INTO feedback ({codec.FEEDBACK_COLUMNS}) VALUES (%s, %s, %s, %s, %s)",
                    (
                        feedback.session_id,
                        feedback.score,
                        feedback.created_at,
                        feedback.turn,
                        feedback.comment,
                    ),
                )
            except psycopg.errors.ForeignKeyViolation as exc:
                raise codec.feedback_session_missing(feedback.session_id) from exc

    async def list_feedback(self, session_id: str) -> list[FeedbackRecord]:
        """The session's feedback in the order it was given."""
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {codec.FEEDBACK_COLUMNS} FROM feedback WHERE session_id = %s ORDER BY id",
                (session_id,),
            )
            rows = await cursor.fetchall()
        return [codec.feedback_from_row(row) for row in rows]

    # --- budgets ------------------------------------------------------------

    async def reserve(self, holds: Sequence[Hold], amount: int) -> ReserveResult:
        """Reserve ``amount`` tokens on every hold's key if each stays within its limit,
        or on none: one call of ``keel_reserve_tokens`` (see above), which locks the rows,
        so concurrent replicas never reserve past a limit."""
        check_amounts([h.key for h in holds], amount=amount)
        if not holds:
            return ReserveResult(refused=None, committed=())
        keys = [hold.key for hold in holds]
        limits = [hold.limit for hold in holds]
        async with self._db.connection() as conn:
            cursor = await conn.execute(quotas.RESERVE_SQL, (keys, limits, amount))
            row = await cursor.fetchone()
            assert row is not None
            refused, *committed = (int(value) for value in row[0])
            if not refused:
                return ReserveResult(refused=None, committed=tuple(c + amount for c in committed))
            # Refused (rare): one more read tells settled tokens from those calls in flight
            # hold. Used only grows, so a read after the check is never staler than it.
            cursor = await conn.execute(quotas.USED_SQL, (keys,))
            used = dict(await cursor.fetchall())
        return ReserveResult(
            refused=refused - 1,
            committed=tuple(committed),
            used=tuple(int(used.get(key, 0)) for key in keys),
        )

    async def settle(self, keys: Sequence[str], reserved: int, used: int) -> None:
        """Release ``reserved`` tokens on each key (never below 0) and record ``used``."""
        check_amounts(keys, reserved=reserved, used=used)
        async with self._db.connection() as conn:
            await conn.execute(
                quotas.SETTLE_SQL, {"keys": list(keys), "reserved": reserved, "used": used}
            )

    async def used(self, key: str) -> int:
        """Tokens recorded as used under ``key`` (0 if never seen)."""
        async with self._db.connection() as conn:
            cursor = await conn.execute("SELECT used FROM budgets WHERE key = %s", (key,))
            row = await cursor.fetchone()
        return 0 if row is None else int(row[0])

    # --- usage --------------------------------------------------------------

    async def record_usage(self, record: UsageRecord) -> None:
        """Add one settled call to its usage row (day, organization, user, agent, model,
        key link)."""
        async with self._db.connection() as conn:
            await conn.execute(quotas.USAGE.record, quota_codec.usage_values(record))

    async def top_users(
        self, *, first_day: str, last_day: str, limit: int, organization: str | None = None
    ) -> list[UserUsage]:
        """The ``limit`` users with the most tokens from ``first_day`` to ``last_day``
        (UTC days, both included), most first; only ``organization``'s when given."""
        sql, params = quotas.USAGE.top_users_query(
            first_day=first_day, last_day=last_day, limit=limit, organization=organization
        )
        async with self._db.connection() as conn:
            cursor = await conn.execute(sql, params)
            rows = await cursor.fetchall()
        return [quota_codec.user_usage_from_row(row) for row in rows]

    async def user_usage(
        self, user_id: str, *, organization: str | None, first_day: str, last_day: str
    ) -> list[DailyUsage]:
        """The user's usage by UTC day and model, oldest first."""
        params = {
            "user_id": user_id,
            "organization": quota_codec.org_column(organization),
            "first_day": first_day,
            "last_day": last_day,
        }
        async with self._db.connection() as conn:
            cursor = await conn.execute(quotas.USAGE.user, params)
            rows = await cursor.fetchall()
        return [quota_codec.daily_usage_from_row(row) for row in rows]

    async def organization_usage(
        self, organization: str, *, first_day: str, last_day: str
    ) -> UsageTotals:
        """All of ``organization``'s users together from ``first_day`` to ``last_day``."""
        params = {
            "organization": quota_codec.org_column(organization),
            "first_day": first_day,
            "last_day": last_day,
        }
        async with self._db.connection() as conn:
            cursor = await conn.execute(quotas.USAGE.organization, params)
            row = await cursor.fetchone()
        assert row is not None
        return quota_codec.totals_from_row(row)

    # --- plumbing -----------------------------------------------------------

    async def _migrate(self, conn: Connection) -> None:
        await conn.execute(_SCHEMA)
        # Refuse newer tables before changing anything in them.
        found = await check_schema_version(
            conn,
            component="sessions",
            version=codec.SCHEMA_VERSION,
            where=f"PostgreSQL session store at {self._db.where}",
        )
        if found is not None and found >= codec.SCHEMA_VERSION:
            # Up to date: no ALTER TABLE, whose lock would stall every replica's turns.
            return
        await conn.execute(_UPGRADE)
        await conn.execute(quotas.RESERVE_FUNCTION)
        await conn.execute(
            "UPDATE schema_version SET version = %s WHERE component = 'sessions' AND version < %s",
            (codec.SCHEMA_VERSION, codec.SCHEMA_VERSION),
        )


def _expiry_params(expiry: SessionExpiry, now: float) -> dict[str, float]:
    return {
        "idle_s": expiry.idle_s,
        "max_s": expiry.max_s,
        "idle_cutoff": now - expiry.idle_s,
        "max_cutoff": now - expiry.max_s,
    }


def _user_params(user_id: str, organization: str | None) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "organization": organization,
        "organization_column": quota_codec.org_column(organization),
        **quota_codec.user_budget_params(user_id, organization),
    }


async def _remove_sessions(conn: Connection, rows: list[tuple[Any, ...]]) -> RemovedCounts:
    """Delete the sessions of ``rows`` (session_id, agent_id, organization) and every row
    that refers to them; inside the caller's transaction, the sessions locked."""
    if not rows:
        return RemovedCounts()
    ids = [row[0] for row in rows]
    counts: list[int] = []
    for table in ("turns", "feedback", "session_rewinds"):
        cursor = await conn.execute(f"DELETE FROM {table} WHERE session_id = ANY(%s)", (ids,))
        counts.append(cursor.rowcount)
    cursor = await conn.execute(
        "DELETE FROM budgets WHERE key = ANY(%s)", (codec.session_budget_keys(ids),)
    )
    budgets = cursor.rowcount
    await conn.execute("DELETE FROM sessions WHERE session_id = ANY(%s)", (ids,))
    return RemovedCounts(
        sessions=len(ids),
        turns=counts[0],
        feedback=counts[1],
        budget_rows=budgets,
        agent_ids=tuple(sorted({row[1] for row in rows})),
        owners=codec.owners_from((row[1], row[2]) for row in rows),
    )


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=codec.dumps)


def _parsed(value: Any) -> Any:
    # psycopg has already decoded JSONB columns.
    return value
