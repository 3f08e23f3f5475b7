"""Is the memory store still what its log says? ``check_integrity`` answers.

Two checks over one consistent read of the store:

1. The hash chain: every event links to the one before and matches its own
   hash (``hashchain.ChainVerifier``). A changed, removed or inserted event
   is found and named by sequence number.
2. The state: replaying the log (per memory, its events in order) must give
   exactly the ``memories`` table. Both sides are streamed in id order and
   compared row by row, and each gets a SHA-256 digest, so a changed current
   row is found and named even when the log is intact.

Both passes stream pages, so memory use stays flat at any store size.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from agentkeel.memory.hashchain import (
    ChainVerifier,
    StateDigest,
    fingerprint_from_payload,
    memory_fingerprint,
    memory_from_payload,
)
from agentkeel.memory.store import EventRecord, MemoryRecord, MemoryStore, StateReader
from agentkeel.resilience.clock import Clock, SystemClock

MAX_REPORTED = 20
"""Problems listed in a report; the counts cover all of them."""


@dataclass(frozen=True, slots=True)
class IntegrityReport:
    """The outcome of one check. ``ok`` only when the chain and the state both hold."""

    ok: bool
    checked_at: float
    duration_s: float
    head_seq: int
    head_hash: str
    events: int
    memories: int
    chain_ok: bool
    chain_problem: str | None
    bad_seq: int | None
    state_ok: bool
    state_problems: tuple[str, ...]
    state_mismatches: int
    bad_memory_ids: tuple[str, ...]
    bad_namespaces: tuple[str, ...]
    replay_digest: str
    state_digest: str

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked_at": self.checked_at,
            "duration_s": round(self.duration_s, 3),
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "events": self.events,
            "memories": self.memories,
            "chain": {"ok": self.chain_ok, "problem": self.chain_problem, "bad_seq": self.bad_seq},
            "state": {
                "ok": self.state_ok,
                "mismatches": self.state_mismatches,
                "problems": list(self.state_problems),
                "bad_memory_ids": list(self.bad_memory_ids),
                "bad_namespaces": list(self.bad_namespaces),
                "replay_digest": self.replay_digest,
                "state_digest": self.state_digest,
            },
        }

    def summary(self) -> str:
        """One line for logs and the CLI."""
        if self.ok:
            return (
                f"integrity ok: {self.events} events, {self.memories} memories, head "
                f"{self.head_seq}"
            )
        parts = []
        if not self.chain_ok:
            parts.append(f"hash chain broken: {self.chain_problem}")
        if not self.state_ok:
            first = self.state_problems[0] if self.state_problems else ""
            parts.append(
                f"{self.state_mismatches} memory row(s) differ from a replay of the log"
                + (f" (first: {first})" if first else "")
            )
        return "integrity FAILED: " + "; ".join(parts)


@dataclass(slots=True)
class _StateComparison:
    mismatches: int = 0
    problems: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    namespaces: set[str] = field(default_factory=set)

    def add(self, memory_id: str, namespace: str, problem: str) -> None:
        self.mismatches += 1
        self.namespaces.add(namespace)
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(problem)
            self.ids.append(memory_id)


async def check_integrity(store: MemoryStore, *, clock: Clock | None = None) -> IntegrityReport:
    """Verify the hash chain and that the current table equals a replay of the log."""
    clock = clock or SystemClock()
    started = time.perf_counter()
    async with store.reader() as reader:
        head = await reader.head()
        verifier = ChainVerifier()
        async for page in reader.events_by_seq():
            verifier.feed(page)
        if verifier.problem is None and verifier.last_seq != head.seq:
            verifier.problem = (
                f"the chain head says the log ends at event {head.seq} but the last event "
                f"is {verifier.last_seq}: events were removed or the head was edited"
            )
            verifier.bad_seq = head.seq
        if verifier.problem is None and verifier.last_hash != head.hash:
            verifier.problem = (
                f"the chain head's hash does not match event {head.seq}: the head was edited"
            )
            verifier.bad_seq = head.seq
        comparison = _StateComparison()
        replay_digest, state_digest = StateDigest(), StateDigest()
        await _compare(
            replay_memories(reader, problems=comparison),
            _flatten(reader.memories_by_id()),
            comparison,
            replay_digest,
            state_digest,
        )
    state_ok = comparison.mismatches == 0
    chain_ok = verifier.problem is None
    return IntegrityReport(
        ok=state_ok and chain_ok,
        checked_at=clock.time(),
        duration_s=time.perf_counter() - started,
        head_seq=head.seq,
        head_hash=head.hash,
        events=verifier.count,
        memories=state_digest.count,
        chain_ok=chain_ok,
        chain_problem=verifier.problem,
        bad_seq=verifier.bad_seq,
        state_ok=state_ok,
        state_problems=tuple(comparison.problems),
        state_mismatches=comparison.mismatches,
        bad_memory_ids=tuple(comparison.ids),
        bad_namespaces=tuple(sorted(comparison.namespaces)),
        replay_digest=replay_digest.hexdigest(),
        state_digest=state_digest.hexdigest(),
    )


async def replayed_state_digest(reader: StateReader, *, up_to_seq: int) -> tuple[str, int]:
    """Digest and count of the state a replay of the log up to ``up_to_seq`` gives.

    Each memory's state is its newest create/update payload (gone after a delete),
    fingerprinted from the payload text itself; history rules (version order) are
    ``check_integrity``'s job, not this digest's.
    """
    digest = StateDigest()
    last: EventRecord | None = None
    async for page in reader.events_by_memory(up_to_seq=up_to_seq):
        for event in page:
            if last is not None and event.memory_id != last.memory_id and last.op != "delete":
                digest.add_fingerprint(
                    fingerprint_from_payload(last.memory_id, last.namespace, last.payload)
                )
            last = event
    if last is not None and last.op != "delete":
        digest.add_fingerprint(
            fingerprint_from_payload(last.memory_id, last.namespace, last.payload)
        )
    return digest.hexdigest(), digest.count


async def replay_memories(
    reader: StateReader, *, up_to_seq: int | None = None, problems: Any = None
) -> AsyncIterator[MemoryRecord]:
    """The memories a replay of the log gives, in id order.

    Each memory's events must form a valid history (create on a free id,
    versions one apart, delete of the current version); a break is reported to
    ``problems`` (a ``_StateComparison``) when given.
    """
    current_id: str | None = None
    state: MemoryRecord | None = None
    async for event in _flatten(reader.events_by_memory(up_to_seq=up_to_seq)):
        if event.memory_id != current_id:
            if state is not None:
                yield state
            current_id, state = event.memory_id, None
        state = _apply(state, event, problems)
    if state is not None:
        yield state


def _apply(state: MemoryRecord | None, event: EventRecord, problems: Any) -> MemoryRecord | None:
    if event.op == "delete":
        if state is None and problems is not None:
            problems.add(
                event.memory_id,
                event.namespace,
                f"event {event.seq} deletes memory {event.memory_id!r}, which does not exist",
            )
        return None
    memory = memory_from_payload(event.memory_id, event.namespace, event.payload)
    if problems is not None:
        if event.op == "create" and state is not None:
            problems.add(
                event.memory_id,
                event.namespace,
                f"event {event.seq} creates memory {event.memory_id!r}, which already exists",
            )
        elif event.op == "update" and (state is None or memory.version != state.version + 1):
            problems.add(
                event.memory_id,
                event.namespace,
                f"event {event.seq} updates memory {event.memory_id!r} out of version order",
            )
    return memory


async def _flatten(pages: AsyncIterator[list[Any]]) -> AsyncIterator[Any]:
    async for page in pages:
        for item in page:
            yield item


async def _next(iterator: AsyncIterator[MemoryRecord]) -> MemoryRecord | None:
    try:
        return await anext(iterator)
    except StopAsyncIteration:
        return None


async def _compare(
    replayed: AsyncIterator[MemoryRecord],
    current: AsyncIterator[MemoryRecord],
    comparison: _StateComparison,
    replay_digest: StateDigest,
    state_digest: StateDigest,
) -> None:
    left, right = await _next(replayed), await _next(current)
    while left is not None or right is not None:
        if right is None or (left is not None and left.id < right.id):
            assert left is not None
            replay_digest.add(left)
            comparison.add(
                left.id,
                left.namespace,
                f"memory {left.id!r} in '{left.namespace}' is missing from the current table",
            )
            left = await _next(replayed)
        elif left is None or right.id < left.id:
            state_digest.add(right)
            comparison.add(
                right.id,
                right.namespace,
                f"memory {right.id!r} in '{right.namespace}' is in the current table but "
                "not in the log",
            )
            right = await _next(current)
        else:
            replay_digest.add(left)
            state_digest.add(right)
            if memory_fingerprint(left) != memory_fingerprint(right):
                changed = [
                    name
                    for name, a, b in zip(
                        left.to_json().keys(),
                        left.to_json().values(),
                        right.to_json().values(),
                        strict=True,
                    )
                    if a != b
                ]
                comparison.add(
                    right.id,
                    right.namespace,
                    f"memory {right.id!r} in '{right.namespace}' differs from the log "
                    f"({', '.join(changed)})",
                )
            left, right = await _next(replayed), await _next(current)
