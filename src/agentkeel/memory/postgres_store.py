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
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from agentkeel.memory import planner, tables
from agentkeel.memory.hashchain import canonical_json
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
    SearchResult,
    SnapshotRecord,
    StateReader,
    StoreStats,
    WriteOp,
    WriteResult,
)
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.storage.postgres import Connection, PostgresPool

__all__ = ["PostgresMemoryStore"]


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
        self._db = PostgresPool(
            url=url,
            label="PostgreSQL memory store",
            tables="memory",
            url_setting="memory.store_url",
            pool_size_setting="memory.pool_size",
            pool_size=pool_size,
            connect_timeout_s=connect_timeout_s,
            acquire_timeout_s=acquire_timeout_s,
            application_name="agentkeel-memory",
        )
        self._clock: Clock = clock or SystemClock()

    def describe(self) -> str:
        """host:port/database, for logs and messages (never the password)."""
        return f"postgresql:{self._db.where}"

    # --- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        """Connect, create the tables if absent, and start the pool."""
        await self._db.open(
            migrate=_migrate, lock_name="agentkeel:memory:schema", pool_name="agentkeel-memory"
        )

    async def aclose(self) -> None:
        """Close every pooled connection; safe to call twice."""
        await self._db.aclose()

    # --- writes -------------------------------------------------------------

    async def write(
        self, ops: Sequence[WriteOp], *, idempotency_key: str | None = None
    ) -> WriteResult:
        """Apply every op or none, in one transaction; see ``MemoryStore.write``."""
        planner.check_ops(ops)
        now = self._clock.time()
        fingerprint = planner.fingerprint(ops) if idempotency_key is not None else ""
        async with self._db.connection() as conn, conn.transaction():
            head = await _lock_head(conn)
            if idempotency_key is not None:
                cursor = await conn.execute(
                    "SELECT fingerprint, result FROM memory_idempotency WHERE key = %s",
                    (idempotency_key,),
                )
                row = await cursor.fetchone()
                if row is not None:
                    return planner.replayed_result(idempotency_key, fingerprint, row[0], row[1])
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
        async with self._db.connection() as conn, conn.transaction():
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
                    f"({tables.QUARANTINE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, 0, NULL)",
                    (quarantine_id, now, reason, target_seq, moved[1], moved[2], count),
                )
                await conn.execute(
                    f"INSERT INTO memory_quarantine_events (quarantine_id, {tables.EVENT_COLUMNS}) "
                    f"SELECT %s, {tables.EVENT_COLUMNS} FROM memory_events WHERE seq > %s",
                    (quarantine_id, target_seq),
                )
                await conn.execute("DELETE FROM memory_events WHERE seq > %s", (target_seq,))
            await conn.execute("DELETE FROM memories")
            if rows is None:
                await conn.execute(_REPLAY_SQL)
            else:
                source = iter(rows)
                async with conn.cursor() as cur:
                    while page := await asyncio.to_thread(_take, source, tables.PAGE_SIZE):
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
        async with self._db.connection() as conn, conn.transaction():
            head = await _lock_head(conn)
            cursor = await conn.execute(
                "SELECT replayed_at FROM memory_quarantines WHERE id = %s", (quarantine_id,)
            )
            row = await cursor.fetchone()
            if row is None:
                raise planner.quarantine_not_found(quarantine_id)
            if row[0] is not None:
                raise planner.quarantine_replayed(quarantine_id)
            events = await _quarantine_events(conn, quarantine_id)
            current = await _fetch_many(conn, planner.replayed_ids(events))
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
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {tables.MEMORY_COLUMNS} FROM memories WHERE id = %s", (memory_id,)
            )
            row = await cursor.fetchone()
        return None if row is None else tables.memory_from_row(row)

    async def search(self, query: SearchQuery) -> SearchResult:
        """Ranked full-text hits (``ts_rank``), or the newest memories when no text.

        The filters are part of the one query the planner runs over every match, so
        the result is always complete."""
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
        columns = ", ".join(f"m.{column.strip()}" for column in tables.MEMORY_COLUMNS.split(","))
        async with self._db.connection() as conn:
            if not terms:
                cursor = await conn.execute(
                    f"SELECT {columns} FROM memories AS m WHERE {' AND '.join(where)} "
                    "ORDER BY m.created_at DESC, m.id LIMIT %(limit)s",
                    params,
                )
                rows = await cursor.fetchall()
                return SearchResult(
                    hits=tuple(
                        SearchHit(memory=tables.memory_from_row(row), score=None) for row in rows
                    )
                )
            params["query"] = " | ".join(f"'{term}'" for term in terms)
            cursor = await conn.execute(
                f"SELECT {columns}, ts_rank(m.search, q) AS score "
                "FROM memories AS m, to_tsquery('english', %(query)s) AS q "
                f"WHERE m.search @@ q AND {' AND '.join(where)} "
                "ORDER BY score DESC, m.id LIMIT %(limit)s",
                params,
            )
            rows = await cursor.fetchall()
        return SearchResult(
            hits=tuple(
                SearchHit(memory=tables.memory_from_row(row), score=float(row[9])) for row in rows
            )
        )

    async def stats(self) -> StoreStats:
        """Counts, the chain head and the size of the memory tables."""
        async with self._db.connection() as conn:
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
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {tables.EVENT_COLUMNS} FROM memory_events WHERE seq = %s", (seq,)
            )
            row = await cursor.fetchone()
        return None if row is None else tables.event_from_row(row)

    async def seq_at_time(self, at: float) -> int:
        """The newest live event at or before ``at`` (epoch seconds); 0 if none."""
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT max(seq) FROM memory_events WHERE time <= %s", (at,)
            )
            row = await cursor.fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[StateReader]:
        """A consistent read-only view: one REPEATABLE READ transaction."""
        async with self._db.connection() as conn:
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield _PostgresReader(conn)
            finally:
                await conn.execute("ROLLBACK")

    # --- quarantine and snapshots -------------------------------------------

    async def list_quarantines(self) -> list[QuarantineRecord]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {tables.QUARANTINE_COLUMNS} FROM memory_quarantines "
                "ORDER BY created_at, restore_seq"
            )
            rows = await cursor.fetchall()
        return [tables.quarantine_from_row(row) for row in rows]

    async def quarantine_events(self, quarantine_id: str) -> list[EventRecord]:
        async with self._db.connection() as conn:
            return await _quarantine_events(conn, quarantine_id)

    async def add_snapshot(self, snapshot: SnapshotRecord) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                f"INSERT INTO memory_snapshots ({tables.SNAPSHOT_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                tables.snapshot_params(snapshot),
            )

    async def list_snapshots(self) -> list[SnapshotRecord]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {tables.SNAPSHOT_COLUMNS} FROM memory_snapshots ORDER BY created_at, id"
            )
            rows = await cursor.fetchall()
        return [tables.snapshot_from_row(row) for row in rows]

    async def get_snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {tables.SNAPSHOT_COLUMNS} FROM memory_snapshots WHERE id = %s",
                (snapshot_id,),
            )
            row = await cursor.fetchone()
        return None if row is None else tables.snapshot_from_row(row)

    async def record_verification(
        self, snapshot_id: str, *, at: float, ok: bool, message: str
    ) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE memory_snapshots SET verified_at = %s, verified_ok = %s, "
                "verify_message = %s WHERE id = %s",
                (at, ok, message, snapshot_id),
            )

    async def delete_snapshot(self, snapshot_id: str) -> None:
        async with self._db.connection() as conn:
            await conn.execute("DELETE FROM memory_snapshots WHERE id = %s", (snapshot_id,))


