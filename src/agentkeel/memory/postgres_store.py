"""The scale-out memory store: PostgreSQL, same tables and rules as the SQLite store.

Writers serialize on the one-row ``memory_chain`` table (``SELECT … FOR
UPDATE``): the hash chain needs each event to know the one before, and it is
also what makes an idempotency key check-then-insert safe across servers.
Search is a stored ``tsvector`` column with a GIN index, ranked by
``ts_rank``. Readers for integrity checks and snapshots use a ``REPEATABLE
READ READ ONLY`` transaction, so every page they read belongs to one moment.

Memory ids sort with ``COLLATE "C"`` (byte order) so that streamed pages come
in the same order Python compares strings in. Metadata and event payloads are
TEXT, not JSONB: JSONB rewrites numbers and key order, and the hash covers
the exact text.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from agentkeel.errors import ConfigError, Conflict, InvalidRequest, NotFound, Unavailable
from agentkeel.memory import planner
from agentkeel.memory.hashchain import canonical_json, fingerprint_from_columns
from agentkeel.memory.store import (
    GENESIS_HASH,
    ChainHead,
    EventRecord,
    MemoryRecord,
    QuarantineRecord,
    ReplayResult,
    RestoreResult,
    SearchHit,
    SearchQuery,
    SnapshotRecord,
    StateReader,
    StoreStats,
    WriteOp,
    WriteResult,
)
from agentkeel.resilience.clock import Clock, SystemClock

__all__ = ["PostgresMemoryStore"]

_Connection = psycopg.AsyncConnection[TupleRow]
PAGE_SIZE = 5000

_MEMORY_COLUMNS = (
    "id, namespace, content, tags, importance, metadata, created_at, updated_at, version"
)
_EVENT_COLUMNS = "seq, time, namespace, op, memory_id, payload, prev_hash, hash"
_SNAPSHOT_COLUMNS = (
    "id, label, kind, seq, head_hash, created_at, path, sha256, size_bytes, memories, "
    "state_digest, verified_at, verified_ok, verify_message"
)
_QUARANTINE_COLUMNS = (
    "id, created_at, reason, target_seq, from_seq, to_seq, event_count, restore_seq, replayed_at"
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS memory_events (
    seq BIGINT PRIMARY KEY,
    time DOUBLE PRECISION NOT NULL,
    namespace TEXT NOT NULL,
    op TEXT NOT NULL,
    memory_id TEXT COLLATE "C" NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS memory_events_memory_idx ON memory_events (memory_id, seq);
CREATE INDEX IF NOT EXISTS memory_events_time_idx ON memory_events (time);
CREATE TABLE IF NOT EXISTS memory_chain (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    head_seq BIGINT NOT NULL,
    head_hash TEXT NOT NULL,
    last_seq BIGINT NOT NULL
);
INSERT INTO memory_chain (id, head_seq, head_hash, last_seq)
VALUES (1, 0, '{GENESIS_HASH}', 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS memories (
    id TEXT COLLATE "C" PRIMARY KEY,
    namespace TEXT NOT NULL,
    content TEXT NOT NULL,
    tags TEXT[] NOT NULL,
    tags_text TEXT NOT NULL,
    importance DOUBLE PRECISION NOT NULL,
    metadata TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    version INTEGER NOT NULL,
    search TSVECTOR GENERATED ALWAYS AS (
        to_tsvector('english'::regconfig, content || ' ' || tags_text)
    ) STORED
);
CREATE INDEX IF NOT EXISTS memories_search_idx ON memories USING GIN (search);
CREATE INDEX IF NOT EXISTS memories_namespace_idx ON memories (namespace, created_at);
CREATE TABLE IF NOT EXISTS memory_idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS memory_quarantines (
    id TEXT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL,
    target_seq BIGINT NOT NULL,
    from_seq BIGINT NOT NULL,
    to_seq BIGINT NOT NULL,
    event_count BIGINT NOT NULL,
    restore_seq BIGINT NOT NULL,
    replayed_at DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS memory_quarantine_events (
    quarantine_id TEXT NOT NULL REFERENCES memory_quarantines (id),
    seq BIGINT NOT NULL,
    time DOUBLE PRECISION NOT NULL,
    namespace TEXT NOT NULL,
    op TEXT NOT NULL,
    memory_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (quarantine_id, seq)
);
CREATE TABLE IF NOT EXISTS memory_snapshots (
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq BIGINT NOT NULL,
    head_hash TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    memories BIGINT NOT NULL,
    state_digest TEXT NOT NULL,
    verified_at DOUBLE PRECISION,
    verified_ok BOOLEAN,
    verify_message TEXT
);
"""

