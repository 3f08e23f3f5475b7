"""The memory store contract: records, write operations and the ``MemoryStore`` Protocol.

A memory lives in a namespace (an agent, a user, or an agent+user pair such as
``agent:support/user:42``). Every write is an event in an append-only,
hash-chained log; the ``memories`` table is the log's materialized current
state, updated in the same transaction. Two backends implement the Protocol:
``SqliteMemoryStore`` (the embedded default) and ``PostgresMemoryStore``.

Event payloads carry the full state of the memory after the write (or, for a
delete, the version deleted), so replaying the log needs nothing but the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from agentkeel.storage.canonical import GENESIS_HASH as GENESIS_HASH

EventOp = Literal["create", "update", "delete", "restore"]
SnapshotKind = Literal["deploy", "daily", "weekly", "manual"]
SNAPSHOT_KINDS: tuple[SnapshotKind, ...] = ("deploy", "daily", "weekly", "manual")
"""``prev_hash`` of the first event in the log."""


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """One memory as it stands now."""

    id: str
    namespace: str
    content: str
    tags: tuple[str, ...]
    importance: float
    metadata: Mapping[str, Any]
    created_at: float
    updated_at: float
    version: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape the HTTP API returns)."""
        return {
            "id": self.id,
            "namespace": self.namespace,
            "content": self.content,
            "tags": list(self.tags),
            "importance": self.importance,
            "metadata": dict(self.metadata),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "version": self.version,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MemoryRecord:
        """The inverse of ``to_json``."""
        return cls(
            id=str(data["id"]),
            namespace=str(data["namespace"]),
            content=str(data["content"]),
            tags=tuple(str(tag) for tag in data["tags"]),
            importance=float(data["importance"]),
            metadata=dict(data["metadata"]),
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            version=int(data["version"]),
        )


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One entry of the append-only log. ``payload`` is canonical JSON text, hashed as is."""

    seq: int
    time: float
    namespace: str
    op: EventOp
    memory_id: str
    payload: str
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "namespace": self.namespace,
            "op": self.op,
            "memory_id": self.memory_id,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where the log ends: the newest live event, and the highest sequence ever used
    (events moved to a quarantine keep their numbers, so new ones never reuse them)."""

    seq: int
    hash: str
    last_seq: int


# -- write operations ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateMemory:
    """Create a memory; ``memory_id`` is generated unless given."""

    namespace: str
    content: str
    tags: Sequence[str] = ()
    importance: float = 0.5
    metadata: Mapping[str, Any] = field(default_factory=dict)
    memory_id: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateMemory:
    """Change some fields of a memory. ``expected_version`` makes it optimistic:
    the write fails with a conflict when the memory has moved on."""

    memory_id: str
    namespace: str
    expected_version: int | None = None
    content: str | None = None
    tags: Sequence[str] | None = None
    importance: float | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DeleteMemory:
    """Delete a memory (the log keeps its history)."""

    memory_id: str
    namespace: str
    expected_version: int | None = None


WriteOp = CreateMemory | UpdateMemory | DeleteMemory


@dataclass(frozen=True, slots=True)
class OpResult:
    """What one operation did: its event's sequence number and the memory after it
    (None after a delete)."""

    op: Literal["create", "update", "delete"]
    memory_id: str
    namespace: str
    seq: int
    memory: MemoryRecord | None

    def to_json(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "memory_id": self.memory_id,
            "namespace": self.namespace,
            "seq": self.seq,
            "memory": None if self.memory is None else self.memory.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OpResult:
        memory = data.get("memory")
        op = data["op"]
        if op not in ("create", "update", "delete"):
            raise ValueError(f"unknown operation {op!r} in a stored result")
        return cls(
            op=op,
            memory_id=str(data["memory_id"]),
            namespace=str(data["namespace"]),
            seq=int(data["seq"]),
            memory=None if memory is None else MemoryRecord.from_json(memory),
        )


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of a write or batch. ``replayed`` is True when an idempotency key
    matched an earlier write and this is that write's stored result."""

    items: tuple[OpResult, ...]
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"items": [item.to_json() for item in self.items], "replayed": self.replayed}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, replayed: bool = False) -> WriteResult:
        return cls(
            items=tuple(OpResult.from_json(item) for item in data["items"]), replayed=replayed
        )


