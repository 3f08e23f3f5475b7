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
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

from agentkeel.memory.store import GENESIS_HASH, EventRecord, MemoryRecord
from agentkeel.storage.canonical import canonical_json as canonical_json

# json's own string encoder (the C one), as json.dumps(ensure_ascii=False) uses it.
_string = encode_basestring


def event_hash(
    *, seq: int, time: float, namespace: str, op: str, memory_id: str, payload: str, prev_hash: str
) -> str:
    """SHA-256 (hex) of an event's fields and its predecessor's hash.

    The text hashed is ``canonical_json`` of the seven fields, written out by hand
    in sorted key order because this runs once per event on every write and every
    integrity pass (twice as fast as building and sorting a dict); a test holds the
    two forms equal.
    """
    if type(seq) is not int or type(time) is not float or not math.isfinite(time):
        return _event_hash_slow(
            seq=seq,
            time=time,
            namespace=namespace,
            op=op,
            memory_id=memory_id,
            payload=payload,
            prev_hash=prev_hash,
        )
    body = (
        f'{{"memory_id":{_string(memory_id)},"namespace":{_string(namespace)},'
        f'"op":{_string(op)},"payload":{_string(payload)},"prev_hash":{_string(prev_hash)},'
        f'"seq":{int.__repr__(seq)},"time":{float.__repr__(time)}}}'
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _event_hash_slow(
    *, seq: int, time: float, namespace: str, op: str, memory_id: str, payload: str, prev_hash: str
) -> str:
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


def fingerprint_from_payload(memory_id: str, namespace: str, payload: str) -> str:
    """``memory_fingerprint`` of the memory a create/update payload describes, without
    parsing it: the payload is canonical JSON already, so the id and namespace are
    spliced in at their sorted places. A payload not in the canonical shape takes the
    slow path (parse, then serialize), so the result is the same either way."""
    at_importance = payload.find(',"importance":')
    at_tags = payload.rfind(',"tags":[')
    if not payload.startswith('{"content":') or at_importance < 0 or at_tags < at_importance:
        return memory_fingerprint(memory_from_payload(memory_id, namespace, payload))
    return (
        f'{payload[:at_importance]},"id":{_string(memory_id)}'
        f'{payload[at_importance:at_tags]},"namespace":{_string(namespace)}{payload[at_tags:]}'
    )


def fingerprint_from_columns(
    *,
    memory_id: str,
    namespace: str,
    content: str,
    tags: Sequence[str],
    importance: float,
    metadata_json: str,
    created_at: float,
    updated_at: float,
    version: int,
) -> str:
    """``memory_fingerprint`` of a memory given as stored columns (metadata as JSON
    text), written out directly: snapshots and their checks build one per memory, and
    going through a ``MemoryRecord`` and a sorted dict costs three times as much."""
    floats = (importance, created_at, updated_at)
    if any(type(value) is not float or not math.isfinite(value) for value in floats) or (
        type(version) is not int
    ):
        return canonical_json(
            {
                "id": memory_id,
                "namespace": namespace,
                "content": content,
                "tags": list(tags),
                "importance": importance,
                "metadata": json.loads(metadata_json),
                "created_at": created_at,
                "updated_at": updated_at,
                "version": version,
            }
        )
    if metadata_json != "{}":
        # Stored canonical by the stores; normalised anyway, so the text never decides.
        metadata_json = canonical_json(json.loads(metadata_json))
    return (
        f'{{"content":{_string(content)},"created_at":{float.__repr__(created_at)},'
        f'"id":{_string(memory_id)},"importance":{float.__repr__(importance)},'
        f'"metadata":{metadata_json},"namespace":{_string(namespace)},'
        f'"tags":[{",".join(_string(tag) for tag in tags)}],'
        f'"updated_at":{float.__repr__(updated_at)},"version":{int.__repr__(version)}}}'
    )


class StateDigest:
    """A running SHA-256 over memories fed in id order: equal digests, equal states."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.count = 0

    def add(self, memory: MemoryRecord) -> None:
        self.add_fingerprint(memory_fingerprint(memory))

    def add_fingerprint(self, fingerprint: str) -> None:
        """Add a memory by its ``memory_fingerprint`` (when the text is at hand already)."""
        self._hash.update(fingerprint.encode())
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
