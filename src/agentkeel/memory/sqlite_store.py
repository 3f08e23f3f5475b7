"""The embedded memory store: one SQLite file in WAL mode.

Every call runs on the store's own worker thread with one connection, so
writes are serialized (the hash chain needs that anyway) and the event loop
never waits on disk. A write is ``BEGIN IMMEDIATE`` … ``COMMIT``: the events,
the ``memories`` rows, the chain head and the idempotency key change together
or not at all. Search uses an FTS5 table whose content is the ``memories``
table itself, kept in sync by triggers. Long reads (integrity checks,
snapshots) open their own connection: a WAL read transaction sees one
consistent moment while writes go on.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from agentkeel.memory import planner, tables
from agentkeel.memory.hashchain import canonical_json
from agentkeel.memory.sqlite_search import (
    TOKENIZE,
    SearchBudget,
    TermStats,
    filters,
    ranked_search,
)
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
from agentkeel.storage import sqlite as storage

__all__ = ["SqliteMemoryStore"]

_log = logging.getLogger(__name__)
# Up to 64 MiB of page cache (default 2 MiB): restores, snapshots and checks
# walk the whole store, and search reads many index pages.
_CACHE_KIB = 65536
# Reads through a memory map of up to 4 GiB: a search reads a few hundred rows
# scattered over the file, and a mapped page costs no system call or copy (about
# 6 ms instead of 20 for 1,000 rows at a million memories). Address space only;
# the OS page cache holds the pages either way.
_MMAP_BYTES = 4 << 30


# The namespace as one search token (its UTF-8 in hex), indexed with the text: a
# search ANDs it with the query words, so the index yields only that namespace's
# matches instead of every namespace's, filtered afterwards.
_NS_KEY_COLUMN = "ns_key TEXT GENERATED ALWAYS AS ('ns' || hex(namespace)) VIRTUAL"
_NAMESPACE_INDEX = (
    "CREATE INDEX IF NOT EXISTS memories_namespace_idx ON memories (namespace, created_at)"
)
_FTS_TABLE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5 ("
    "content, tags, ns_key, content='memories', content_rowid='rowid', "
    f"tokenize='{TOKENIZE}')"
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS memory_events (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    namespace TEXT NOT NULL,
    op TEXT NOT NULL,
    memory_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS memory_events_memory_idx ON memory_events (memory_id, seq);
CREATE INDEX IF NOT EXISTS memory_events_time_idx ON memory_events (time);
CREATE TABLE IF NOT EXISTS memory_chain (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    head_seq INTEGER NOT NULL,
    head_hash TEXT NOT NULL,
    last_seq INTEGER NOT NULL
);
INSERT OR IGNORE INTO memory_chain (id, head_seq, head_hash, last_seq)
VALUES (1, 0, '{GENESIS_HASH}', 0);
CREATE TABLE IF NOT EXISTS memories (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    namespace TEXT NOT NULL,
    content TEXT NOT NULL,
    tags TEXT NOT NULL,
    importance REAL NOT NULL,
    metadata TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    version INTEGER NOT NULL,
    {_NS_KEY_COLUMN}
);
{_NAMESPACE_INDEX};
{_FTS_TABLE};
CREATE TABLE IF NOT EXISTS memory_idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS memory_quarantines (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    reason TEXT NOT NULL,
    target_seq INTEGER NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq INTEGER NOT NULL,
    event_count INTEGER NOT NULL,
    restore_seq INTEGER NOT NULL,
    replayed_at REAL
);
CREATE TABLE IF NOT EXISTS memory_quarantine_events (
    quarantine_id TEXT NOT NULL REFERENCES memory_quarantines (id),
    seq INTEGER NOT NULL,
    time REAL NOT NULL,
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
    seq INTEGER NOT NULL,
    head_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    memories INTEGER NOT NULL,
    state_digest TEXT NOT NULL,
    verified_at REAL,
    verified_ok INTEGER,
    verify_message TEXT
);
"""

_TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, content, tags, ns_key)
    VALUES (new.rowid, new.content, new.tags, new.ns_key);
END;
CREATE TRIGGER IF NOT EXISTS memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content, tags, ns_key)
    VALUES ('delete', old.rowid, old.content, old.tags, old.ns_key);
END;
CREATE TRIGGER IF NOT EXISTS memories_fts_update AFTER UPDATE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content, tags, ns_key)
    VALUES ('delete', old.rowid, old.content, old.tags, old.ns_key);
    INSERT INTO memories_fts (rowid, content, tags, ns_key)
    VALUES (new.rowid, new.content, new.tags, new.ns_key);
