"""What a write does, decided once for every backend.

A backend opens a transaction, reads the chain head and the memories the ops
touch, and hands them to ``plan_write``; the plan says which events to append
(hashes included) and which rows to upsert or delete. The backend writes
exactly that and commits. Keeping the rules here (validation, optimistic
versions, event payloads) is what makes the two backends behave the same.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentkeel.errors import Conflict, InvalidRequest, NotFound
from agentkeel.memory.hashchain import (
    canonical_json,
    event_hash,
    memory_from_payload,
    payload_for,
)
from agentkeel.memory.store import (
    ChainHead,
    CreateMemory,
    EventOp,
    EventRecord,
    MemoryRecord,
    OpResult,
    SkippedEvent,
    UpdateMemory,
    WriteOp,
    WriteResult,
)

MAX_CONTENT_CHARS = 32_000
MAX_TAGS = 32
MAX_TAG_CHARS = 64
MAX_METADATA_BYTES = 16 * 1024
MAX_BATCH_OPS = 500
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9._:@/+=%-]{1,200}$")
MEMORY_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TERM = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 32


@dataclass(slots=True)
class Plan:
    """Events to append, rows to write (None = delete the row), and the caller's result."""

    events: list[EventRecord] = field(default_factory=list)
    rows: dict[str, MemoryRecord | None] = field(default_factory=dict)
    head: ChainHead | None = None
    result: WriteResult | None = None
    skipped: list[SkippedEvent] = field(default_factory=list)


# -- validation ---------------------------------------------------------------------


def check_namespace(namespace: str) -> str:
    if not NAMESPACE_PATTERN.match(namespace):
        raise InvalidRequest(
            f"namespace {namespace!r} is not valid: use 1-200 characters from letters, digits "
            "and . _ : @ / + = % -, for example 'agent:support/user:42'."
        )
    # A path-like name must not be foldable into another one ("a/../b" is "b" to a URL).
    if any(part in ("", ".", "..") for part in namespace.split("/")):
        raise InvalidRequest(
            f"namespace {namespace!r} is not valid: no part between slashes may be empty, "
            "'.' or '..'; for example 'agent:support/user:42'."
        )
    return namespace


def check_memory_id(memory_id: str) -> str:
    if not MEMORY_ID_PATTERN.match(memory_id):
        raise InvalidRequest(
            f"memory id {memory_id!r} is not valid: use 1-128 characters from letters, "
            "digits and . _ : -, or leave it out to have one generated."
        )
    return memory_id


def _check_content(content: str) -> str:
    if not content.strip():
        raise InvalidRequest("content is empty; a memory needs some text.")
    if len(content) > MAX_CONTENT_CHARS:
        raise InvalidRequest(
            f"content is {len(content)} characters; at most {MAX_CONTENT_CHARS} are allowed. "
            "Store a summary, or split it into several memories."
        )
    return content


