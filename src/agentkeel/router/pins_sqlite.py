"""``SqlitePinStore``: pins and the routing table in one SQLite file (one router).

Every call runs on the store's one worker thread (``storage.sqlite``), so the
event loop never waits on the disk. Expired pins are invisible at once and
deleted by ``purge_expired``, which the router runs now and then.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from agentkeel.router.table import TableDoc
from agentkeel.storage.sqlite import (
    SqliteErrors,
    SqliteWorker,
    check_schema_version,
    open_database,
    split_statements,
    write,
)

__all__ = ["SqlitePinStore"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS router_pins (
    session_id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS router_pins_version ON router_pins (version, expires_at);
CREATE TABLE IF NOT EXISTS router_table (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL,
    doc TEXT NOT NULL
);
"""


class SqlitePinStore:
    """Pins and the routing table in ``path``; pins expire ``ttl_s`` after they were written.

    >>> store = SqlitePinStore(path=Path(".keel/router.db"), ttl_s=172800)
    >>> await store.open()
    >>> await store.put("7f3c…", "v1")
    """

    def __init__(self, *, path: Path, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.where = f"SQLite router store {path}"
        self._ttl_s = ttl_s
        self._clock = clock
        errors = SqliteErrors(
            label="SQLite router store", path=path, busy_timeout_ms=BUSY_TIMEOUT_MS, retry_after=1.0
        )
        self._worker = SqliteWorker(thread_name="keel-router-pins", errors=errors)

    async def open(self) -> None:
        def migrate(conn: sqlite3.Connection) -> None:
            for statement in split_statements(_SCHEMA):
                conn.execute(statement)
            check_schema_version(conn, component="router", version=SCHEMA_VERSION, where=self.where)

        await self._worker.open(
            lambda: open_database(self.path, busy_timeout_ms=BUSY_TIMEOUT_MS, migrate=migrate)
        )

    async def aclose(self) -> None:
        await self._worker.aclose()

    async def get(self, session_id: str) -> str | None:
        return await self._worker.run(_get, session_id, self._clock())

    async def put(self, session_id: str, version: str) -> None:
        await self._worker.run(_put, session_id, version, self._clock() + self._ttl_s)

    async def delete(self, session_id: str) -> None:
        await self._worker.run(_delete, session_id)

    async def counts(self, versions: Iterable[str]) -> dict[str, int]:
        found = await self._worker.run(_counts, self._clock())
        return {version: found.get(version, 0) for version in versions} | found

    async def drop_version(self, version: str) -> int:
        return await self._worker.run(_drop_version, version)

    async def purge_expired(self) -> int:
        """Delete expired pins; how many."""
        return await self._worker.run(_purge, self._clock())

    async def table_revision(self) -> int:
        return await self._worker.run(_revision)

    async def read_table(self) -> TableDoc | None:
        text = await self._worker.run(_read_table)
        return TableDoc.from_json(text) if text is not None else None

    async def write_table(self, doc: TableDoc, *, expected_revision: int) -> bool:
        return await self._worker.run(_write_table, doc.revision, doc.to_json(), expected_revision)


def _get(conn: sqlite3.Connection, session_id: str, now: float) -> str | None:
    row = conn.execute(
        "SELECT version FROM router_pins WHERE session_id = ? AND expires_at > ?",
        (session_id, now),
    ).fetchone()
    return str(row[0]) if row is not None else None


def _put(conn: sqlite3.Connection, session_id: str, version: str, expires_at: float) -> None:
    conn.execute(
        "INSERT INTO router_pins (session_id, version, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT (session_id) DO UPDATE SET version = excluded.version, "
        "expires_at = excluded.expires_at",
        (session_id, version, expires_at),
    )


def _delete(conn: sqlite3.Connection, session_id: str) -> None:
    conn.execute("DELETE FROM router_pins WHERE session_id = ?", (session_id,))


def _counts(conn: sqlite3.Connection, now: float) -> dict[str, int]:
    rows = conn.execute(
        "SELECT version, count(*) FROM router_pins WHERE expires_at > ? GROUP BY version", (now,)
    ).fetchall()
    return {str(version): int(count) for version, count in rows}


def _drop_version(conn: sqlite3.Connection, version: str) -> int:
    return conn.execute("DELETE FROM router_pins WHERE version = ?", (version,)).rowcount


def _purge(conn: sqlite3.Connection, now: float) -> int:
    return conn.execute("DELETE FROM router_pins WHERE expires_at <= ?", (now,)).rowcount


def _revision(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT revision FROM router_table WHERE id = 1").fetchone()
    return int(row[0]) if row is not None else 0


def _read_table(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT doc FROM router_table WHERE id = 1").fetchone()
    return str(row[0]) if row is not None else None


def _write_table(conn: sqlite3.Connection, revision: int, doc: str, expected: int) -> bool:
    with write(conn):
        if _revision(conn) != expected:
            return False
        conn.execute(
            "INSERT INTO router_table (id, revision, doc) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, doc = excluded.doc",
            (revision, doc),
        )
    return True
