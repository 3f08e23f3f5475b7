"""The memory client's outbox: writes accepted while the memory server cannot take them.

One SQLite file per client. A write is acknowledged to the agent once its row
is committed here (``synchronous = FULL``: the commit survives a power cut,
not just a crash), so nothing acknowledged is lost. Each row carries the
``Idempotency-Key`` it was given when it was accepted; the client delivers
rows oldest first with that key, so a delivery whose response was lost is a
no-op on the server when it is sent again.

A row the server refuses for good (404, 409, 422: the write itself is wrong)
is not dropped: it moves to the ``failed`` state with the server's answer,
for an operator to read (``failed()``), and delivery goes on with the next.

A lock file beside the database keeps a second process from using the same
outbox: two deliverers would break the order.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from agentkeel.errors import ConfigError
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.storage import sqlite as storage

__all__ = ["MemoryOutbox", "OutboxEntry", "OutboxOperation"]

# How long a statement waits for a lock; only this process uses the file (see _take_lock).
_BUSY_TIMEOUT_MS = 5000

OutboxOperation = Literal["create_memory", "update_memory", "delete_memory"]

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at REAL NOT NULL,
        operation TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        body TEXT,
        idempotency_key TEXT NOT NULL UNIQUE,
        memory_id TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS outbox_state_idx ON outbox (state, id)",
)
_COLUMNS = (
    "id, created_at, operation, method, path, body, idempotency_key, memory_id, state, "
    "attempts, last_error"
)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One accepted write: the HTTP request to replay and the key that makes it safe."""

    id: int
    created_at: float
    operation: OutboxOperation
    method: str
    path: str
    body: Mapping[str, Any] | None
    idempotency_key: str
    memory_id: str
    state: Literal["pending", "failed"] = "pending"
    attempts: int = 0
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "operation": self.operation,
            "method": self.method,
            "path": self.path,
            "body": None if self.body is None else dict(self.body),
            "idempotency_key": self.idempotency_key,
            "memory_id": self.memory_id,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
        }


