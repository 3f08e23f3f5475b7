"""What the SQLite and PostgreSQL memory stores share: columns, and rows back to records.

Both backends select the same columns in the same order, so one decoder per
record serves both. The one difference is how ``tags`` come back: SQLite
stores them as JSON text, PostgreSQL as a ``TEXT[]`` that psycopg already
turned into a list.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agentkeel.memory.hashchain import fingerprint_from_columns
from agentkeel.memory.store import EventRecord, MemoryRecord, QuarantineRecord, SnapshotRecord

__all__ = [
    "EVENT_COLUMNS",
    "MEMORY_COLUMNS",
    "PAGE_SIZE",
    "QUARANTINE_COLUMNS",
    "SNAPSHOT_COLUMNS",
    "event_from_row",
    "event_params",
    "fingerprint_from_row",
    "memory_from_row",
    "quarantine_from_row",
    "snapshot_from_row",
    "snapshot_params",
]

PAGE_SIZE = 5000
"""Rows per page when a reader streams the whole store (integrity checks, snapshots)."""

MEMORY_COLUMNS = (
    "id, namespace, content, tags, importance, metadata, created_at, updated_at, version"
)
EVENT_COLUMNS = "seq, time, namespace, op, memory_id, payload, prev_hash, hash"
SNAPSHOT_COLUMNS = (
    "id, label, kind, seq, head_hash, created_at, path, sha256, size_bytes, memories, "
    "state_digest, verified_at, verified_ok, verify_message"
)
QUARANTINE_COLUMNS = (
    "id, created_at, reason, target_seq, from_seq, to_seq, event_count, restore_seq, replayed_at"
)


def _tags(value: Any, *, tags_as_json: bool) -> Sequence[str]:
    result: Sequence[str] = json.loads(value) if tags_as_json else value
    return result


def memory_from_row(row: Sequence[Any], *, tags_as_json: bool = False) -> MemoryRecord:
    """A ``MEMORY_COLUMNS`` row as a record; ``tags_as_json`` when tags are stored as JSON text."""
    return MemoryRecord(
        id=row[0],
        namespace=row[1],
        content=row[2],
        tags=tuple(_tags(row[3], tags_as_json=tags_as_json)),
        importance=float(row[4]),
        metadata=json.loads(row[5]),
        created_at=float(row[6]),
        updated_at=float(row[7]),
        version=int(row[8]),
    )


def fingerprint_from_row(row: Sequence[Any], *, tags_as_json: bool = False) -> str:
    """The fingerprint of a ``MEMORY_COLUMNS`` row, built from the columns without a record."""
    return fingerprint_from_columns(
        memory_id=row[0],
        namespace=row[1],
        content=row[2],
        tags=_tags(row[3], tags_as_json=tags_as_json),
        importance=row[4],
        metadata_json=row[5],
        created_at=row[6],
        updated_at=row[7],
        version=row[8],
    )


def event_from_row(row: Sequence[Any]) -> EventRecord:
    """An ``EVENT_COLUMNS`` row as a record."""
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


def event_params(event: EventRecord) -> tuple[Any, ...]:
    """An event as ``EVENT_COLUMNS`` values, for an INSERT."""
    return (
        event.seq,
        event.time,
        event.namespace,
        event.op,
        event.memory_id,
        event.payload,
        event.prev_hash,
        event.hash,
    )


def quarantine_from_row(row: Sequence[Any]) -> QuarantineRecord:
    """A ``QUARANTINE_COLUMNS`` row as a record."""
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


def snapshot_from_row(row: Sequence[Any]) -> SnapshotRecord:
    """A ``SNAPSHOT_COLUMNS`` row as a record (``verified_ok`` is 0/1 in SQLite)."""
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
        verified_ok=None if row[12] is None else bool(row[12]),
        verify_message=row[13],
    )


def snapshot_params(snapshot: SnapshotRecord) -> tuple[Any, ...]:
    """A snapshot as ``SNAPSHOT_COLUMNS`` values, for an INSERT."""
    return (
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
    )