_SCHEMA_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('agentkeel:memory:schema'))"

_INSERT_MEMORY_COLUMNS = (
    "id, namespace, content, tags, tags_text, importance, metadata, created_at, updated_at, version"
)

_UPSERT_SQL = f"""
INSERT INTO memories ({_INSERT_MEMORY_COLUMNS})
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET
    namespace = excluded.namespace, content = excluded.content, tags = excluded.tags,
    tags_text = excluded.tags_text, importance = excluded.importance,
    metadata = excluded.metadata, created_at = excluded.created_at,
    updated_at = excluded.updated_at, version = excluded.version
"""

# ``json`` (not jsonb) keeps the payload's exact text, so metadata round-trips byte for byte.
_REPLAY_SQL = f"""
INSERT INTO memories ({_INSERT_MEMORY_COLUMNS})
SELECT e.memory_id, e.namespace, e.p ->> 'content',
    ARRAY(SELECT json_array_elements_text(e.p -> 'tags')),
    array_to_string(ARRAY(SELECT json_array_elements_text(e.p -> 'tags')), ' '),
    (e.p ->> 'importance')::float8, (e.p -> 'metadata')::text,
    (e.p ->> 'created_at')::float8, (e.p ->> 'updated_at')::float8, (e.p ->> 'version')::int
FROM (
    SELECT DISTINCT ON (memory_id) memory_id, namespace, op, payload::json AS p
    FROM memory_events WHERE op <> 'restore' ORDER BY memory_id, seq DESC
) AS e
WHERE e.op IN ('create', 'update')
"""