# -- reads ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """Full-text search (``text``) or a plain listing (no text), within one namespace.

    ``tags``: every one must be on the memory. ``since``/``until``: bounds on
    ``created_at`` (epoch seconds, inclusive).
    """

    namespace: str
    text: str | None = None
    tags: Sequence[str] = ()
    since: float | None = None
    until: float | None = None
    limit: int = 20


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A memory and its relevance (higher is better; None for a plain listing)."""

    memory: MemoryRecord
    score: float | None


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The hits of a search, best first, and whether every match was ranked.

    ``complete`` is True when every memory of the namespace that matches the words
    and passes the filters was scored: the hits are then the best ``limit`` of all
    of them (all of them when there are no more than ``limit``). It is False when
    a word matched more memories than one search reads (a frequent word in a large
    namespace, with no filter, or filters too wide to search exactly): the hits
    are the best of the matches read, never one outside the filters, and others
    may match. A narrower ``since``/``until`` or a tag makes the search complete.
    """

    hits: tuple[SearchHit, ...]
    complete: bool = True

    def to_json(self) -> dict[str, Any]:
        """The body of ``GET /v1/memories``."""
        return {
            "results": [{"memory": hit.memory.to_json(), "score": hit.score} for hit in self.hits],
            "count": len(self.hits),
            "complete": self.complete,
        }


@dataclass(frozen=True, slots=True)
class StoreStats:
    memories: int
    events: int
    head: ChainHead
    size_bytes: int | None


# -- restore and quarantine ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """Events moved out of the live log by a restore, kept for inspection and replay."""

    id: str
    created_at: float
    reason: str
    target_seq: int
    from_seq: int
    to_seq: int
    event_count: int
    restore_seq: int
    replayed_at: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "reason": self.reason,
            "target_seq": self.target_seq,
            "from_seq": self.from_seq,
            "to_seq": self.to_seq,
            "event_count": self.event_count,
            "restore_seq": self.restore_seq,
            "replayed_at": self.replayed_at,
        }


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a restore did. ``quarantine_id`` is None when nothing came after the target."""

    target_seq: int
    restore_seq: int
    quarantine_id: str | None
    quarantined_events: int
    memories: int

    def to_json(self) -> dict[str, Any]:
        return {
            "target_seq": self.target_seq,
            "restore_seq": self.restore_seq,
            "quarantine_id": self.quarantine_id,
            "quarantined_events": self.quarantined_events,
            "memories": self.memories,
        }


@dataclass(frozen=True, slots=True)
class SkippedEvent:
    seq: int
    memory_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """A quarantine applied again: events re-appended as new events, and the ones
    skipped because the current state no longer allows them."""

    quarantine_id: str
    applied: int
    skipped: tuple[SkippedEvent, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "quarantine_id": self.quarantine_id,
            "applied": self.applied,
            "skipped": [
                {"seq": s.seq, "memory_id": s.memory_id, "reason": s.reason} for s in self.skipped
            ],
        }


# -- snapshots catalog --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """A checkpoint of the current state at a log position, kept as a file with a checksum."""

    id: str
    label: str
    kind: SnapshotKind
    seq: int
    head_hash: str
    created_at: float
    path: str
    sha256: str
    size_bytes: int
    memories: int
    state_digest: str
    verified_at: float | None = None
    verified_ok: bool | None = None
    verify_message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "kind": self.kind,
            "seq": self.seq,
            "head_hash": self.head_hash,
            "created_at": self.created_at,
            "path": self.path,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "memories": self.memories,
            "state_digest": self.state_digest,
            "verified_at": self.verified_at,
            "verified_ok": self.verified_ok,
            "verify_message": self.verify_message,
        }


# -- the Protocols -------------------------------------------------------------------


@runtime_checkable
class StateReader(Protocol):
    """One consistent, read-only view of the log and the current table.

    Both iterators yield pages; everything a reader returns belongs to the
    same moment, however many writes commit meanwhile.
    """

    async def head(self) -> ChainHead: ...

    def events_by_seq(self) -> AsyncIterator[list[EventRecord]]: ...

    def events_by_memory(self, *, up_to_seq: int | None = None) -> AsyncIterator[list[EventRecord]]:
        """Create/update/delete events ordered by (memory_id, seq)."""
        ...

    def memories_by_id(self) -> AsyncIterator[list[MemoryRecord]]: ...

    def fingerprints_by_id(self) -> AsyncIterator[list[str]]:
        """``memory_fingerprint`` of every memory, in id order: what snapshots write and
        digest. A backend may build them straight from its columns."""
        ...


@runtime_checkable
class MemoryStore(Protocol):
    """Where memories and their event log live. Every method is atomic."""

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def write(
        self, ops: Sequence[WriteOp], *, idempotency_key: str | None = None
    ) -> WriteResult:
        """Apply every op, or none: one transaction, one event per op."""
        ...

    async def get(self, memory_id: str) -> MemoryRecord | None: ...

    async def search(self, query: SearchQuery) -> SearchResult:
        """Ranked hits for ``query.text`` (or the newest memories without text), within
        the namespace, tags and time range; see ``SearchResult`` for what is guaranteed."""
        ...

    async def stats(self) -> StoreStats: ...

    def reader(self) -> AbstractAsyncContextManager[StateReader]: ...

    async def event_at(self, seq: int) -> EventRecord | None: ...

    async def seq_at_time(self, at: float) -> int:
        """The newest live event written at or before ``at`` (0: before the first)."""
        ...

    async def restore(
        self,
        *,
        target_seq: int,
        reason: str,
        rows: Iterable[MemoryRecord] | None = None,
    ) -> RestoreResult:
        """Make the state what it was at ``target_seq``; move later events to a quarantine.

        With ``rows`` (a verified snapshot taken at ``target_seq``) the table is
        loaded from them instead of replaying the log. They are consumed as a stream
        (a snapshot need not fit in memory), possibly on another thread; if iterating
        them raises, the restore is rolled back and the error propagates.
        """
        ...

    async def list_quarantines(self) -> list[QuarantineRecord]: ...

    async def quarantine_events(self, quarantine_id: str) -> list[EventRecord]: ...

    async def replay_quarantine(self, quarantine_id: str) -> ReplayResult: ...

    async def add_snapshot(self, snapshot: SnapshotRecord) -> None: ...

    async def list_snapshots(self) -> list[SnapshotRecord]: ...

    async def get_snapshot(self, snapshot_id: str) -> SnapshotRecord | None: ...

    async def record_verification(
        self, snapshot_id: str, *, at: float, ok: bool, message: str
    ) -> None: ...

    async def delete_snapshot(self, snapshot_id: str) -> None: ...
