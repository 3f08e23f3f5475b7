"""The hash chain over the memory event log, and digests of memory state.

An event's hash is SHA-256 over the canonical JSON of its fields (seq, time,
namespace, op, memory_id, payload text) and the previous event's hash. Editing,
inserting, dropping or reordering any event breaks every hash after it, so a
single pass over the log from the start finds the first bad event.

Canonical JSON: keys sorted, no spaces, UTF-8, floats in Python's shortest
round-trip form (which both SQLite REAL and PostgreSQL float8 preserve).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agentkeel.memory.store import GENESIS_HASH, EventRecord, MemoryRecord


def canonical_json(value: Any) -> str:
    """The one text form used for hashing and for event payloads."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def event_hash(
    *, seq: int, time: float, namespace: str, op: str, memory_id: str, payload: str, prev_hash: str
) -> str:
    """SHA-256 (hex) of an event's fields and its predecessor's hash."""
    body = canonical_json(
        {
            "seq": seq,
            "time": time,
            "namespace": namespace,
            "op": op,
            "memory_id": memory_id,
            "payload": payload,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(body.encode()).hexdigest()


def recompute(event: EventRecord) -> str:
    """The hash ``event`` should carry, given its fields and ``prev_hash``."""
    return event_hash(
        seq=event.seq,
        time=event.time,
        namespace=event.namespace,
        op=event.op,
        memory_id=event.memory_id,
        payload=event.payload,
        prev_hash=event.prev_hash,
    )


@dataclass(slots=True)
class ChainVerifier:
    """Checks events fed in log order, one page at a time; keeps the first problem.

    >>> verifier = ChainVerifier()
    >>> for page in pages:
    ...     verifier.feed(page)
    >>> verifier.problem  # None when the chain is intact
    """

    last_hash: str = GENESIS_HASH
    last_seq: int = 0
    count: int = 0
    problem: str | None = None
    bad_seq: int | None = None

    def feed(self, events: Iterable[EventRecord]) -> None:
        if self.problem is not None:
            return
        for event in events:
            if event.seq <= self.last_seq:
                self._fail(event.seq, f"event {event.seq} is out of order after {self.last_seq}")
                return
            if event.prev_hash != self.last_hash:
                self._fail(
                    event.seq,
                    f"event {event.seq} does not link to the event before it (its prev_hash "
                    f"{event.prev_hash[:12]}… is not {self.last_hash[:12]}…): an event was "
                    "removed, inserted or altered before it",
                )
                return
            expected = recompute(event)
            if expected != event.hash:
                self._fail(
                    event.seq,
                    f"event {event.seq} ({event.op} {event.memory_id or '-'} in "
                    f"'{event.namespace}') does not match its hash: its stored fields were "
                    "altered after it was written",
                )
                return
            self.last_hash = event.hash
            self.last_seq = event.seq
            self.count += 1

    def _fail(self, seq: int, message: str) -> None:
        self.problem = message
        self.bad_seq = seq


def memory_fingerprint(memory: MemoryRecord) -> str:
    """The canonical JSON of one memory's full state, for digests and comparisons."""
    return canonical_json(memory.to_json())


class StateDigest:
    """A running SHA-256 over memories fed in id order: equal digests, equal states."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.count = 0

    def add(self, memory: MemoryRecord) -> None:
        self._hash.update(memory_fingerprint(memory).encode())
        self._hash.update(b"\n")
        self.count += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def payload_for(memory: MemoryRecord) -> str:
    """The payload of a create/update event: the memory's full state after the write."""
    return canonical_json(
        {
            "content": memory.content,
            "tags": list(memory.tags),
            "importance": memory.importance,
            "metadata": dict(memory.metadata),
            "created_at": memory.created_at,
            "updated_at": memory.updated_at,
            "version": memory.version,
        }
    )


def memory_from_payload(memory_id: str, namespace: str, payload: str) -> MemoryRecord:
    """The memory a create/update event's payload describes."""
    data: Mapping[str, Any] = json.loads(payload)
    return MemoryRecord(
        id=memory_id,
        namespace=namespace,
        content=str(data["content"]),
        tags=tuple(str(tag) for tag in data["tags"]),
        importance=float(data["importance"]),
        metadata=dict(data["metadata"]),
        created_at=float(data["created_at"]),
        updated_at=float(data["updated_at"]),
        version=int(data["version"]),
    )
