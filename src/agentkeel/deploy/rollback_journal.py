"""The rollback journal: which steps of a release's rollback have run, in ``rollouts.db``.

One row per (release, step), in the ``rollback_journal`` table of the rollout
state file (the rollout controller's tables live beside it and are not
touched here). A step is marked ``started`` before it acts and ``done`` with
what it did afterwards, so a rollback killed half-way and run again knows
which steps are behind it and which one was interrupted (every step's
actions are idempotent, so that one simply runs again).

>>> async with RollbackJournal(data_dir / "rollouts.db") as journal:
...     entries = await journal.entries("v2-20261201T1230")
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.storage import sqlite as storage

__all__ = ["JournalEntry", "JournalState", "RollbackJournal", "StepJournal"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000

JournalState = Literal["started", "done"]

_TABLES = """
CREATE TABLE IF NOT EXISTS schema_version (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rollback_journal (
    release TEXT NOT NULL,
    step TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    detail TEXT NOT NULL,
    PRIMARY KEY (release, step)
)
"""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One step of one release's rollback as the journal has it."""

    release: str
    step: str
    state: JournalState
    attempts: int
    started_at: float
    finished_at: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class StepJournal(Protocol):
    """What ``Rollback`` needs from a journal."""

    async def entries(self, release: str) -> dict[str, JournalEntry]:
        """The release's steps by name (absent: never started)."""
        ...

    async def start(self, release: str, step: str) -> None:
        """Record that ``step`` is about to act (another attempt if it had started before)."""
        ...

    async def finish(self, release: str, step: str, detail: dict[str, Any]) -> None:
        """Record that ``step`` is done, with what it did."""
        ...


class RollbackJournal(storage.SqliteFile):
    """The SQLite journal; every call runs on the journal's own thread."""

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        super().__init__(
            path,
            label="rollback journal",
            component="rollback_journal",
            schema_version=SCHEMA_VERSION,
            tables=_TABLES,
            thread_name="keel-rollback",
            busy_timeout_ms=BUSY_TIMEOUT_MS,
        )
        self._clock = clock or SystemClock()

    async def entries(self, release: str) -> dict[str, JournalEntry]:
        return await self._worker.run(_entries, release)

    async def start(self, release: str, step: str) -> None:
        await self._worker.run(_start, release, step, self._clock.time())

    async def finish(self, release: str, step: str, detail: dict[str, Any]) -> None:
        await self._worker.run(_finish, release, step, json.dumps(detail), self._clock.time())


def _entries(conn: sqlite3.Connection, release: str) -> dict[str, JournalEntry]:
    rows = conn.execute(
        "SELECT release, step, state, attempts, started_at, finished_at, detail "
        "FROM rollback_journal WHERE release = ?",
        (release,),
    ).fetchall()
    return {
        row[1]: JournalEntry(
            release=row[0],
            step=row[1],
            state=cast(JournalState, row[2]),
            attempts=int(row[3]),
            started_at=float(row[4]),
            finished_at=None if row[5] is None else float(row[5]),
            detail=json.loads(row[6]),
        )
        for row in rows
    }


def _start(conn: sqlite3.Connection, release: str, step: str, now: float) -> None:
    with storage.write(conn):
        conn.execute(
            "INSERT INTO rollback_journal "
            "(release, step, state, attempts, started_at, finished_at, detail) "
            "VALUES (?, ?, 'started', 1, ?, NULL, '{}') "
            "ON CONFLICT (release, step) DO UPDATE SET state = 'started', "
            "attempts = attempts + 1, started_at = excluded.started_at, finished_at = NULL",
            (release, step, now),
        )


def _finish(conn: sqlite3.Connection, release: str, step: str, detail: str, now: float) -> None:
    with storage.write(conn):
        conn.execute(
            "UPDATE rollback_journal SET state = 'done', finished_at = ?, detail = ? "
            "WHERE release = ? AND step = ?",
            (now, detail, release, step),
        )
