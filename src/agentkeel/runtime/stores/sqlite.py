"""The embedded session store: one SQLite file, shared by every replica on the machine.

The file is in WAL mode so readers never wait for the writer, with
``synchronous=NORMAL`` (a committed turn survives a process crash; a power cut
may lose the last few commits, never corrupt the file) and a busy timeout so
replica processes queue for the write lock instead of failing. Multi-statement
writes use ``BEGIN IMMEDIATE``: the write lock is taken up front, so two
replicas can never both read the same head and then both commit.

Each store holds two connections. Most calls run right on the event loop
thread with a connection that never waits for a lock (busy timeout 0): a
SQLite read or a short write takes tens of microseconds, much less than a
hop to another thread. When another process holds the write lock, that
attempt fails at once and nothing was written, so the call is handed to the
store's own worker thread, whose connection waits up to the busy timeout
while the event loop keeps serving. WAL checkpoints (the slow, fsyncing part)
also run on the worker thread, never inline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

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
from agentkeel.runtime.stores import sqlite_quotas as quotas
from agentkeel.runtime.usage import DailyUsage, UsageRecord, UsageTotals, UserUsage
from agentkeel.storage import sqlite as storage

__all__ = ["SqliteSessionStore"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_log = logging.getLogger(__name__)

_TABLES = """
CREATE TABLE IF NOT EXISTS schema_version (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    version TEXT NOT NULL,
    created_at REAL NOT NULL,
    metadata TEXT NOT NULL,
    head INTEGER NOT NULL DEFAULT 0,
    turn_count INTEGER NOT NULL DEFAULT 0,
    ended_at REAL,
    end_reason TEXT,
    last_active_at REAL,
    replica TEXT,
    organization TEXT
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions (session_id),
    number INTEGER NOT NULL,
    parent INTEGER NOT NULL,
    content TEXT NOT NULL,
    reply TEXT NOT NULL,
    messages TEXT NOT NULL,
    usage TEXT NOT NULL,
    tool_calls TEXT NOT NULL,
    started_at REAL NOT NULL,
    completed_at REAL NOT NULL,
    version TEXT NOT NULL,
    correlation_id TEXT,
    replica TEXT,
    PRIMARY KEY (session_id, number)
);
CREATE TABLE IF NOT EXISTS session_rewinds (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (session_id),
    from_head INTEGER NOT NULL,
    to_turn INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (session_id),
    turn INTEGER,
    score REAL NOT NULL,
    comment TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS budgets (
    key TEXT PRIMARY KEY,
    used INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS token_usage (
    day TEXT NOT NULL,
    organization TEXT NOT NULL,
    user_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    model TEXT NOT NULL,
    key_link TEXT NOT NULL,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    calls INTEGER NOT NULL DEFAULT 0,
    spend REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (day, organization, user_id, agent_id, model, key_link)
);
"""

# Columns later schema versions added (2: the lifecycle; 3: the owner's organization),
# for files an earlier release wrote.
_ADDED_COLUMNS = (
    ("sessions", "end_reason", "TEXT"),
    ("sessions", "last_active_at", "REAL"),
    ("sessions", "replica", "TEXT"),
    ("turns", "replica", "TEXT"),
    ("sessions", "organization", "TEXT"),
)

_BACKFILL_ACTIVE_SQL = """
UPDATE sessions SET last_active_at = coalesce(
    (SELECT max(t.completed_at) FROM turns AS t WHERE t.session_id = sessions.session_id),
    created_at
) WHERE last_active_at IS NULL
"""

# The sweeper's, the live count's, the purge's and forget's lookups; each one
# reads only the rows it acts on.
_INDEXES = """
CREATE INDEX IF NOT EXISTS sessions_active_idx ON sessions (session_id) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS sessions_idle_idx ON sessions (last_active_at) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS sessions_age_idx ON sessions (created_at) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS sessions_ended_idx ON sessions (ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS sessions_user_idx ON sessions (user_id);
CREATE INDEX IF NOT EXISTS session_rewinds_session_idx ON session_rewinds (session_id);
CREATE INDEX IF NOT EXISTS feedback_session_idx ON feedback (session_id);
CREATE INDEX IF NOT EXISTS token_usage_user_idx ON token_usage (user_id, organization, day);
"""

# The session's end: the earlier of idle expiry and maximum duration.
_END_COLUMNS = """
ended_at = min(last_active_at + :idle_s, created_at + :max_s),
end_reason = CASE WHEN last_active_at + :idle_s <= created_at + :max_s
    THEN 'idle_timeout' ELSE 'max_duration' END
"""
_EXPIRED = "(last_active_at <= :idle_cutoff OR created_at <= :max_cutoff)"

_END_EXPIRED_SQL = f"""
UPDATE sessions SET {_END_COLUMNS}
WHERE session_id IN (
    SELECT session_id FROM sessions WHERE ended_at IS NULL AND {_EXPIRED} LIMIT :limit
) AND ended_at IS NULL
RETURNING {codec.SESSION_COLUMNS}
"""

_END_ONE_EXPIRED_SQL = f"""
UPDATE sessions SET {_END_COLUMNS}
WHERE session_id = :sid AND ended_at IS NULL AND {_EXPIRED}
RETURNING {codec.SESSION_COLUMNS}
"""

_LIVE_SQL = """
SELECT version, replica, count(*),
    sum(CASE WHEN created_at < :started_before THEN 1 ELSE 0 END)
FROM sessions
WHERE ended_at IS NULL AND last_active_at > :idle_cutoff AND created_at > :max_cutoff
GROUP BY version, replica ORDER BY version, replica
"""

# What a dry run reports: the rows of every session the subquery {chosen} selects.
_COUNT_SQL = """
WITH chosen AS ({chosen})
SELECT
    (SELECT count(*) FROM chosen),
    (SELECT count(*) FROM turns WHERE session_id IN (SELECT session_id FROM chosen)),
    (SELECT count(*) FROM feedback WHERE session_id IN (SELECT session_id FROM chosen)),
    (SELECT count(*) FROM budgets WHERE key IN (SELECT 'session:' || session_id FROM chosen)),
    (SELECT json_group_array(json(pair))
        FROM (SELECT DISTINCT json_array(agent_id, organization) AS pair FROM chosen))
"""
_PURGEABLE = (
    "SELECT session_id, agent_id, organization FROM sessions WHERE ended_at < :ended_before"
)
_OF_USER = "SELECT session_id, agent_id, organization FROM sessions WHERE user_id = :user_id"
_OF_ORG_USER = f"{_OF_USER} AND organization = :organization"

_CONTEXT_NUMBERS_SQL = """
WITH RECURSIVE chain (number, depth) AS (
    SELECT head, 0 FROM sessions WHERE session_id = :sid AND head > 0
    UNION ALL
    SELECT t.parent, chain.depth + 1 FROM turns AS t JOIN chain
        ON t.session_id = :sid AND t.number = chain.number
    WHERE t.parent > 0
)
SELECT number FROM chain ORDER BY depth DESC
"""

# One JSON array parameter instead of a variable number of placeholders.
_TURNS_BY_NUMBER_SQL = f"""
SELECT {codec.TURN_COLUMNS} FROM turns
WHERE session_id = ? AND number IN (SELECT value FROM json_each(?))
"""


class SqliteSessionStore:
    """Sessions, turns, feedback, token budgets and usage in one SQLite file.

    Several replica processes may open the same file; ``append_turn`` and
    ``reserve`` stay correct across them. Also implements ``BudgetLedger``,
    ``UsageRecorder`` and ``UsageReader``.

    ``busy_timeout_s`` is how long a call waits for another process's write lock
    before it fails with ``Unavailable``; ``checkpoint_every`` is how many row
    changes pass between background WAL checkpoints; ``cache_turns`` bounds the
    cache of decoded turns (0 turns it off); ``clock`` stamps rewind events.

    >>> store = SqliteSessionStore(path=Path(".keel/sessions.db"))
    >>> await store.open()
    >>> await store.create_session(record)
    """

    def __init__(
        self,
        *,
        path: Path,
        busy_timeout_s: float = 5.0,
        checkpoint_every: int = 1000,
        cache_turns: int = 4096,
        clock: Clock | None = None,
    ) -> None:
        self._path = Path(path)
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        self._checkpoint_every = checkpoint_every
        self._clock: Clock = clock or SystemClock()
        self._cache = codec.TurnCache(max_turns=cache_turns)
        self._errors = storage.SqliteErrors(
            label="SQLite session store", path=self._path, busy_timeout_ms=self._busy_timeout_ms
        )
        self._worker = storage.SqliteWorker(
            thread_name="keel-sqlite", errors=self._errors, passes_integrity_errors=True
        )
        self._loop_conn: sqlite3.Connection | None = None
        self._loop_thread = 0
        self._changes_at_checkpoint = 0
        self._checkpointing = False

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    # --- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        """Open the file (creating it and its directory) and create the tables if absent."""
        if self._worker.is_open:
            return
        try:
            await self._worker.open(self._connect_worker)
            try:
                self._loop_conn = self._connect_loop()
            except sqlite3.DatabaseError as exc:
                raise self._errors.translate(exc) from exc
        except BaseException:
            await self.aclose()
            raise
        self._loop_thread = threading.get_ident()

    async def aclose(self) -> None:
        """Close both connections and stop the worker thread; safe to call twice."""
        loop_conn, self._loop_conn = self._loop_conn, None
        if loop_conn is not None:
            loop_conn.close()
        await self._worker.aclose()

    # --- sessions -----------------------------------------------------------

    async def create_session(self, session: SessionRecord) -> None:
        """Store a new session; ``Conflict`` (session_exists) if the id is taken."""
        await self._run(_create_session, session)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """The session, or None if unknown."""
        return await self._run(_get_session, session_id)

    async def end_session(
        self, session_id: str, ended_at: float, reason: EndReason = "deleted"
    ) -> SessionRecord | None:
        """Mark the session ended; the ended record, or None if it was unknown or
        already ended (someone else recorded the end)."""
        return await self._run(_end_session, session_id, ended_at, reason)

    async def end_expired_session(
        self, session_id: str, expiry: SessionExpiry, *, now: float
    ) -> SessionRecord | None:
        """End the session if ``expiry`` says it ended by ``now``; the ended record, or
        None when it is live, unknown or already ended."""
        return await self._run(_end_one_expired, session_id, _expiry_params(expiry, now))

    async def end_expired_sessions(
        self, expiry: SessionExpiry, *, now: float, limit: int
    ) -> list[SessionRecord]:
        """End up to ``limit`` sessions that ``expiry`` says ended by ``now``; the ones
        this call ended."""
        params = {**_expiry_params(expiry, now), "limit": limit}
        return await self._worker.run(_end_expired, params)

    async def count_active_sessions(self) -> int:
        """Sessions not yet ended (idle ones the sweeper has not ended yet included)."""
        return await self._run(_count_active_sessions)

    async def count_live_sessions(
        self, expiry: SessionExpiry, *, now: float, started_before: float | None = None
    ) -> list[LiveSessions]:
        """Sessions neither ended nor expired at ``now``, by version and last replica;
        with ``started_before``, how many of them started before that time."""
        params = {**_expiry_params(expiry, now), "started_before": _before(started_before)}
        return await self._worker.run(_count_live, params)

    # --- retention ----------------------------------------------------------

    async def count_purgeable(self, *, ended_before: float) -> RemovedCounts:
        """What ``purge_ended_sessions`` would remove, all batches together."""
        return await self._worker.run(_count_purgeable, ended_before)

    async def purge_ended_sessions(self, *, ended_before: float, limit: int) -> RemovedCounts:
        """Remove up to ``limit`` sessions that ended before ``ended_before``, with their
        turns, feedback, rewinds and session budget rows, in one transaction."""
        removed, ids = await self._worker.run(_purge_batch, ended_before, limit)
        self._cache.discard_sessions(ids)
        return removed

    async def purge_quota_windows(
        self, *, day_before: str, month_before: str, after: str = "", limit: int
    ) -> tuple[int, str | None]:
        """Delete up to ``limit`` quota rows (``user:``, ``org:``, ``orgquota:``) of day
        windows before ``day_before`` and month windows before ``month_before`` (labels),
        keys after ``after`` in key order, in one transaction: how many, and the last key
        (pass it as ``after`` for the next batch; ``None`` when there were none)."""
        params = quota_codec.ended_window_params(
            day_before=day_before, month_before=month_before, after=after, limit=limit
        )
        return await self._worker.run(quotas.purge_ended_windows, params)

    async def count_quota_windows(self, *, day_before: str, month_before: str) -> int:
        """How many rows ``purge_quota_windows`` would delete, all batches together."""
        params = quota_codec.ended_window_params(
            day_before=day_before, month_before=month_before, after="", limit=0
        )
        return await self._worker.run(quotas.count_ended_windows, params)

    async def count_user_data(
        self, user_id: str, *, organization: str | None = None
    ) -> RemovedCounts:
        """What ``forget_user`` would remove, all batches together."""
        return await self._worker.run(_count_user_data, user_id, organization)

    async def forget_user(
        self, user_id: str, *, limit: int, organization: str | None = None
    ) -> RemovedCounts:
        """Remove up to ``limit`` of the user's sessions (ended or not) with their turns,
        feedback, rewinds and budget rows, and the user's quota and usage rows; only in
        ``organization`` when given, else in every organization."""
        removed, ids = await self._worker.run(_forget_batch, user_id, limit, organization)
        self._cache.discard_sessions(ids)
        return removed

    # --- turns --------------------------------------------------------------

    async def list_turns(self, session_id: str) -> list[TurnRecord]:
        """Every stored turn of the session, by number (rewound ones included)."""
        return await self._run(_list_turns, session_id)

    async def context_turns(self, session_id: str) -> list[TurnRecord]:
        """The turns from the head back through each parent, oldest first."""
        return await self._run(_context_turns, session_id, self._cache)

    async def append_turn(self, turn: TurnRecord) -> None:
        """Commit a turn: insert it, move the head to it, count it — one transaction.

        Raises ``Conflict`` (turn_conflict) if the number is taken or the head is no
        longer ``turn.parent``; ``NotFound`` (session_not_found) if the session is
        unknown or ended.
        """
        await self._run(_append_turn, turn, self._cache)

    async def rewind(self, session_id: str, to_turn: int) -> SessionRecord:
        """Move the head back to ``to_turn`` (0 or a stored turn) and record the rewind."""
        return await self._run(_rewind, session_id, to_turn, self._clock.time())

    # --- feedback -----------------------------------------------------------

    async def add_feedback(self, feedback: FeedbackRecord) -> None:
        """Append a feedback row; ``NotFound`` if the session is unknown."""
        await self._run(_add_feedback, feedback)

    async def list_feedback(self, session_id: str) -> list[FeedbackRecord]:
        """The session's feedback in the order it was given."""
        return await self._run(_list_feedback, session_id)

    # --- budgets ------------------------------------------------------------

    async def reserve(self, holds: Sequence[Hold], amount: int) -> ReserveResult:
        """Reserve ``amount`` tokens on every hold's key if each stays within its limit,
        or on none. One write transaction (``BEGIN IMMEDIATE``: the write lock first), so
        replicas sharing the file can never reserve past a limit together."""
        check_amounts([h.key for h in holds], amount=amount)
        return await self._run(quotas.reserve, tuple(holds), amount)

    async def settle(self, keys: Sequence[str], reserved: int, used: int) -> None:
        """Release ``reserved`` tokens on each key (never below 0) and record ``used``."""
        check_amounts(keys, reserved=reserved, used=used)
        await self._run(quotas.settle, codec.dumps(list(keys)), reserved, used)

    async def used(self, key: str) -> int:
        """Tokens recorded as used under ``key`` (0 if never seen)."""
        return await self._run(quotas.used, key)

    # --- usage --------------------------------------------------------------

    async def record_usage(self, record: UsageRecord) -> None:
        """Add one settled call to its usage row (day, organization, user, agent, model,
        key link)."""
        await self._run(quotas.record_usage, quota_codec.usage_values(record))

    async def top_users(
        self, *, first_day: str, last_day: str, limit: int, organization: str | None = None
    ) -> list[UserUsage]:
        """The ``limit`` users with the most tokens from ``first_day`` to ``last_day``
        (UTC days, both included), most first; only ``organization``'s when given."""
        sql, params = quotas.USAGE.top_users_query(
            first_day=first_day, last_day=last_day, limit=limit, organization=organization
        )
        return await self._run(quotas.top_users, sql, params)

    async def user_usage(
        self, user_id: str, *, organization: str | None, first_day: str, last_day: str
    ) -> list[DailyUsage]:
        """The user's usage by UTC day and model, oldest first."""
        params: dict[str, object] = {
            "user_id": user_id,
            "organization": quota_codec.org_column(organization),
            "first_day": first_day,
            "last_day": last_day,
        }
        return await self._run(quotas.user_usage, params)

    async def organization_usage(
        self, organization: str, *, first_day: str, last_day: str
    ) -> UsageTotals:
        """All of ``organization``'s users together from ``first_day`` to ``last_day``."""
        params: dict[str, object] = {
            "organization": quota_codec.org_column(organization),
            "first_day": first_day,
            "last_day": last_day,
        }
        return await self._run(quotas.organization_usage, params)

    # --- plumbing -----------------------------------------------------------

    async def _run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        conn = self._loop_conn
        if conn is None:
            raise self._errors.not_open()
        if threading.get_ident() == self._loop_thread:
            try:
                result = fn(conn, *args, **kwargs)
            except sqlite3.IntegrityError:
                raise
            except sqlite3.OperationalError as exc:
                if not storage.is_locked(exc):
                    raise self._errors.translate(exc) from exc
                # Locked by another process; nothing was written. Wait on the worker.
            except sqlite3.DatabaseError as exc:
                raise self._errors.translate(exc) from exc
            else:
                if conn.total_changes - self._changes_at_checkpoint >= self._checkpoint_every:
                    self._start_checkpoint(conn.total_changes)
                return result
        return await self._worker.run(fn, *args, **kwargs)

    def _start_checkpoint(self, changes: int) -> None:
        if self._checkpointing:
            return
        future = self._worker.schedule(_checkpoint_wal)
        if future is None:
            return
        self._checkpointing = True
        self._changes_at_checkpoint = changes
        future.add_done_callback(self._checkpoint_done)

    def _checkpoint_done(self, future: asyncio.Future[None]) -> None:
        self._checkpointing = False
        exc = None if future.cancelled() else future.exception()
        if exc is not None:
            # Not fatal: the WAL keeps growing until a later checkpoint succeeds.
            _log.warning("WAL checkpoint of %s failed: %s; will retry", self._path, exc)

    def _connect_worker(self) -> sqlite3.Connection:
        return storage.open_database(
            self._path,
            busy_timeout_ms=self._busy_timeout_ms,
            foreign_keys=True,
            cached_statements=64,
            migrate=self._migrate,
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        for statement in storage.split_statements(_TABLES):
            conn.execute(statement)
        # Refuse a newer file before changing anything in it.
        storage.check_schema_version(
            conn,
            component="sessions",
            version=codec.SCHEMA_VERSION,
            where=f"SQLite session store {self._path}",
        )
        for table, column, kind in _ADDED_COLUMNS:
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        conn.execute(_BACKFILL_ACTIVE_SQL)
        for statement in storage.split_statements(_INDEXES):
            conn.execute(statement)
        conn.execute(
            "UPDATE schema_version SET version = ? WHERE component = 'sessions' AND version < ?",
            (codec.SCHEMA_VERSION, codec.SCHEMA_VERSION),
        )

    def _connect_loop(self) -> sqlite3.Connection:
        conn = storage.connect(
            self._path, busy_timeout_ms=0, foreign_keys=True, cached_statements=64
        )
        # Checkpoints fsync; the worker runs them (see _start_checkpoint).
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn


def _checkpoint_wal(conn: sqlite3.Connection) -> None:
    # PASSIVE: copy what it can without waiting for readers or writers.
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


# Everything below runs on the store's worker thread.


def _create_session(conn: sqlite3.Connection, session: SessionRecord) -> None:
    try:
        conn.execute(
            f"INSERT INTO sessions ({codec.SESSION_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            codec.session_values(session, codec.dumps(dict(session.metadata))),
        )
    except sqlite3.IntegrityError as exc:
        raise codec.session_exists(session.session_id) from exc


def _get_session(conn: sqlite3.Connection, session_id: str) -> SessionRecord | None:
    row = conn.execute(
        f"SELECT {codec.SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    return None if row is None else codec.session_from_row(row, parse=codec.loads)


def _end_session(
    conn: sqlite3.Connection, session_id: str, ended_at: float, reason: EndReason
) -> SessionRecord | None:
    row = conn.execute(
        "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE session_id = ? AND ended_at IS NULL"
        f" RETURNING {codec.SESSION_COLUMNS}",
        (ended_at, reason, session_id),
    ).fetchone()
    return None if row is None else codec.session_from_row(row, parse=codec.loads)


def _expiry_params(expiry: SessionExpiry, now: float) -> dict[str, float]:
    return {
        "idle_s": expiry.idle_s,
        "max_s": expiry.max_s,
        "idle_cutoff": now - expiry.idle_s,
        "max_cutoff": now - expiry.max_s,
    }


def _end_one_expired(
    conn: sqlite3.Connection, session_id: str, params: dict[str, float]
) -> SessionRecord | None:
    row = conn.execute(_END_ONE_EXPIRED_SQL, {**params, "sid": session_id}).fetchone()
    return None if row is None else codec.session_from_row(row, parse=codec.loads)


def _end_expired(conn: sqlite3.Connection, params: dict[str, float]) -> list[SessionRecord]:
    with storage.write(conn):
        rows = conn.execute(_END_EXPIRED_SQL, params).fetchall()
    return [codec.session_from_row(row, parse=codec.loads) for row in rows]


def _count_live(conn: sqlite3.Connection, params: dict[str, float]) -> list[LiveSessions]:
    rows = conn.execute(_LIVE_SQL, params).fetchall()
    return [
        LiveSessions(version=row[0], replica=row[1], count=int(row[2]), started_before=int(row[3]))
        for row in rows
    ]


def _before(started_before: float | None) -> float:
    # No time asked about: a cutoff no session is older than, so the count is 0.
    return float("-inf") if started_before is None else started_before


def _remove_sessions(conn: sqlite3.Connection, ids: list[str]) -> tuple[int, int, int]:
    """Delete the sessions in ``ids`` and every row that refers to them; inside a write."""
    params = (codec.dumps(ids),)
    in_ids = "session_id IN (SELECT value FROM json_each(?))"
    turns = conn.execute(f"DELETE FROM turns WHERE {in_ids}", params).rowcount
    feedback = conn.execute(f"DELETE FROM feedback WHERE {in_ids}", params).rowcount
    conn.execute(f"DELETE FROM session_rewinds WHERE {in_ids}", params)
    budgets = conn.execute(
        "DELETE FROM budgets WHERE key IN (SELECT value FROM json_each(?))",
        (codec.dumps(codec.session_budget_keys(ids)),),
    ).rowcount
    conn.execute(f"DELETE FROM sessions WHERE {in_ids}", params)
    return turns, feedback, budgets


def _count(conn: sqlite3.Connection, chosen: str, params: dict[str, object]) -> RemovedCounts:
    row = conn.execute(_COUNT_SQL.format(chosen=chosen), params).fetchone()
    owners = codec.owners_from(codec.loads(row[4]))
    return RemovedCounts(
        sessions=int(row[0]),
        turns=int(row[1]),
        feedback=int(row[2]),
        budget_rows=int(row[3]),
        agent_ids=tuple(sorted({agent for agent, _ in owners})),
        owners=owners,
    )


def _count_purgeable(conn: sqlite3.Connection, ended_before: float) -> RemovedCounts:
    counts = _count(conn, _PURGEABLE, {"ended_before": ended_before})
    return dataclasses.replace(counts, agent_ids=(), owners=())


def _purge_batch(
    conn: sqlite3.Connection, ended_before: float, limit: int
) -> tuple[RemovedCounts, list[str]]:
    with storage.write(conn):
        ids = [
            row[0]
            for row in conn.execute(
                "SELECT session_id FROM sessions WHERE ended_at IS NOT NULL AND ended_at < ?"
                " ORDER BY ended_at LIMIT ?",
                (ended_before, limit),
            )
        ]
        if not ids:
            return RemovedCounts(), ids
        turns, feedback, budgets = _remove_sessions(conn, ids)
    removed = RemovedCounts(sessions=len(ids), turns=turns, feedback=feedback, budget_rows=budgets)
    return removed, ids


def _user_params(user_id: str, organization: str | None) -> dict[str, object]:
    return {
        "user_id": user_id,
        "organization": organization,
        "organization_column": quota_codec.org_column(organization),
        **quota_codec.user_budget_params(user_id, organization),
    }


def _count_user_data(
    conn: sqlite3.Connection, user_id: str, organization: str | None
) -> RemovedCounts:
    params = _user_params(user_id, organization)
    counts = _count(conn, _OF_USER if organization is None else _OF_ORG_USER, params)
    quota = conn.execute(
        f"SELECT count(*) FROM budgets WHERE {quotas.user_budgets_where(organization)}", params
    ).fetchone()
    usage = conn.execute(
        f"SELECT count(*) FROM token_usage WHERE {quotas.user_usage_where(organization)}", params
    ).fetchone()
    return dataclasses.replace(
        counts, budget_rows=counts.budget_rows + int(quota[0]), usage_rows=int(usage[0])
    )


def _forget_batch(
    conn: sqlite3.Connection, user_id: str, limit: int, organization: str | None
) -> tuple[RemovedCounts, list[str]]:
    params = _user_params(user_id, organization)
    chosen = _OF_USER if organization is None else _OF_ORG_USER
    with storage.write(conn):
        rows = conn.execute(f"{chosen} LIMIT :limit", {**params, "limit": limit}).fetchall()
        ids = [row[0] for row in rows]
        turns, feedback, budgets = _remove_sessions(conn, ids) if ids else (0, 0, 0)
        budgets += conn.execute(
            f"DELETE FROM budgets WHERE {quotas.user_budgets_where(organization)}", params
        ).rowcount
        usage = conn.execute(
            f"DELETE FROM token_usage WHERE {quotas.user_usage_where(organization)}", params
        ).rowcount
    owners = codec.owners_from((row[1], row[2]) for row in rows)
    removed = RemovedCounts(
        sessions=len(ids),
        turns=turns,
        feedback=feedback,
        budget_rows=budgets,
        usage_rows=usage,
        agent_ids=tuple(sorted({agent for agent, _ in owners})),
        owners=owners,
    )
    return removed, ids


def _count_active_sessions(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM sessions WHERE ended_at IS NULL").fetchone()
    return int(row[0])


def _list_turns(conn: sqlite3.Connection, session_id: str) -> list[TurnRecord]:
    rows = conn.execute(
        f"SELECT {codec.TURN_COLUMNS} FROM turns WHERE session_id = ? ORDER BY number",
        (session_id,),
    ).fetchall()
    return [codec.turn_from_row(row, parse=codec.loads) for row in rows]


def _context_turns(
    conn: sqlite3.Connection, session_id: str, cache: codec.TurnCache
) -> list[TurnRecord]:
    # Usually every turn of the chain is cached (this replica wrote or read it last
    # time): one primary-key read of the head then beats the recursive query.
    head_row = conn.execute(
        "SELECT head FROM sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    if head_row is None:
        return []
    cached = cache.chain(session_id, head_row[0])
    if cached is not None:
        return cached
    numbers = [row[0] for row in conn.execute(_CONTEXT_NUMBERS_SQL, {"sid": session_id})]
    found = cache.get_many(session_id, numbers)
    missing = [number for number in numbers if number not in found]
    if missing:
        # Rows never change once written, so reading them apart from the chain is safe.
        for row in conn.execute(_TURNS_BY_NUMBER_SQL, (session_id, codec.dumps(missing))):
            turn = codec.turn_from_row(row, parse=codec.loads)
            found[turn.number] = turn
            cache.put(turn)
    return [found[number] for number in numbers]


def _append_turn(conn: sqlite3.Connection, turn: TurnRecord, cache: codec.TurnCache) -> None:
    # Encode before taking the write lock: other replicas wait while we hold it.
    values = codec.turn_values(turn)
    with storage.write(conn):
        # The head check and the move in one statement; the reason for a refusal
        # is looked up only when there is one.
        moved = conn.execute(
            "UPDATE sessions SET head = ?, turn_count = turn_count + 1, last_active_at = ?,"
            " replica = ? WHERE session_id = ? AND head = ? AND ended_at IS NULL",
            (turn.number, turn.completed_at, turn.replica, turn.session_id, turn.parent),
        ).rowcount
        if moved != 1:
            row = conn.execute(
                "SELECT head, ended_at, end_reason FROM sessions WHERE session_id = ?",
                (turn.session_id,),
            ).fetchone()
            raise codec.append_refused(turn, row)
        try:
            conn.execute(
                f"INSERT INTO turns ({codec.TURN_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        except sqlite3.IntegrityError as exc:
            raise codec.turn_exists(turn) from exc
    # Cache what a later read would decode, so the next turn's context is ready.
    cache.put(codec.turn_from_row(values, parse=codec.loads))


def _rewind(conn: sqlite3.Connection, session_id: str, to_turn: int, now: float) -> SessionRecord:
    with storage.write(conn):
        row = conn.execute(
            f"SELECT {codec.SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        session = codec.open_session_from_row(row, session_id, parse=codec.loads)
        if to_turn != 0 and (
            to_turn < 0
            or conn.execute(
                "SELECT 1 FROM turns WHERE session_id = ? AND number = ?", (session_id, to_turn)
            ).fetchone()
            is None
        ):
            raise codec.rewind_target_missing(session_id, to_turn, session.turn_count)
        conn.execute("UPDATE sessions SET head = ? WHERE session_id = ?", (to_turn, session_id))
        conn.execute(
            "INSERT INTO session_rewinds (session_id, from_head, to_turn, created_at)"
            " VALUES (?, ?, ?, ?)",
            (session_id, session.head, to_turn, now),
        )
    return dataclasses.replace(session, head=to_turn)


def _add_feedback(conn: sqlite3.Connection, feedback: FeedbackRecord) -> None:
    try:
        conn.execute(
            f"INSERT INTO feedback ({codec.FEEDBACK_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
            (
                feedback.session_id,
                feedback.score,
                feedback.created_at,
                feedback.turn,
                feedback.comment,
            ),
        )
    except sqlite3.IntegrityError as exc:
        # The only constraint a well-formed record can break is the session reference.
        raise codec.feedback_session_missing(feedback.session_id) from exc


def _list_feedback(conn: sqlite3.Connection, session_id: str) -> list[FeedbackRecord]:
    rows = conn.execute(
        f"SELECT {codec.FEEDBACK_COLUMNS} FROM feedback WHERE session_id = ? ORDER BY id",
        (session_id,),
    ).fetchall()
    return [codec.feedback_from_row(row) for row in rows]