class PostgresMemoryStore:
    """Memories, their hash-chained log, quarantines and the snapshot catalog in PostgreSQL.

    Put the schema in the URL to keep the tables apart:
    ``postgresql://keel@db/keel?options=-csearch_path%3Dmemory``.

    >>> store = PostgresMemoryStore(url="postgresql://keel@db:5432/keel", pool_size=10)
    >>> await store.open()
    """

    def __init__(
        self,
        *,
        url: str,
        pool_size: int = 10,
        connect_timeout_s: float = 5.0,
        acquire_timeout_s: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        if pool_size < 1:
            raise ConfigError(f"memory store pool_size is {pool_size}; it must be at least 1")
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(
                f"memory store URL is not a valid PostgreSQL URL ({exc}); expected "
                "postgresql://USER@HOST:PORT/DATABASE"
            ) from exc
        self._url = url
        host = params.get("host") or params.get("hostaddr") or "localhost"
        self._where = f"{host}:{params.get('port') or '5432'}/{params.get('dbname') or 'postgres'}"
        self._pool_size = pool_size
        self._connect_timeout_s = connect_timeout_s
        self._acquire_timeout_s = acquire_timeout_s
        self._clock: Clock = clock or SystemClock()
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(2, round(connect_timeout_s)),
        }
        if "application_name" not in params:
            self._connect_kwargs["application_name"] = "agentkeel-memory"
        self._pool: AsyncConnectionPool[_Connection] | None = None

    def describe(self) -> str:
        """host:port/database, for logs and messages (never the password)."""
        return f"postgresql:{self._where}"

    # --- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        """Connect, create the tables if absent, and start the pool."""
        if self._pool is not None:
            return
        try:
            conn = await psycopg.AsyncConnection.connect(self._url, **self._connect_kwargs)
            async with conn, conn.transaction():
                await conn.execute(_SCHEMA_LOCK_SQL)
                await conn.execute(_SCHEMA)
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot create the memory tables in PostgreSQL at {self._where}: "
                f"{_first_line(exc)}. Grant the store's user CREATE on its schema."
            ) from exc
        pool: AsyncConnectionPool[_Connection] = AsyncConnectionPool(
            self._url,
            kwargs=self._connect_kwargs,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            timeout=self._acquire_timeout_s,
            name="agentkeel-memory",
        )
        try:
            await pool.open(wait=True, timeout=self._connect_timeout_s)
        except PoolTimeout as exc:
            await pool.close()
            raise self._unavailable(exc) from exc
        self._pool = pool

    async def aclose(self) -> None:
        """Close every pooled connection; safe to call twice."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # --- writes -------------------------------------------------------------

    async def write(
        self, ops: Sequence[WriteOp], *, idempotency_key: str | None = None
    ) -> WriteResult:
        """Apply every op or none, in one transaction; see ``MemoryStore.write``."""
        planner.check_ops(ops)
        now = self._clock.time()
        fingerprint = planner.fingerprint(ops) if idempotency_key is not None else ""
        async with self._connection() as conn, conn.transaction():
            head = await _lock_head(conn)
            if idempotency_key is not None:
                cursor = await conn.execute(
                    "SELECT fingerprint, result FROM memory_idempotency WHERE key = %s",
                    (idempotency_key,),
                )
                row = await cursor.fetchone()
                if row is not None:
                    return _idempotent_result(idempotency_key, fingerprint, row[0], row[1])
            current = await _fetch_many(conn, planner.referenced_ids(ops))
            plan = planner.plan_write(ops, head=head, current=current, now=now)
            await _apply_plan(conn, plan)
            assert plan.result is not None
            if idempotency_key is not None:
                await conn.execute(
                    "INSERT INTO memory_idempotency (key, fingerprint, result, created_at) "
                    "VALUES (%s, %s, %s, %s)",
                    (
                        idempotency_key,
                        fingerprint,
                        canonical_json(plan.result.to_json()),
                        now,
                    ),
                )
            return plan.result

    async def restore(
        self,
        *,
        target_seq: int,
        reason: str,
        rows: Iterable[MemoryRecord] | None = None,
    ) -> RestoreResult:
        """Rebuild the state at ``target_seq``; later events go to a new quarantine.
        ``rows`` are read in pages on a worker thread, inside the transaction."""
        now = self._clock.time()
        async with self._connection() as conn, conn.transaction():
            head = await _lock_head(conn)
            target_hash = await _check_target(conn, head, target_seq)
            cursor = await conn.execute(
                "SELECT count(*), min(seq), max(seq) FROM memory_events WHERE seq > %s",
                (target_seq,),
            )
            moved = await cursor.fetchone()
            assert moved is not None
            count = int(moved[0])
            quarantine_id = uuid.uuid4().hex if count else None
            if quarantine_id is not None:
                await conn.execute(
                    "INSERT INTO memory_quarantines "
                    f"({_QUARANTINE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, 0, NULL)",
                    (quarantine_id, now, reason, target_seq, moved[1], moved[2], count),
                )
                await conn.execute(
                    f"INSERT INTO memory_quarantine_events (quarantine_id, {_EVENT_COLUMNS}) "
                    f"SELECT %s, {_EVENT_COLUMNS} FROM memory_events WHERE seq > %s",
                    (quarantine_id, target_seq),
                )
                await conn.execute("DELETE FROM memory_events WHERE seq > %s", (target_seq,))
            await conn.execute("DELETE FROM memories")
            if rows is None:
                await conn.execute(_REPLAY_SQL)
            else:
                source = iter(rows)
                async with conn.cursor() as cur:
                    while page := await asyncio.to_thread(_take, source, PAGE_SIZE):
                        await cur.executemany(
                            f"INSERT INTO memories ({_INSERT_MEMORY_COLUMNS}) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                            [_memory_params(memory) for memory in page],
                        )
            marker = planner.plan_restore_marker(
                head=ChainHead(seq=target_seq, hash=target_hash, last_seq=head.last_seq),
                now=now,
                target_seq=target_seq,
                quarantine_id=quarantine_id,
                moved=count,
                reason=reason,
            )
            await _apply_plan(conn, marker)
            assert marker.head is not None
            if quarantine_id is not None:
                await conn.execute(
                    "UPDATE memory_quarantines SET restore_seq = %s WHERE id = %s",
                    (marker.head.seq, quarantine_id),
                )
            cursor = await conn.execute("SELECT count(*) FROM memories")
            total = await cursor.fetchone()
            return RestoreResult(
                target_seq=target_seq,
                restore_seq=marker.head.seq,
                quarantine_id=quarantine_id,
                quarantined_events=count,
                memories=0 if total is None else int(total[0]),
            )

    async def replay_quarantine(self, quarantine_id: str) -> ReplayResult:
        """Apply a quarantine's events again as new events; mark it replayed."""
        now = self._clock.time()
        async with self._connection() as conn, conn.transaction():
            head = await _lock_head(conn)
            cursor = await conn.execute(
                "SELECT replayed_at FROM memory_quarantines WHERE id = %s", (quarantine_id,)
            )
            row = await cursor.fetchone()
            if row is None:
                raise _quarantine_not_found(quarantine_id)
            if row[0] is not None:
                raise Conflict(
                    f"quarantine {quarantine_id!r} was already replayed; replaying it twice "
                    "would apply its writes twice.",
                    code="quarantine_replayed",
                )
            events = await _quarantine_events(conn, quarantine_id)
            ids = sorted({event.memory_id for event in events if event.memory_id})
            current = await _fetch_many(conn, ids)
            plan = planner.plan_replay(events, head=head, current=current, now=now)
            await _apply_plan(conn, plan)
            await conn.execute(
                "UPDATE memory_quarantines SET replayed_at = %s WHERE id = %s",
                (now, quarantine_id),
            )
            return ReplayResult(
                quarantine_id=quarantine_id, applied=len(plan.events), skipped=tuple(plan.skipped)
            )

    # --- reads --------------------------------------------------------------

    async def get(self, memory_id: str) -> MemoryRecord | None:
        """The memory, or None if it does not exist."""
        async with self._connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE id = %s", (memory_id,)
            )
            row = await cursor.fetchone()
        return None if row is None else _memory_from_row(row)

    async def search(self, query: SearchQuery) -> list[SearchHit]:
        """Ranked full-text hits (``ts_rank``), or the newest memories when no text."""
        terms = planner.query_terms(query.text)
        where = ["m.namespace = %(namespace)s"]
        params: dict[str, Any] = {"namespace": query.namespace, "limit": query.limit}
        if query.tags:
            where.append("m.tags @> %(tags)s::text[]")
            params["tags"] = list(query.tags)
        if query.since is not None:
            where.append("m.created_at >= %(since)s")
            params["since"] = query.since
        if query.until is not None:
            where.append("m.created_at <= %(until)s")
            params["until"] = query.until
        columns = ", ".join(f"m.{column.strip()}" for column in _MEMORY_COLUMNS.split(","))
        async with self._connection() as conn:
            if not terms:
                cursor = await conn.execute(
                    f"SELECT {columns} FROM memories AS m WHERE {' AND '.join(where)} "
                    "ORDER BY m.created_at DESC, m.id LIMIT %(limit)s",
                    params,
                )
                rows = await cursor.fetchall()
                return [SearchHit(memory=_memory_from_row(row), score=None) for row in rows]
            params["query"] = " | ".join(f"'{term}'" for term in terms)
            cursor = await conn.execute(
                f"SELECT {columns}, ts_rank(m.search, q) AS score "
                "FROM memories AS m, to_tsquery('english', %(query)s) AS q "
                f"WHERE m.search @@ q AND {' AND '.join(where)} "
                "ORDER BY score DESC, m.id LIMIT %(limit)s",
                params,
            )
            rows = await cursor.fetchall()
        return [SearchHit(memory=_memory_from_row(row), score=float(row[9])) for row in rows]

    async def stats(self) -> StoreStats:
        """Counts, the chain head and the size of the memory tables."""
        async with self._connection() as conn:
            cursor = await conn.execute(
                "SELECT (SELECT count(*) FROM memories), (SELECT count(*) FROM memory_events), "
                "pg_total_relation_size('memories') + pg_total_relation_size('memory_events')"
            )
            row = await cursor.fetchone()
            head = await _read_head(conn)
        assert row is not None
        return StoreStats(
            memories=int(row[0]), events=int(row[1]), head=head, size_bytes=int(row[2])
        )

    async def event_at(self, seq: int) -> EventRecord | None:
        """The live event with this sequence number, if any."""
        async with self._connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM memory_events WHERE seq = %s", (seq,)
            )
            row = await cursor.fetchone()
        return None if row is None else _event_from_row(row)

    async def seq_at_time(self, at: float) -> int:
        """The newest live event at or before ``at`` (epoch seconds); 0 if none."""
        async with self._connection() as conn:
            cursor = await conn.execute(
                "SELECT max(seq) FROM memory_events WHERE time <= %s", (at,)
            )
            row = await cursor.fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[StateReader]:
        """A consistent read-only view: one REPEATABLE READ transaction."""
        async with self._connection() as conn:
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield _PostgresReader(conn)
            finally:
                await conn.execute("ROLLBACK")

    # --- quarantine and snapshots -------------------------------------------

    async def list_quarantines(self) -> list[QuarantineRecord]:
        async with self._connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_QUARANTINE_COLUMNS} FROM memory_quarantines "
                "ORDER BY created_at, restore_seq"
            )
            rows = await cursor.fetchall()
        return [_quarantine_from_row(row) for row in rows]

    async def quarantine_events(self, quarantine_id: str) -> list[EventRecord]:
        async with self._connection() as conn:
            return await _quarantine_events(conn, quarantine_id)

    async def add_snapshot(self, snapshot: SnapshotRecord) -> None:
        async with self._connection() as conn:
            await conn.execute(
                f"INSERT INTO memory_snapshots ({_SNAPSHOT_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    snapshot.id,
                    snapshot.label,
                    snapshot.kind,
                    snapshot.seq,
                    snapshot.head_hash,
                    snapshot.created_at,
                    snapshot.path,
                    snapshot.sha256,
                    snapshot.size_bytes,
                    snapshot.memories,
                    snapshot.state_digest,
                    snapshot.verified_at,
                    snapshot.verified_ok,
                    snapshot.verify_message,
                ),
            )

    async def list_snapshots(self) -> list[SnapshotRecord]:
        async with self._connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_SNAPSHOT_COLUMNS} FROM memory_snapshots ORDER BY created_at, id"
            )
            rows = await cursor.fetchall()
        return [_snapshot_from_row(row) for row in rows]

    async def get_snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        async with self._connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_SNAPSHOT_COLUMNS} FROM memory_snapshots WHERE id = %s", (snapshot_id,)
            )
            row = await cursor.fetchone()
        return None if row is None else _snapshot_from_row(row)

    async def record_verification(
        self, snapshot_id: str, *, at: float, ok: bool, message: str
    ) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE memory_snapshots SET verified_at = %s, verified_ok = %s, "
                "verify_message = %s WHERE id = %s",
                (at, ok, message, snapshot_id),
            )

    async def delete_snapshot(self, snapshot_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute("DELETE FROM memory_snapshots WHERE id = %s", (snapshot_id,))

    # --- plumbing -----------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Connection]:
        pool = self._pool
        if pool is None:
            raise Unavailable(
                f"PostgreSQL memory store at {self._where} is not open (never opened, or "
                "closed during shutdown); call `await store.open()` first",
                code="store_unavailable",
            )
        try:
            async with pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise Unavailable(
                f"no connection to PostgreSQL at {self._where} became free within "
                f"{self._acquire_timeout_s:g} s (pool_size={self._pool_size}): the database "
                "is down or slow, or the pool is too small. Check the database, then raise "
                "the memory store's pool_size if it is healthy.",
                code="store_unavailable",
                retry_after=1.0,
            ) from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise self._unavailable(exc) from exc
        except psycopg.DataError as exc:
            raise InvalidRequest(
                f"PostgreSQL at {self._where} refused a value: {_first_line(exc)}. "
                "Text cannot contain NUL characters.",
                code="invalid_value",
            ) from exc

    def _unavailable(self, exc: BaseException) -> Unavailable:
        return Unavailable(
            f"PostgreSQL memory store at {self._where} is unavailable: {_first_line(exc)}. "
            "Check that the database is up and reachable, and the memory store URL.",
            code="store_unavailable",
            retry_after=1.0,
        )


# -- helpers ---------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _memory_from_row(row: Sequence[Any]) -> MemoryRecord:
    return MemoryRecord(
        id=row[0],
        namespace=row[1],
        content=row[2],
        tags=tuple(row[3]),
        importance=float(row[4]),
        metadata=json.loads(row[5]),
        created_at=float(row[6]),
        updated_at=float(row[7]),
        version=int(row[8]),
    )


def _memory_params(memory: MemoryRecord) -> tuple[Any, ...]:
    return (
        memory.id,
        memory.namespace,
        memory.content,
        list(memory.tags),
        " ".join(memory.tags),
        memory.importance,
        canonical_json(dict(memory.metadata)),
        memory.created_at,
        memory.updated_at,
        memory.version,
    )


def _event_from_row(row: Sequence[Any]) -> EventRecord:
    return EventRecord(
        seq=int(row[0]),
        time=float(row[1]),
        namespace=row[2],
        op=row[3],
        memory_id=row[4],
        payload=row[5],
        prev_hash=row[6],
        hash=row[7],
    )


def _quarantine_from_row(row: Sequence[Any]) -> QuarantineRecord:
    return QuarantineRecord(
        id=row[0],
        created_at=float(row[1]),
        reason=row[2],
        target_seq=int(row[3]),
        from_seq=int(row[4]),
        to_seq=int(row[5]),
        event_count=int(row[6]),
        restore_seq=int(row[7]),
        replayed_at=None if row[8] is None else float(row[8]),
    )


def _snapshot_from_row(row: Sequence[Any]) -> SnapshotRecord:
    return SnapshotRecord(
        id=row[0],
        label=row[1],
        kind=row[2],
        seq=int(row[3]),
        head_hash=row[4],
        created_at=float(row[5]),
        path=row[6],
        sha256=row[7],
        size_bytes=int(row[8]),
        memories=int(row[9]),
        state_digest=row[10],
        verified_at=None if row[11] is None else float(row[11]),
        verified_ok=row[12],
        verify_message=row[13],
    )


async def _read_head(conn: _Connection) -> ChainHead:
    cursor = await conn.execute("SELECT head_seq, head_hash, last_seq FROM memory_chain")
    row = await cursor.fetchone()
    assert row is not None
    return ChainHead(seq=int(row[0]), hash=row[1], last_seq=int(row[2]))


async def _lock_head(conn: _Connection) -> ChainHead:
    cursor = await conn.execute(
        "SELECT head_seq, head_hash, last_seq FROM memory_chain WHERE id = 1 FOR UPDATE"
    )
    row = await cursor.fetchone()
    assert row is not None
    return ChainHead(seq=int(row[0]), hash=row[1], last_seq=int(row[2]))


async def _fetch_many(conn: _Connection, ids: Sequence[str]) -> dict[str, MemoryRecord]:
    if not ids:
        return {}
    cursor = await conn.execute(
        f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE id = ANY(%s::text[])", (list(ids),)
    )
    return {row[0]: _memory_from_row(row) for row in await cursor.fetchall()}


async def _apply_plan(conn: _Connection, plan: planner.Plan) -> None:
    async with conn.cursor() as cur:
        if plan.events:
            await cur.executemany(
                f"INSERT INTO memory_events ({_EVENT_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (e.seq, e.time, e.namespace, e.op, e.memory_id, e.payload, e.prev_hash, e.hash)
                    for e in plan.events
                ],
            )
        deleted = [key for key, value in plan.rows.items() if value is None]
        upserts = [value for value in plan.rows.values() if value is not None]
        if deleted:
            await cur.execute("DELETE FROM memories WHERE id = ANY(%s::text[])", (deleted,))
        if upserts:
            await cur.executemany(_UPSERT_SQL, [_memory_params(memory) for memory in upserts])
    assert plan.head is not None
    await conn.execute(
        "UPDATE memory_chain SET head_seq = %s, head_hash = %s, last_seq = %s",
        (plan.head.seq, plan.head.hash, plan.head.last_seq),
    )