END;
"""

_DROP_TRIGGERS = """
DROP TRIGGER IF EXISTS memories_fts_insert;
DROP TRIGGER IF EXISTS memories_fts_delete;
DROP TRIGGER IF EXISTS memories_fts_update;
"""

_UPSERT_SQL = f"""
INSERT INTO memories ({tables.MEMORY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    namespace = excluded.namespace, content = excluded.content, tags = excluded.tags,
    importance = excluded.importance, metadata = excluded.metadata,
    created_at = excluded.created_at, updated_at = excluded.updated_at,
    version = excluded.version
"""

# The state a replay of the live log gives: per memory, its newest event, unless a delete.
_REPLAY_SQL = f"""
INSERT INTO memories ({tables.MEMORY_COLUMNS})
SELECT e.memory_id, e.namespace, json_extract(e.payload, '$.content'),
    json_extract(e.payload, '$.tags'), json_extract(e.payload, '$.importance'),
    json_extract(e.payload, '$.metadata'), json_extract(e.payload, '$.created_at'),
    json_extract(e.payload, '$.updated_at'), json_extract(e.payload, '$.version')
FROM memory_events AS e
WHERE e.op IN ('create', 'update') AND e.seq = (
    SELECT max(x.seq) FROM memory_events AS x WHERE x.memory_id = e.memory_id AND x.op != 'restore'
)
"""


class SqliteMemoryStore:
    """Memories, their hash-chained event log, quarantines and the snapshot catalog
    in one SQLite file.

    ``busy_timeout_s``: how long a write waits for another process's lock before
    failing with ``Unavailable``. ``clock`` stamps events. ``search_budget``: how
    much one search may read (see ``sqlite_search``).

    >>> store = SqliteMemoryStore(path=Path(".keel/memory/memory.db"))
    >>> await store.open()
    >>> await store.write([CreateMemory(namespace="agent:support", content="likes tea")])
    """

    def __init__(
        self,
        *,
        path: Path,
        busy_timeout_s: float = 5.0,
        clock: Clock | None = None,
        search_budget: SearchBudget | None = None,
    ) -> None:
        self._path = Path(path)
        self._search_budget = search_budget or SearchBudget()
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        self._clock: Clock = clock or SystemClock()
        self._errors = storage.SqliteErrors(
            label="SQLite memory store",
            path=self._path,
            busy_timeout_ms=self._busy_timeout_ms,
            retry_after=1.0,
            file_kind="a memory database",
            unusable_hint="; restore a snapshot if it is",
        )
        self._worker = storage.SqliteWorker(thread_name="keel-memory", errors=self._errors)
        self._term_stats = TermStats(clock=self._clock)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def describe(self) -> str:
        """Where the store is, for logs and messages."""
        return f"sqlite:{self._path}"

    # --- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        """Open (creating the file, its directory and the tables if absent)."""
        await self._worker.open(self._connect_and_migrate)

    async def aclose(self) -> None:
        """Close the connection and stop the worker; safe to call twice."""
        await self._worker.aclose()

    # --- writes -------------------------------------------------------------

    async def write(
        self, ops: Sequence[WriteOp], *, idempotency_key: str | None = None
    ) -> WriteResult:
        """Apply every op or none, in one transaction; see ``MemoryStore.write``."""
        planner.check_ops(ops)
        return await self._worker.run(_write, ops, idempotency_key, self._clock.time())

    async def restore(
        self,
        *,
        target_seq: int,
        reason: str,
        rows: Iterable[MemoryRecord] | None = None,
    ) -> RestoreResult:
        """Rebuild the state at ``target_seq``; later events go to a new quarantine.
        ``rows`` are read on the store's thread, one at a time, inside the transaction."""
        return await self._worker.run(_restore, target_seq, reason, rows, self._clock.time())

    async def replay_quarantine(self, quarantine_id: str) -> ReplayResult:
        """Apply a quarantine's events again as new events; mark it replayed."""
        return await self._worker.run(_replay_quarantine, quarantine_id, self._clock.time())

    # --- reads --------------------------------------------------------------

    async def get(self, memory_id: str) -> MemoryRecord | None:
        """The memory, or None if it does not exist."""
        return await self._worker.run(_get, memory_id)

    async def search(self, query: SearchQuery) -> SearchResult:
        """Ranked full-text hits (BM25 over FTS5 matches), or the newest memories when
        no text; see ``SearchResult`` for what is guaranteed."""
        return await self._worker.run(_search, query, self._term_stats, self._search_budget)

    async def stats(self) -> StoreStats:
        """Counts, the chain head and the file size."""
        stats = await self._worker.run(_stats)
        size = 0
        for suffix in ("", "-wal"):
            candidate = self._path.with_name(self._path.name + suffix)
            if candidate.exists():
                size += candidate.stat().st_size
        return StoreStats(
            memories=stats.memories, events=stats.events, head=stats.head, size_bytes=size
        )

    async def event_at(self, seq: int) -> EventRecord | None:
        """The live event with this sequence number, if any."""
        return await self._worker.run(_event_at, seq)

    async def seq_at_time(self, at: float) -> int:
        """The newest live event at or before ``at`` (epoch seconds); 0 if none."""
        return await self._worker.run(_seq_at_time, at)

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[StateReader]:
        """A consistent read-only view on its own connection and thread."""
        if not self._worker.is_open:
            raise self._errors.not_open()
        worker = storage.SqliteWorker(thread_name="keel-memory-read", errors=self._errors)
        await worker.open(self._connect_reader)
        try:
            yield _SqliteReader(worker)
        finally:
            await worker.aclose()

    # --- quarantine and snapshots -------------------------------------------

    async def list_quarantines(self) -> list[QuarantineRecord]:
        return await self._worker.run(_list_quarantines)

    async def quarantine_events(self, quarantine_id: str) -> list[EventRecord]:
        return await self._worker.run(_quarantine_events, quarantine_id)

    async def add_snapshot(self, snapshot: SnapshotRecord) -> None:
        await self._worker.run(_add_snapshot, snapshot)

    async def list_snapshots(self) -> list[SnapshotRecord]:
        return await self._worker.run(_list_snapshots)

    async def get_snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        return await self._worker.run(_get_snapshot, snapshot_id)

    async def record_verification(
        self, snapshot_id: str, *, at: float, ok: bool, message: str
    ) -> None:
        await self._worker.run(_record_verification, snapshot_id, at, ok, message)

    async def delete_snapshot(self, snapshot_id: str) -> None:
        await self._worker.run(_delete_snapshot, snapshot_id)

    # --- plumbing -----------------------------------------------------------

    def _connect_and_migrate(self) -> sqlite3.Connection:
        return storage.open_database(
            self._path,
            busy_timeout_ms=self._busy_timeout_ms,
            cache_size_kib=_CACHE_KIB,
            mmap_size_bytes=_MMAP_BYTES,
            migrate=_migrate,
        )

    def _connect_reader(self) -> sqlite3.Connection:
        conn = storage.connect(
            self._path,
            busy_timeout_ms=self._busy_timeout_ms,
            cache_size_kib=_CACHE_KIB,
            mmap_size_bytes=_MMAP_BYTES,
        )
        conn.execute("BEGIN")
        # The first read pins the WAL snapshot every later page of this reader sees.
        conn.execute("SELECT head_seq FROM memory_chain").fetchone()
        return conn


# -- connection helpers --------------------------------------------------------------


def _migrate(conn: sqlite3.Connection) -> None:
    for statement in storage.split_statements(_SCHEMA):
        conn.execute(statement)
    _add_namespace_key(conn)
    _create_triggers(conn)


def _add_namespace_key(conn: sqlite3.Connection) -> None:
    """Bring a file from before the namespace search key up to date (one transaction)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_xinfo(memories)")}
    if "ns_key" in columns:
        return
    _log.info("adding the namespace search key to %s (one-time index rebuild)", "memories")
    _drop_triggers(conn)
    conn.execute("DROP TABLE IF EXISTS memories_fts")
    conn.execute(f"ALTER TABLE memories ADD COLUMN {_NS_KEY_COLUMN}")
    conn.execute(_FTS_TABLE)
    conn.execute("INSERT INTO memories_fts (memories_fts) VALUES ('rebuild')")


def _create_triggers(conn: sqlite3.Connection) -> None:
    for statement in _TRIGGERS.split("END;"):
        if statement.strip():
            conn.execute(statement.strip() + " END;")


def _drop_triggers(conn: sqlite3.Connection) -> None:
    for statement in storage.split_statements(_DROP_TRIGGERS):
        conn.execute(statement)


def _memory_from_row(row: Sequence[Any]) -> MemoryRecord:
    return tables.memory_from_row(row, tags_as_json=True)


def _memory_params(memory: MemoryRecord) -> tuple[Any, ...]:
    return (
        memory.id,
        memory.namespace,
        memory.content,
        json.dumps(list(memory.tags), ensure_ascii=False) if memory.tags else "[]",
        memory.importance,
        # Most memories carry no metadata; restores write a million of these rows.
        canonical_json(dict(memory.metadata)) if memory.metadata else "{}",
        memory.created_at,
        memory.updated_at,
        memory.version,
    )


def _head(conn: sqlite3.Connection) -> ChainHead:
    row = conn.execute("SELECT head_seq, head_hash, last_seq FROM memory_chain").fetchone()
    return ChainHead(seq=int(row[0]), hash=row[1], last_seq=int(row[2]))


def _set_head(conn: sqlite3.Connection, head: ChainHead) -> None:
    conn.execute(
        "UPDATE memory_chain SET head_seq = ?, head_hash = ?, last_seq = ?",
        (head.seq, head.hash, head.last_seq),
    )


def _fetch_many(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, MemoryRecord]:
    if not ids:
        return {}
    rows = conn.execute(
        f"SELECT {tables.MEMORY_COLUMNS} FROM memories "
        "WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(ids)),),
    ).fetchall()
    return {row[0]: _memory_from_row(row) for row in rows}


def _apply_plan(conn: sqlite3.Connection, plan: planner.Plan) -> None:
    conn.executemany(
        f"INSERT INTO memory_events ({tables.EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [tables.event_params(event) for event in plan.events],
    )
    for memory_id, memory in plan.rows.items():
        if memory is None:
            conn.execute("DELETE FROM memories WHERE id = ?", (memory_id,))
        else:
            conn.execute(_UPSERT_SQL, _memory_params(memory))
    assert plan.head is not None
    _set_head(conn, plan.head)


# -- operations (run on the worker thread) --------------------------------------------


def _write(
    conn: sqlite3.Connection, ops: Sequence[WriteOp], key: str | None, now: float
) -> WriteResult:
    fingerprint = planner.fingerprint(ops) if key is not None else ""
    with storage.write(conn):
        if key is not None:
            row = conn.execute(
                "SELECT fingerprint, result FROM memory_idempotency WHERE key = ?", (key,)
            ).fetchone()
            if row is not None:
                return planner.replayed_result(key, fingerprint, row[0], row[1])
        head = _head(conn)
        current = _fetch_many(conn, planner.referenced_ids(ops))
        plan = planner.plan_write(ops, head=head, current=current, now=now)
        _apply_plan(conn, plan)
        assert plan.result is not None
        if key is not None:
            conn.execute(
                "INSERT INTO memory_idempotency (key, fingerprint, result, created_at) "
                "VALUES (?, ?, ?, ?)",
                (key, fingerprint, canonical_json(plan.result.to_json()), now),
            )
        return plan.result


def _get(conn: sqlite3.Connection, memory_id: str) -> MemoryRecord | None:
    row = conn.execute(
        f"SELECT {tables.MEMORY_COLUMNS} FROM memories WHERE id = ?", (memory_id,)
    ).fetchone()
    return None if row is None else _memory_from_row(row)


def _search(
    conn: sqlite3.Connection, query: SearchQuery, stats: TermStats, budget: SearchBudget
) -> SearchResult:
    terms = planner.query_terms(query.text)
    columns = ", ".join(f"m.{column.strip()}" for column in tables.MEMORY_COLUMNS.split(","))
    if terms:
        return ranked_search(
            conn, query, stats=stats, budget=budget, columns=columns, to_record=_memory_from_row
        )
    where, params = filters(query)
    found = conn.execute(
        f"SELECT {columns} FROM memories AS m WHERE {' AND '.join(where)} "
        "ORDER BY m.created_at DESC, m.id LIMIT ?",
        (*params, query.limit),
    ).fetchall()
    return SearchResult(
        hits=tuple(SearchHit(memory=_memory_from_row(row), score=None) for row in found)
    )


def _stats(conn: sqlite3.Connection) -> StoreStats:
    memories = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
    events = conn.execute("SELECT count(*) FROM memory_events").fetchone()[0]
    return StoreStats(memories=memories, events=events, head=_head(conn), size_bytes=None)


def _event_at(conn: sqlite3.Connection, seq: int) -> EventRecord | None:
    row = conn.execute(
        f"SELECT {tables.EVENT_COLUMNS} FROM memory_events WHERE seq = ?", (seq,)
    ).fetchone()
    return None if row is None else tables.event_from_row(row)


def _seq_at_time(conn: sqlite3.Connection, at: float) -> int:
    row = conn.execute("SELECT max(seq) FROM memory_events WHERE time <= ?", (at,)).fetchone()
    return int(row[0]) if row[0] is not None else 0


def _check_target(conn: sqlite3.Connection, head: ChainHead, target_seq: int) -> str:
    """The hash the chain continues from after restoring to ``target_seq``."""
    planner.check_restore_range(head, target_seq)
    if target_seq == 0:
        return GENESIS_HASH
    row = conn.execute("SELECT hash FROM memory_events WHERE seq = ?", (target_seq,)).fetchone()
    if row is None:
        raise planner.restore_target_quarantined(target_seq)
    return str(row[0])


def _restore(
    conn: sqlite3.Connection,
    target_seq: int,
    reason: str,
    rows: Iterable[MemoryRecord] | None,
    now: float,
) -> RestoreResult:
    with storage.write(conn):
        head = _head(conn)
        target_hash = _check_target(conn, head, target_seq)
        moved = conn.execute(
            "SELECT count(*), min(seq), max(seq) FROM memory_events WHERE seq > ?", (target_seq,)
        ).fetchone()
        count = int(moved[0])
        quarantine_id = uuid.uuid4().hex if count else None
        if quarantine_id is not None:
            conn.execute(
                f"INSERT INTO memory_quarantine_events (quarantine_id, {tables.EVENT_COLUMNS}) "
                f"SELECT ?, {tables.EVENT_COLUMNS} FROM memory_events WHERE seq > ?",
                (quarantine_id, target_seq),
            )
            conn.execute("DELETE FROM memory_events WHERE seq > ?", (target_seq,))
        _drop_triggers(conn)
        # Rebuilt whole afterwards: one sort beats a million scattered index updates.
        conn.execute("DROP INDEX IF EXISTS memories_namespace_idx")
        conn.execute("DELETE FROM memories")
        if rows is None:
            conn.execute(_REPLAY_SQL)
        else:
            conn.executemany(
                f"INSERT INTO memories ({tables.MEMORY_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (_memory_params(memory) for memory in rows),
            )
        conn.execute(_NAMESPACE_INDEX)
        conn.execute("INSERT INTO memories_fts (memories_fts) VALUES ('rebuild')")
        _create_triggers(conn)
        marker = planner.plan_restore_marker(
            head=ChainHead(seq=target_seq, hash=target_hash, last_seq=head.last_seq),
            now=now,
            target_seq=target_seq,
            quarantine_id=quarantine_id,
            moved=count,
            reason=reason,
        )
        _apply_plan(conn, marker)
        assert marker.head is not None
        if quarantine_id is not None:
            conn.execute(
                f"INSERT INTO memory_quarantines ({tables.QUARANTINE_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    quarantine_id,
                    now,
                    reason,
                    target_seq,
                    int(moved[1]),
                    int(moved[2]),
                    count,
                    marker.head.seq,
                ),
            )
        memories = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
        return RestoreResult(
            target_seq=target_seq,
            restore_seq=marker.head.seq,
            quarantine_id=quarantine_id,
            quarantined_events=count,
            memories=int(memories),
        )


def _list_quarantines(conn: sqlite3.Connection) -> list[QuarantineRecord]:
    rows = conn.execute(
        f"SELECT {tables.QUARANTINE_COLUMNS} FROM memory_quarantines "
        "ORDER BY created_at, restore_seq"
    ).fetchall()
    return [tables.quarantine_from_row(row) for row in rows]


def _quarantine_events(conn: sqlite3.Connection, quarantine_id: str) -> list[EventRecord]:
    if (
        conn.execute("SELECT 1 FROM memory_quarantines WHERE id = ?", (quarantine_id,)).fetchone()
        is None
    ):
        raise planner.quarantine_not_found(quarantine_id)
    rows = conn.execute(
        f"SELECT {tables.EVENT_COLUMNS} FROM memory_quarantine_events WHERE quarantine_id = ? "
        "ORDER BY seq",
        (quarantine_id,),
    ).fetchall()
    return [tables.event_from_row(row) for row in rows]


def _replay_quarantine(conn: sqlite3.Connection, quarantine_id: str, now: float) -> ReplayResult:
    with storage.write(conn):
        row = conn.execute(
            "SELECT replayed_at FROM memory_quarantines WHERE id = ?", (quarantine_id,)
        ).fetchone()
        if row is None:
            raise planner.quarantine_not_found(quarantine_id)
        if row[0] is not None:
            raise planner.quarantine_replayed(quarantine_id)
        events = _quarantine_events(conn, quarantine_id)
        current = _fetch_many(conn, planner.replayed_ids(events))
        plan = planner.plan_replay(events, head=_head(conn), current=current, now=now)
        _apply_plan(conn, plan)
        conn.execute(
            "UPDATE memory_quarantines SET replayed_at = ? WHERE id = ?", (now, quarantine_id)
        )
        return ReplayResult(
            quarantine_id=quarantine_id, applied=len(plan.events), skipped=tuple(plan.skipped)
        )


def _add_snapshot(conn: sqlite3.Connection, snapshot: SnapshotRecord) -> None:
    conn.execute(
        f"INSERT INTO memory_snapshots ({tables.SNAPSHOT_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        tables.snapshot_params(snapshot),
    )


def _list_snapshots(conn: sqlite3.Connection) -> list[SnapshotRecord]:
    rows = conn.execute(
        f"SELECT {tables.SNAPSHOT_COLUMNS} FROM memory_snapshots ORDER BY created_at, id"
    ).fetchall()
    return [tables.snapshot_from_row(row) for row in rows]


def _get_snapshot(conn: sqlite3.Connection, snapshot_id: str) -> SnapshotRecord | None:
    row = conn.execute(
        f"SELECT {tables.SNAPSHOT_COLUMNS} FROM memory_snapshots WHERE id = ?", (snapshot_id,)
    ).fetchone()
    return None if row is None else tables.snapshot_from_row(row)


def _record_verification(
    conn: sqlite3.Connection, snapshot_id: str, at: float, ok: bool, message: str
) -> None:
    conn.execute(
        "UPDATE memory_snapshots SET verified_at = ?, verified_ok = ?, verify_message = ? "
        "WHERE id = ?",
        (at, int(ok), message, snapshot_id),
    )


def _delete_snapshot(conn: sqlite3.Connection, snapshot_id: str) -> None:
    conn.execute("DELETE FROM memory_snapshots WHERE id = ?", (snapshot_id,))


# -- the consistent reader -----------------------------------------------------------


class _SqliteReader:
    """Pages of one WAL snapshot, read on the reader's own thread."""

    def __init__(self, worker: storage.SqliteWorker) -> None:
        self._worker = worker

    async def head(self) -> ChainHead:
        return await self._worker.run(_head)

    async def events_by_seq(self) -> AsyncIterator[list[EventRecord]]:
        last = 0
        while True:
            rows = await self._worker.run(
                _fetch,
                f"SELECT {tables.EVENT_COLUMNS} FROM memory_events "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, tables.PAGE_SIZE),
            )
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
            rows = await self._worker.run(
                _fetch,
                f"SELECT {tables.EVENT_COLUMNS} FROM memory_events "
                "WHERE op != 'restore' AND (memory_id, seq) > (?, ?) AND seq <= ? "
                "ORDER BY memory_id, seq LIMIT ?",
                (last_id, last_seq, limit, tables.PAGE_SIZE),
            )
            if not rows:
                return
            page = [tables.event_from_row(row) for row in rows]
            last_id, last_seq = page[-1].memory_id, page[-1].seq
            yield page

    async def memories_by_id(self) -> AsyncIterator[list[MemoryRecord]]:
        last = ""
        while True:
            rows = await self._worker.run(
                _fetch,
                f"SELECT {tables.MEMORY_COLUMNS} FROM memories WHERE id > ? ORDER BY id LIMIT ?",
                (last, tables.PAGE_SIZE),
            )
            if not rows:
                return
            page = [_memory_from_row(row) for row in rows]
            last = page[-1].id
            yield page

    async def fingerprints_by_id(self) -> AsyncIterator[list[str]]:
        last = ""
        while True:
            # Built on the reader's thread, straight from the columns.
            last, page = await self._worker.run(_fingerprint_page, last)
            if not page:
                return
            yield page


def _fingerprint_page(conn: sqlite3.Connection, after: str) -> tuple[str, list[str]]:
    found = conn.execute(
        f"SELECT {tables.MEMORY_COLUMNS} FROM memories WHERE id > ? ORDER BY id LIMIT ?",
        (after, tables.PAGE_SIZE),
    ).fetchall()
    page = [tables.fingerprint_from_row(row, tags_as_json=True) for row in found]
    return (found[-1][0] if found else after), page


def _fetch(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    return conn.execute(sql, params).fetchall()