def _check_tags(tags: Sequence[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        raise InvalidRequest("tags must be a list of strings, not one string.")
    if len(tags) > MAX_TAGS:
        raise InvalidRequest(f"{len(tags)} tags given; at most {MAX_TAGS} are allowed.")
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip() or len(tag) > MAX_TAG_CHARS:
            raise InvalidRequest(
                f"tag {tag!r} is not valid: tags are non-empty strings of at most "
                f"{MAX_TAG_CHARS} characters."
            )
        if tag not in out:
            out.append(tag)
    return tuple(out)


def _check_importance(importance: float) -> float:
    if isinstance(importance, bool) or not math.isfinite(importance) or not 0 <= importance <= 1:
        raise InvalidRequest(f"importance is {importance!r}; give a number from 0 to 1.")
    return float(importance)


def _check_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    try:
        text = canonical_json(dict(metadata))
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(
            f"metadata cannot be stored as JSON ({exc}); use strings, numbers, booleans, "
            "lists and objects only."
        ) from exc
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise InvalidRequest(
            f"metadata is {len(text.encode())} bytes as JSON; at most {MAX_METADATA_BYTES} "
            "are allowed."
        )
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def check_fields(
    *,
    namespace: str | None = None,
    memory_id: str | None = None,
    content: str | None = None,
    tags: Sequence[str] | None = None,
    importance: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Apply the store's rules to the fields given, so a client can refuse a bad write
    before it accepts it (into its outbox, say) rather than after."""
    if namespace is not None:
        check_namespace(namespace)
    if memory_id is not None:
        check_memory_id(memory_id)
    if content is not None:
        _check_content(content)
    if tags is not None:
        _check_tags(tags)
    if importance is not None:
        _check_importance(importance)
    if metadata is not None:
        _check_metadata(metadata)


def check_ops(ops: Sequence[WriteOp]) -> None:
    """Reject an empty or oversized batch before any transaction starts."""
    if not ops:
        raise InvalidRequest("the batch is empty; send at least one operation.")
    if len(ops) > MAX_BATCH_OPS:
        raise InvalidRequest(
            f"the batch has {len(ops)} operations; at most {MAX_BATCH_OPS} are allowed. "
            "Split it into several batches."
        )


def fingerprint(ops: Sequence[WriteOp]) -> str:
    """A stable text for a request, so a reused idempotency key with a different
    request is caught instead of silently returning the wrong result. The
    namespace of an update or delete is left out: the server looks it up from
    the memory, which a retry after a delete can no longer do."""
    items: list[dict[str, Any]] = []
    for op in ops:
        if isinstance(op, CreateMemory):
            items.append(
                {
                    "op": "create",
                    "namespace": op.namespace,
                    "content": op.content,
                    "tags": list(op.tags),
                    "importance": op.importance,
                    "metadata": dict(op.metadata),
                    "memory_id": op.memory_id,
                }
            )
        elif isinstance(op, UpdateMemory):
            items.append(
                {
                    "op": "update",
                    "memory_id": op.memory_id,
                    "expected_version": op.expected_version,
                    "content": op.content,
                    "tags": None if op.tags is None else list(op.tags),
                    "importance": op.importance,
                    "metadata": None if op.metadata is None else dict(op.metadata),
                }
            )
        else:
            items.append(
                {
                    "op": "delete",
                    "memory_id": op.memory_id,
                    "expected_version": op.expected_version,
                }
            )
    return canonical_json(items)


def referenced_ids(ops: Sequence[WriteOp]) -> list[str]:
    """Memory ids the backend must read before planning."""
    ids: list[str] = []
    for op in ops:
        memory_id = op.memory_id
        if memory_id is not None and memory_id not in ids:
            ids.append(memory_id)
    return ids


# -- planning -----------------------------------------------------------------------


class _Chain:
    """Appends events to a plan, linking each to the one before."""

    def __init__(self, plan: Plan, head: ChainHead, now: float) -> None:
        self.plan = plan
        self.seq = head.seq
        self.hash = head.hash
        self.last_seq = head.last_seq
        self.now = now

    def append(self, *, op: EventOp, namespace: str, memory_id: str, payload: str) -> int:
        seq = self.last_seq + 1
        digest = event_hash(
            seq=seq,
            time=self.now,
            namespace=namespace,
            op=op,
            memory_id=memory_id,
            payload=payload,
            prev_hash=self.hash,
        )
        self.plan.events.append(
            EventRecord(
                seq=seq,
                time=self.now,
                namespace=namespace,
                op=op,
                memory_id=memory_id,
                payload=payload,
                prev_hash=self.hash,
                hash=digest,
            )
        )
        self.seq = self.last_seq = seq
        self.hash = digest
        return seq

    def head(self) -> ChainHead:
        return ChainHead(seq=self.seq, hash=self.hash, last_seq=self.last_seq)


def _not_found(memory_id: str) -> NotFound:
    return NotFound(
        f"memory {memory_id!r} does not exist (or was deleted). Search the namespace to "
        "find the memory you mean.",
        code="memory_not_found",
    )


def _check_version(current: MemoryRecord, expected: int | None) -> None:
    if expected is not None and expected != current.version:
        raise Conflict(
            f"memory {current.id!r} is at version {current.version}, not {expected}: someone "
            "changed it since you read it. Read it again, reapply your change, and retry.",
            code="version_conflict",
        )


def plan_write(
    ops: Sequence[WriteOp],
    *,
    head: ChainHead,
    current: Mapping[str, MemoryRecord],
    now: float,
    new_id: Callable[[], str] | None = None,
) -> Plan:
    """Plan a batch given the chain head and the current rows of ``referenced_ids(ops)``.

    Raises ``InvalidRequest``, ``NotFound`` or ``Conflict`` naming the failing
    op's position; nothing has been written then.
    """
    check_ops(ops)
    make_id = new_id or (lambda: uuid.uuid4().hex)
    plan = Plan()
    chain = _Chain(plan, head, now)
    state: dict[str, MemoryRecord | None] = dict(current)
    items: list[OpResult] = []
    for index, op in enumerate(ops):
        try:
            items.append(_plan_one(op, state, chain, make_id))
        except (InvalidRequest, NotFound, Conflict) as exc:
            if len(ops) > 1:
                exc.message = f"operation {index} of the batch: {exc.message} Nothing was written."
                exc.args = (exc.message,)
            raise
    plan.rows = {key: value for key, value in state.items() if key in _touched(items)}
    plan.head = chain.head()
    plan.result = WriteResult(items=tuple(items))
    return plan


def _touched(items: Sequence[OpResult]) -> set[str]:
    return {item.memory_id for item in items}


def _plan_one(
    op: WriteOp,
    state: dict[str, MemoryRecord | None],
    chain: _Chain,
    make_id: Callable[[], str],
) -> OpResult:
    if isinstance(op, CreateMemory):
        check_namespace(op.namespace)
        memory_id = check_memory_id(op.memory_id) if op.memory_id is not None else make_id()
        if state.get(memory_id) is not None:
            raise Conflict(
                f"memory {memory_id!r} already exists; update it instead, or leave the id "
                "out to create a new one.",
                code="memory_exists",
            )
        memory = MemoryRecord(
            id=memory_id,
            namespace=op.namespace,
            content=_check_content(op.content),
            tags=_check_tags(op.tags),
            importance=_check_importance(op.importance),
            metadata=_check_metadata(op.metadata),
            created_at=chain.now,
            updated_at=chain.now,
            version=1,
        )
        seq = chain.append(
            op="create", namespace=op.namespace, memory_id=memory_id, payload=payload_for(memory)
        )
        state[memory_id] = memory
        return OpResult(
            op="create", memory_id=memory_id, namespace=op.namespace, seq=seq, memory=memory
        )
    current = state.get(op.memory_id)
    if current is None or current.namespace != op.namespace:
        raise _not_found(op.memory_id)
    _check_version(current, op.expected_version)
    if isinstance(op, UpdateMemory):
        memory = MemoryRecord(
            id=current.id,
            namespace=current.namespace,
            content=_check_content(op.content) if op.content is not None else current.content,
            tags=_check_tags(op.tags) if op.tags is not None else current.tags,
            importance=(
                _check_importance(op.importance)
                if op.importance is not None
                else current.importance
            ),
            metadata=_check_metadata(op.metadata) if op.metadata is not None else current.metadata,
            created_at=current.created_at,
            updated_at=chain.now,
            version=current.version + 1,
        )
        seq = chain.append(
            op="update",
            namespace=op.namespace,
            memory_id=op.memory_id,
            payload=payload_for(memory),
        )
        state[op.memory_id] = memory
        return OpResult(
            op="update", memory_id=op.memory_id, namespace=op.namespace, seq=seq, memory=memory
        )
    seq = chain.append(
        op="delete",
        namespace=op.namespace,
        memory_id=op.memory_id,
        payload=canonical_json({"version": current.version}),
    )
    state[op.memory_id] = None
    return OpResult(
        op="delete", memory_id=op.memory_id, namespace=op.namespace, seq=seq, memory=None
    )


def plan_restore_marker(
    *,
    head: ChainHead,
    now: float,
    target_seq: int,
    quarantine_id: str | None,
    moved: int,
    reason: str,
) -> Plan:
    """The ``restore`` event a restore appends, so the log itself records it."""
    plan = Plan()
    chain = _Chain(plan, head, now)
    chain.append(
        op="restore",
        namespace="",
        memory_id="",
        payload=canonical_json(
            {
                "target_seq": target_seq,
                "quarantine_id": quarantine_id,
                "quarantined": moved,
                "reason": reason,
            }
        ),
    )
    plan.head = chain.head()
    return plan


def plan_replay(
    events: Sequence[EventRecord],
    *,
    head: ChainHead,
    current: Mapping[str, MemoryRecord],
    now: float,
) -> Plan:
    """Re-append quarantined events in order where the current state still allows them.

    A create needs the id to be free; an update needs the memory at the version
    just before the event's; a delete needs it at the version deleted. Others
    are skipped with the reason (a later write already changed that memory).
    """
    plan = Plan()
    chain = _Chain(plan, head, now)
    state: dict[str, MemoryRecord | None] = dict(current)
    touched: set[str] = set()
    for event in events:
        if event.op == "restore":
            continue
        existing = state.get(event.memory_id)
        if event.op == "delete":
            version = int(json.loads(event.payload)["version"])
            if existing is None or existing.version != version:
                plan.skipped.append(_skip(event, existing, f"version {version}"))
                continue
            state[event.memory_id] = None
        else:
            memory = memory_from_payload(event.memory_id, event.namespace, event.payload)
            wanted_absent = event.op == "create"
            if wanted_absent and existing is not None:
                plan.skipped.append(
                    SkippedEvent(event.seq, event.memory_id, "the memory exists again")
                )
                continue
            if not wanted_absent and (existing is None or existing.version != memory.version - 1):
                plan.skipped.append(_skip(event, existing, f"version {memory.version - 1}"))
                continue
            state[event.memory_id] = memory
        chain.append(
            op=event.op,
            namespace=event.namespace,
            memory_id=event.memory_id,
            payload=event.payload,
        )
        touched.add(event.memory_id)
    plan.rows = {key: state[key] for key in touched}
    plan.head = chain.head()
    return plan


def _skip(event: EventRecord, existing: MemoryRecord | None, needed: str) -> SkippedEvent:
    now = "deleted" if existing is None else f"at version {existing.version}"
    return SkippedEvent(
        event.seq, event.memory_id, f"{event.op} needs the memory at {needed}; it is {now}"
    )


# -- what every backend refuses alike ----------------------------------------------


def replayed_result(
    key: str, fingerprint: str, stored_fingerprint: str, result: str
) -> WriteResult:
    """The stored result of an idempotent write seen before, if it is the same request."""
    if stored_fingerprint != fingerprint:
        raise Conflict(
            f"Idempotency-Key {key!r} was already used for a different request. Use a new "
            "key for a new write; reuse a key only to retry the very same request.",
            code="idempotency_key_reused",
        )
    return WriteResult.from_json(json.loads(result), replayed=True)


def check_restore_range(head: ChainHead, target_seq: int) -> None:
    """Refuse a restore target outside the live log (0 is the empty state)."""
    if target_seq < 0 or target_seq > head.seq:
        raise InvalidRequest(
            f"cannot restore to sequence {target_seq}: the live log runs from 1 to {head.seq}. "
            "Pick a sequence in that range (GET /v1/integrity shows the head)."
        )


def restore_target_quarantined(target_seq: int) -> InvalidRequest:
    """The error for a restore target inside the range whose event a restore moved away."""
    return InvalidRequest(
        f"cannot restore to sequence {target_seq}: that event is not in the live log (an "
        "earlier restore moved it to a quarantine). Replay that quarantine first, or pick "
        "another sequence."
    )


def quarantine_not_found(quarantine_id: str) -> NotFound:
    """The error for an unknown quarantine id."""
    return NotFound(
        f"quarantine {quarantine_id!r} does not exist; GET /v1/quarantine lists them.",
        code="quarantine_not_found",
    )


def quarantine_replayed(quarantine_id: str) -> Conflict:
    """The error for replaying a quarantine a second time."""
    return Conflict(
        f"quarantine {quarantine_id!r} was already replayed; replaying it twice would "
        "apply its writes twice.",
        code="quarantine_replayed",
    )


def replayed_ids(events: Sequence[EventRecord]) -> list[str]:
    """The memories a quarantine's events touch, to read before ``plan_replay``."""
    return sorted({event.memory_id for event in events if event.memory_id})


# -- search text --------------------------------------------------------------------


def query_terms(text: str | None) -> list[str]:
    """The words of a search text, lowercased and de-duplicated. Operators and
    punctuation are dropped so user text can never be a syntax error."""
    if not text:
        return []
    terms: list[str] = []
    for match in _TERM.finditer(text.lower()):
        term = match.group(0)
        if term not in terms:
            terms.append(term)
    return terms[:MAX_QUERY_TERMS]