def _idempotent_result(key: str, fingerprint: str, stored_fp: str, result: str) -> WriteResult:
    if stored_fp != fingerprint:
        raise Conflict(
            f"Idempotency-Key {key!r} was already used for a different request. Use a new "
            "key for a new write; reuse a key only to retry the very same request.",
            code="idempotency_key_reused",
        )
    return WriteResult.from_json(json.loads(result), replayed=True)


async def _check_target(conn: _Connection, head: ChainHead, target_seq: int) -> str:
    if target_seq < 0 or target_seq > head.seq:
        raise InvalidRequest(
            f"cannot restore to sequence {target_seq}: the live log runs from 1 to {head.seq}. "
            "Pick a sequence in that range (GET /v1/integrity shows the head)."
        )
    if target_seq == 0:
        return GENESIS_HASH
    cursor = await conn.execute("SELECT hash FROM memory_events WHERE seq = %s", (target_seq,))
    row = await cursor.fetchone()
    if row is None:
        raise InvalidRequest(
            f"cannot restore to sequence {target_seq}: that event is not in the live log (an "
            "earlier restore moved it to a quarantine). Replay that quarantine first, or pick "
            "another sequence."
        )
    return str(row[0])


def _quarantine_not_found(quarantine_id: str) -> NotFound:
    return NotFound(
        f"quarantine {quarantine_id!r} does not exist; GET /v1/quarantine lists them.",
        code="quarantine_not_found",
    )