# -- helpers ---------------------------------------------------------------------------


async def _migrate(conn: Connection) -> None:
    await conn.execute(_SCHEMA)


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


async def _read_head(conn: Connection) -> ChainHead:
    cursor = await conn.execute("SELECT head_seq, head_hash, last_seq FROM memory_chain")
    row = await cursor.fetchone()
    assert row is not None
    return ChainHead(seq=int(row[0]), hash=row[1], last_seq=int(row[2]))


async def _lock_head(conn: Connection) -> ChainHead:
    cursor = await conn.execute(
        "SELECT head_seq, head_hash, last_seq FROM memory_chain WHERE id = 1 FOR UPDATE"
    )
    row = await cursor.fetchone()
    assert row is not None
    return ChainHead(seq=int(row[0]), hash=row[1], last_seq=int(row[2]))


async def _fetch_many(conn: Connection, ids: Sequence[str]) -> dict[str, MemoryRecord]:
    if not ids:
        return {}
    cursor = await conn.execute(
        f"SELECT {tables.MEMORY_COLUMNS} FROM memories WHERE id = ANY(%s::text[])", (list(ids),)
    )
    return {row[0]: tables.memory_from_row(row) for row in await cursor.fetchall()}


async def _apply_plan(conn: Connection, plan: planner.Plan) -> None:
    async with conn.cursor() as cur:
        if plan.events:
            await cur.executemany(
                f"INSERT INTO memory_events ({tables.EVENT_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [tables.event_params(event) for event in plan.events],
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


async def _check_target(conn: Connection, head: ChainHead, target_seq: int) -> str:
    planner.check_restore_range(head, target_seq)
    if target_seq == 0:
        return GENESIS_HASH
    cursor = await conn.execute("SELECT hash FROM memory_events WHERE seq = %s", (target_seq,))
    row = await cursor.fetchone()
    if row is None:
        raise planner.restore_target_quarantined(target_seq)
    return str(row[0])


async def _quarantine_events(conn: Connection, quarantine_id: str) -> list[EventRecord]:
    cursor = await conn.execute("SELECT 1 FROM memory_quarantines WHERE id = %s", (quarantine_id,))
    if await cursor.fetchone() is None:
        raise planner.quarantine_not_found(quarantine_id)
    cursor = await conn.execute(
        f"SELECT {tables.EVENT_COLUMNS} FROM memory_quarantine_events WHERE quarantine_id = %s "
        "ORDER BY seq",
        (quarantine_id,),
    )
    return [tables.event_from_row(row) for row in await cursor.fetchall()]


class _PostgresReader:
    """Pages of one REPEATABLE READ transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def head(self) -> ChainHead:
        return await _read_head(self._conn)

    async def events_by_seq(self) -> AsyncIterator[list[EventRecord]]:
        last = 0
        while True:
            cursor = await self._conn.execute(
                f"SELECT {tables.EVENT_COLUMNS} FROM memory_events "
                "WHERE seq > %s ORDER BY seq LIMIT %s",
                (last, tables.PAGE_SIZE),
            )
            rows = await cursor.fetchall()
            if not rows:
                return
            page = [tables.event_from_row(row) for row in rows]
            last = page[-1].seq
            yield page

    async def events_by_memory(
        self, *, up_to_seq: int | None = None
    ) -> AsyncIterator[list[EventRecord]]:
        last_id, last_seq = "", 0
        limit = up_to_seq if up_to_seq is not None else (1 << 62)
        while True:
            cursor = await self._conn.execute(
                f"SELECT {tables.EVENT_COLUMNS} FROM memory_events "
                "WHERE op <> 'restore' AND (memory_id, seq) > (%s, %s) AND seq <= %s "
                "ORDER BY memory_id, seq LIMIT %s",
                (last_id, last_seq, limit, tables.PAGE_SIZE),
            )
            rows = await cursor.fetchall()
            if not rows:
                return
            page = [tables.event_from_row(row) for row in rows]
            last_id, last_seq = page[-1].memory_id, page[-1].seq
            yield page

    async def memories_by_id(self) -> AsyncIterator[list[MemoryRecord]]:
        last = ""
        while True:
            cursor = await self._conn.execute(
                f"SELECT {tables.MEMORY_COLUMNS} FROM memories WHERE id > %s ORDER BY id LIMIT %s",
                (last, tables.PAGE_SIZE),
            )
            rows = await cursor.fetchall()
            if not rows:
                return
            page = [tables.memory_from_row(row) for row in rows]
            last = page[-1].id
            yield page

    async def fingerprints_by_id(self) -> AsyncIterator[list[str]]:
        last = ""
        while True:
            cursor = await self._conn.execute(
                f"SELECT {tables.MEMORY_COLUMNS} FROM memories WHERE id > %s ORDER BY id LIMIT %s",
                (last, tables.PAGE_SIZE),
            )
            rows = await cursor.fetchall()
            if not rows:
                return
            yield [tables.fingerprint_from_row(row) for row in rows]
            last = rows[-1][0]


def _take(source: Iterator[MemoryRecord], count: int) -> list[MemoryRecord]:
    return list(itertools.islice(source, count))
