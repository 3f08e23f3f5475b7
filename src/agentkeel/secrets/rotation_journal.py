"""The rotation journal: which step each secret's rotation reached, in ``rotations.db``.

One row per rotation of one secret: the generation it rotates from and to, the
last step it finished and what each step recorded (``detail``, e.g. when the new
version was activated). A step is recorded only after it acted, and every step
is idempotent, so a rotation killed at any point and run again continues after
the last recorded step. At most one rotation per secret is unfinished at a time
(a partial unique index), so two ``keel secrets rotate`` runs never both start.

>>> async with RotationJournal(data_dir / "rotations.db") as journal:
...     record = await journal.unfinished("openai_api_key")
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from agentkeel.errors import Conflict
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.storage import sqlite as storage

__all__ = ["ROTATIONS_FILE", "STEPS", "RotationJournal", "RotationRecord", "Step"]

ROTATIONS_FILE = "rotations.db"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000

Step = Literal["provisioned", "accepted", "activated", "drained", "revoked", "done"]
STEPS: tuple[Step, ...] = ("provisioned", "accepted", "activated", "drained", "revoked", "done")

_TABLES = """
CREATE TABLE IF NOT EXISTS schema_version (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rotations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    from_generation INTEGER NOT NULL,
    to_generation INTEGER NOT NULL,
    step TEXT,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS rotations_one_unfinished ON rotations (name)
    WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS rotations_by_name ON rotations (name, started_at)
"""

_COLUMNS = (
    "id, name, from_generation, to_generation, step, started_at, updated_at, finished_at, "
    "actor, detail"
)


@dataclass(frozen=True, slots=True)
class RotationRecord:
    """One rotation of one secret as the journal has it; ``step`` is the last one done."""

    id: int
    name: str
    from_generation: int
    to_generation: int
    step: Step | None
    started_at: float
    updated_at: float
    actor: str
    finished_at: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def next_step(self) -> Step | None:
        """The step that runs next; ``None`` when the rotation is done."""
        if self.step is None:
            return STEPS[0]
        index = STEPS.index(self.step)
        return STEPS[index + 1] if index + 1 < len(STEPS) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "from_generation": self.from_generation,
            "to_generation": self.to_generation,
            "step": self.step,
            "next_step": self.next_step,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "actor": self.actor,
            "detail": self.detail,
        }


class RotationJournal(storage.SqliteFile):
    """The SQLite journal; every call runs on the journal's own thread."""

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        super().__init__(
            path,
            label="rotation journal",
            component="rotations",
            schema_version=SCHEMA_VERSION,
            tables=_TABLES,
            thread_name="keel-rotations",
            busy_timeout_ms=BUSY_TIMEOUT_MS,
        )
        self._clock = clock or SystemClock()

    async def unfinished(self, name: str) -> RotationRecord | None:
        """The rotation of ``name`` that has not reached ``done``, if any."""
        return await self._worker.run(_one, "name = ? AND finished_at IS NULL", (name,))

    async def last_finished(self, name: str) -> RotationRecord | None:
        """The rotation of ``name`` that finished last, if any."""
        return await self._worker.run(
            _one, "name = ? AND finished_at IS NOT NULL ORDER BY finished_at DESC", (name,)
        )

    async def history(self, name: str | None = None, *, limit: int = 50) -> list[RotationRecord]:
        """Rotations, newest first; of ``name`` only when given."""
        return await self._worker.run(_history, name, limit)

    async def begin(
        self, name: str, *, from_generation: int, to_generation: int, actor: str
    ) -> RotationRecord:
        """Record a new rotation; ``Conflict`` while another one of ``name`` is unfinished."""
        return await self._worker.run(
            _begin, name, from_generation, to_generation, actor, self._clock.time()
        )

    async def record(self, rotation_id: int, step: Step, detail: dict[str, Any]) -> RotationRecord:
        """Record that ``step`` is done, merging ``detail`` into what earlier steps wrote;
        ``done`` also finishes the rotation."""
        return await self._worker.run(
            _record, rotation_id, step, json.dumps(detail), self._clock.time()
        )


def _from_row(row: tuple[Any, ...]) -> RotationRecord:
    return RotationRecord(
        id=int(row[0]),
        name=row[1],
        from_generation=int(row[2]),
        to_generation=int(row[3]),
        step=cast(Step | None, row[4]),
        started_at=float(row[5]),
        updated_at=float(row[6]),
        finished_at=None if row[7] is None else float(row[7]),
        actor=row[8],
        detail=json.loads(row[9]),
    )


def _one(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> RotationRecord | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM rotations WHERE {where} LIMIT 1", params).fetchone()
    return None if row is None else _from_row(row)


def _history(conn: sqlite3.Connection, name: str | None, limit: int) -> list[RotationRecord]:
    if name is None:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM rotations ORDER BY started_at DESC, id DESC LIMIT ?",
            (limit,),
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM rotations WHERE name = ? "
            "ORDER BY started_at DESC, id DESC LIMIT ?",
            (name, limit),
        ).fetchall()
    return [_from_row(row) for row in rows]


def _begin(
    conn: sqlite3.Connection,
    name: str,
    from_generation: int,
    to_generation: int,
    actor: str,
    now: float,
) -> RotationRecord:
    with storage.write(conn):
        try:
            cursor = conn.execute(
                "INSERT INTO rotations (name, from_generation, to_generation, step, "
                "started_at, updated_at, finished_at, actor, detail) "
                "VALUES (?, ?, ?, NULL, ?, ?, NULL, ?, '{}')",
                (name, from_generation, to_generation, now, now, actor),
            )
        except sqlite3.IntegrityError:
            raise Conflict(
                f"A rotation of '{name}' is already under way; run `keel secrets rotate "
                f"{name}` again to finish it, or `keel secrets status {name}` to see its step.",
                code="rotation_in_progress",
            ) from None
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM rotations WHERE id = ?", (cursor.lastrowid,)
        ).fetchone()
    return _from_row(row)


def _record(
    conn: sqlite3.Connection, rotation_id: int, step: Step, detail: str, now: float
) -> RotationRecord:
    with storage.write(conn):
        row = conn.execute("SELECT detail FROM rotations WHERE id = ?", (rotation_id,)).fetchone()
        merged = {**json.loads(row[0]), **json.loads(detail)}
        conn.execute(
            "UPDATE rotations SET step = ?, updated_at = ?, detail = ?, "
            "finished_at = CASE WHEN ? = 'done' THEN ? ELSE finished_at END WHERE id = ?",
            (step, now, json.dumps(merged), step, now, rotation_id),
        )
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM rotations WHERE id = ?", (rotation_id,)
        ).fetchone()
    return _from_row(row)