async def _quarantine_events(conn: _Connection, quarantine_id: str) -> list[EventRecord]:
    cursor = await conn.execute("SELECT 1 FROM memory_quarantines WHERE id = %s", (quarantine_id,))
    if await cursor.fetchone() is None:
        raise _quarantine_not_found(quarantine_id)
    cursor = await conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM memory_quarantine_events WHERE quarantine_id = %s "
        "ORDER BY seq",
        (quarantine_id,),
    )
    return [_event_from_row(row) for row in await cursor.fetchall()]


class _PostgresReader:
    """Pages of one REPEATABLE READ transaction."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def head(self) -> ChainHead:
        return await _read_head(self._conn)

    async def events_by_seq(self) -> AsyncIterator[list[EventRecord]]:
        last = 0
        while True:
            cursor = await self._conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM memory_events WHERE seq > %s ORDER BY seq LIMIT %s",
                (last, PAGE_SIZE),
            )
            rows = await cursor.fetchall()
            if not rows:
                return
            page = [_event_from_row(row) for row in rows]
            last = page[-1].seq
            yield page

    async def events_by_memory(
        self, *, up_to_seq: int | None = None
    ) -> AsyncIterator[list[EventRecord]]:
        last_id, last_seq = "", 0
        limit = up_to_seq if up_to_seq is not None else (1 << 62)
        while True:
            cursor = await self._conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM memory_events "
                "WHERE op <> 'restore' AND (memory_id, seq) > (%s, %s) AND seq <= %s "
                "ORDER BY memory_id, seq LIMIT %s",
                (last_id, last_seq, limit, PAGE_SIZE),
            )
            rows = await cursor.fetchall()
            if not rows:
                return
            page = [_event_from_row(row) for row in rows]
            last_id, last_seq = page[-1].memory_id, page[-1].seq
            yield page

    async def memories_by_id(self) -> AsyncIterator[list[MemoryRecord]]:
        last = ""
        while True:
            cursor = await self._conn.execute(
                f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE id > %s ORDER BY id LIMIT %s",
                (last, PAGE_SIZE),
            )
            rows = await cursor.fetchall()
            if not rows:
                return
            page = [_memory_from_row(row) for row in rows]
            last = page[-1].id
            yield page

    async def fingerprints_by_id(self) -> AsyncIterator[list[str]]:
        last = ""
        while True:
            cursor = await self._conn.execute(
                f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE id > %s ORDER BY id LIMIT %s",
                (last, PAGE_SIZE),
            )
            rows = await cursor.fetchall()
            if not rows:
                return
            yield [
                fingerprint_from_columns(
                    memory_id=row[0],
                    namespace=row[1],
                    content=row[2],
                    tags=row[3],
                    importance=row[4],
                    metadata_json=row[5],
                    created_at=row[6],
                    updated_at=row[7],
                    version=row[8],
                )
                for row in rows
            ]
            last = rows[-1][0]


def _take(source: Iterator[MemoryRecord], count: int) -> list[MemoryRecord]:
    return list(itertools.islice(source, count))