class MemoryOutbox:
    """A durable FIFO of memory writes in one SQLite file.

    >>> outbox = MemoryOutbox(path=Path(".keel/memory-outbox/agent-replica-1.db"))
    >>> await outbox.open()
    >>> entry = await outbox.put(operation="create_memory", method="POST",
    ...     path="/v1/memories", body={...}, idempotency_key=key, memory_id=memory_id)
    """

    def __init__(self, *, path: Path, clock: Clock | None = None) -> None:
        self._path = Path(path)
        self._clock: Clock = clock or SystemClock()
        self._worker = storage.SqliteWorker(
            thread_name="keel-outbox",
            errors=storage.SqliteErrors(
                label="the memory outbox",
                path=self._path,
                busy_timeout_ms=_BUSY_TIMEOUT_MS,
                code="memory_outbox_unavailable",
                failed_hint="Check the disk (space, permissions); writes cannot be accepted "
                "while it fails.",
                open_hint="open the memory client first",
            ),
        )
        self._lock_file: IO[bytes] | None = None
        self._pending = 0

    @property
    def path(self) -> Path:
        return self._path

    @property
    def pending(self) -> int:
        """Rows waiting for delivery (kept in step with the file; no I/O)."""
        return self._pending

    async def open(self) -> None:
        """Create or open the file and take its lock; count the rows left from before."""
        if self._worker.is_open:
            return
        try:
            await self._worker.open(self._connect)
            self._pending = await self._worker.run(_count_pending)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close the file and release the lock; pending rows stay for the next open."""
        await self._worker.aclose()
        # After the connection: the lock keeps other processes out until then.
        lock, self._lock_file = self._lock_file, None
        if lock is not None:
            lock.close()

    async def put(
        self,
        *,
        operation: OutboxOperation,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        idempotency_key: str,
        memory_id: str,
    ) -> OutboxEntry:
        """Append a write; once this returns, the write is durable."""
        entry = await self._worker.run(
            _put,
            self._clock.time(),
            operation,
            method,
            path,
            None if body is None else json.dumps(dict(body), ensure_ascii=False),
            idempotency_key,
            memory_id,
        )
        self._pending += 1
        return entry

    async def peek(self) -> OutboxEntry | None:
        """The oldest pending write, or None when there is nothing to deliver."""
        return await self._worker.run(_peek)

    async def remove(self, entry_id: int) -> None:
        """Forget a delivered write."""
        removed = await self._worker.run(_remove, entry_id)
        if removed:
            self._pending = max(0, self._pending - 1)

    async def record_attempt(self, entry_id: int, error: str) -> None:
        """Note a failed delivery attempt that will be retried."""
        await self._worker.run(_record_attempt, entry_id, error)

    async def fail(self, entry_id: int, error: str) -> None:
        """Set a write aside that the server refused for good; delivery goes on."""
        moved = await self._worker.run(_fail, entry_id, error)
        if moved:
            self._pending = max(0, self._pending - 1)

    async def failed(self) -> list[OutboxEntry]:
        """The writes set aside, oldest first, with the server's reason."""
        return await self._worker.run(_list, "failed")

    async def pending_entries(self) -> list[OutboxEntry]:
        """Every write still waiting, oldest first."""
        return await self._worker.run(_list, "pending")

    # --- plumbing -----------------------------------------------------------

    def _take_lock(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self._path.with_name(self._path.name + ".lock")
        handle = lock_path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise ConfigError(
                f"the memory outbox {self._path} is in use by another process. Give every "
                "process its own outbox (a distinct server.replica_id, or "
                "memory_client.outbox_dir)."
            ) from exc
        self._lock_file = handle

    def _connect(self) -> sqlite3.Connection:
        self._take_lock()
        conn = storage.open_database(
            self._path, busy_timeout_ms=_BUSY_TIMEOUT_MS, synchronous="FULL", migrate=_migrate
        )
        # The file holds what agents were told is safe; keep others out of it.
        os.chmod(self._path, 0o600)
        return conn


# -- operations (run on the outbox's thread) ------------------------------------------


def _migrate(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        conn.execute(statement)


def _entry(row: tuple[Any, ...]) -> OutboxEntry:
    return OutboxEntry(
        id=int(row[0]),
        created_at=float(row[1]),
        operation=row[2],
        method=row[3],
        path=row[4],
        body=None if row[5] is None else json.loads(row[5]),
        idempotency_key=row[6],
        memory_id=row[7],
        state=row[8],
        attempts=int(row[9]),
        last_error=row[10],
    )


def _count_pending(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone()[0])


def _put(
    conn: sqlite3.Connection,
    now: float,
    operation: str,
    method: str,
    path: str,
    body: str | None,
    key: str,
    memory_id: str,
) -> OutboxEntry:
    cursor = conn.execute(
        "INSERT INTO outbox (created_at, operation, method, path, body, idempotency_key, "
        "memory_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (now, operation, method, path, body, key, memory_id),
    )
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (cursor.lastrowid,)
    ).fetchone()
    return _entry(row)


def _peek(conn: sqlite3.Connection) -> OutboxEntry | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox WHERE state = 'pending' ORDER BY id LIMIT 1"
    ).fetchone()
    return None if row is None else _entry(row)


def _remove(conn: sqlite3.Connection, entry_id: int) -> bool:
    cursor = conn.execute("DELETE FROM outbox WHERE id = ? AND state = 'pending'", (entry_id,))
    return cursor.rowcount > 0


def _record_attempt(conn: sqlite3.Connection, entry_id: int, error: str) -> None:
    conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
        (error[:2000], entry_id),
    )


def _fail(conn: sqlite3.Connection, entry_id: int, error: str) -> bool:
    cursor = conn.execute(
        "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ? "
        "WHERE id = ? AND state = 'pending'",
        (error[:2000], entry_id),
    )
    return cursor.rowcount > 0


def _list(conn: sqlite3.Connection, state: str) -> list[OutboxEntry]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox WHERE state = ? ORDER BY id", (state,)
    ).fetchall()
    return [_entry(row) for row in rows]
